"""Issue 14's found defects, one test each: no silent wrong answer at the edges.

Each test failed before its fix (padded NaN, segmented BPTT on bidirectional
models and with h0=None or a mean loss, a float cotangent for the head,
unnamed errors, lengths out of range under jit, torch bfloat16 and dropout,
legacy PRNG keys, the README's test command).
"""
import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import heads, layers, remat
from jrnn.models import classifier, generator, seq2seq, tagger
from helpers import TOL, rel_error

ROOT = pathlib.Path(__file__).resolve().parents[1]
T, B, D, H, C = 5, 3, 2, 4, 3
F64 = jnp.float64
XS = jax.random.normal(jax.random.key(1), (T, B, D), F64)
YS = jax.random.randint(jax.random.key(2), (T, B), 0, C)
LENGTHS = jnp.array([5, 2, 1])
PADDED = jnp.arange(T)[:, None] >= LENGTHS[None, :]  # (T, B): True beyond each length


def poison(xs, where):
    """NaN in the first feature and Inf in the last, at the steps ``where`` is True."""
    first = (jnp.arange(xs.shape[-1]) == 0)[None, None, :]
    xs = jnp.where(where[..., None] & first, jnp.nan, xs)
    return jnp.where(where[..., None] & ~first, jnp.inf, xs)


# ---- 1. NaN or Inf in padded steps reaches no output and no gradient ----

@functools.lru_cache(maxsize=None)
def tagger_grad(backward):
    return jax.jit(jax.value_and_grad(
        lambda p, xs, mask, lengths: tagger.loss(p, xs, YS, mask=mask, lengths=lengths,
                                                 backward=backward), argnums=(0, 1)))


@pytest.mark.parametrize("backward", ["manual", "autodiff"])
@pytest.mark.parametrize("cell", jrnn.cells.names())
@pytest.mark.parametrize("by", ["lengths", "mask"])
def test_nan_in_padded_steps_reaches_no_gradient(by, cell, backward):
    p = tagger.init(jax.random.key(0), cell, D, H, C, bidirectional=True, dtype=F64)
    options = ({"mask": None, "lengths": LENGTHS} if by == "lengths" else
               {"mask": ~PADDED, "lengths": None})
    clean = tagger_grad(backward)(p, jnp.where(PADDED[..., None], 0.0, XS), **options)
    dirty = tagger_grad(backward)(p, poison(XS, PADDED), **options)
    for leaf in jax.tree.leaves(dirty):
        assert np.all(np.isfinite(leaf))
    assert rel_error(dirty, clean) == 0.0  # the padded values are not read at all
    assert not np.any(np.asarray(dirty[1][1])[np.asarray(PADDED)])  # d xs = 0 there


def test_nan_in_padded_steps_of_the_other_models():
    cls = classifier.init(jax.random.key(0), "lstm", D, H, C, bidirectional=True, dtype=F64)
    s2s = seq2seq.init(jax.random.key(0), "gru", D, H, C, dtype=F64)
    losses = [lambda xs: classifier.loss(cls, xs, YS[0], lengths=LENGTHS),
              lambda xs: classifier.regression_loss(cls, xs, jnp.ones((B, C), F64),
                                                    lengths=LENGTHS),
              lambda xs: seq2seq.loss(s2s, xs, YS, x_lengths=LENGTHS)]
    for loss in losses:
        J, g = jax.jit(jax.value_and_grad(loss))(poison(XS, PADDED))
        assert np.isfinite(float(J)) and np.all(np.isfinite(g))


def test_nan_in_a_valid_step_still_shows():
    """Only padded steps are cleaned: a NaN in a valid step is the user's, and shows."""
    p = tagger.init(jax.random.key(0), "elman", D, H, C, dtype=F64)
    assert np.isnan(float(tagger.loss(p, XS.at[0, 1, 0].set(jnp.nan), YS, lengths=LENGTHS)))


# ---- 2, 3. memory-bounded BPTT: exact, or refused with a reason ----

def test_segmented_refuses_a_bidirectional_model():
    p = tagger.init(jax.random.key(0), "elman", D, H, C, bidirectional=True, dtype=F64)
    with pytest.raises(ValueError, match=r"params: a bidirectional stack.*unidirectional"):
        remat.segmented(tagger.loss_and_state, 2)(p, XS, YS, None)


@pytest.mark.parametrize("bound", ["lengths", "mask", "reset"])
def test_segmented_refuses_per_sequence_arguments_bound_by_partial(bound):
    value = {"lengths": LENGTHS, "mask": ~PADDED, "reset": PADDED}[bound]
    p = tagger.init(jax.random.key(0), "elman", D, H, C, dtype=F64)
    fn = functools.partial(tagger.loss_and_state, **{bound: value})
    with pytest.raises(ValueError, match=rf"loss_and_state: {bound}= is bound"):
        remat.segmented(fn, 2)(p, XS, YS, None)


@pytest.mark.parametrize("reduction, learn_h0", [("sum", True), ("mean", False)])
def test_segmented_with_h0_none_and_any_reduction_equals_full_bptt(reduction, learn_h0):
    p = tagger.init(jax.random.key(0), "gru", D, H, C, num_layers=2, learn_h0=learn_h0,
                    dtype=F64)
    if learn_h0:
        p = p._replace(h0=jax.tree.map(lambda a: a + 0.5, p.h0))
    fn = functools.partial(tagger.loss_and_state, reduction=reduction)
    full = jax.jit(jax.value_and_grad(lambda p: fn(p, XS, YS, None)[0]))(p)
    for segment in (2, 5):  # 5 = T: one segment, no recomputation
        cut = jax.jit(jax.value_and_grad(
            lambda p: remat.segmented(fn, segment)(p, XS, YS, None)[0]))(p)
        assert rel_error(cut, full) <= TOL[F64]


def test_segmented_elman_mean_is_the_true_mean():
    p = jrnn.elman.init(jax.random.key(0), D, H, C, dtype=F64)
    fn = functools.partial(jrnn.elman.loss_and_state, reduction="mean")
    J_full = jax.jit(lambda p: fn(p, XS, YS, None)[0])(p)
    J_cut = jax.jit(lambda p: remat.segmented(fn, 2)(p, XS, YS, None)[0])(p)
    assert rel_error(J_cut, J_full) <= TOL[F64]


def test_segmented_with_no_steps():
    p = jrnn.elman.init(jax.random.key(0), D, H, C, dtype=F64)
    with pytest.raises(ValueError, match=r"xs: expected shape \(T, \.\.\.\) with T >= 1"):
        remat.segmented(jrnn.elman.loss_and_state)(p, XS[:0], YS[:0], None)


# ---- 4. the head's VJP takes any cotangent JAX passes, a Python float too ----

@pytest.mark.parametrize("head", ["softmax_nll", "squared_error"])
def test_head_vjp_with_a_python_float_cotangent(head):
    V, c = jnp.ones((C, H), F64), jnp.zeros((C,), F64)
    hs = jax.random.normal(jax.random.key(3), (T, B, H), F64)
    target = YS if head == "softmax_nll" else jnp.ones((T, B, C), F64)
    loss = lambda backward: lambda V: getattr(heads, head)(V, c, hs, target,
                                                            backward=backward)
    grads = [jax.vjp(loss(b), V)[1](1.0)[0] for b in ("manual", "autodiff")]
    assert rel_error(grads[0], grads[1]) <= TOL[F64]
    assert rel_error(jax.vjp(loss("manual"), V)[1](2.0)[0], 2 * grads[1]) <= TOL[F64]


# ---- 5. errors that name the argument and say what is true ----

TAGGER = tagger.init(jax.random.key(0), "lstm", D, H, C, dtype=F64)


def test_lengths_and_mask_as_lists_are_accepted():
    expected = tagger.loss(TAGGER, XS, YS, lengths=LENGTHS)
    assert float(tagger.loss(TAGGER, XS, YS, lengths=[5, 2, 1])) == float(expected)
    assert float(tagger.loss(TAGGER, XS, YS, mask=(~PADDED).tolist())) == float(expected)


def test_xs_as_a_list_is_accepted():
    J = jrnn.rnn("elman", *jrnn.elman.init(jax.random.key(0), D, H, C, dtype=F64)[:3],
                 np.asarray(XS).tolist())[0]
    assert J.shape == (T, B, H)


@pytest.mark.parametrize("name", ["lengths", "mask"])
def test_a_torch_tensor_is_named(name):
    torch = pytest.importorskip("torch")
    value = torch.tensor([5, 2, 1]) if name == "lengths" else torch.ones(T, B, dtype=bool)
    with pytest.raises(TypeError, match=rf"{name}: expected a JAX or numpy array .*got "
                                        r"torch.Tensor; convert it with .numpy\(\)"):
        tagger.loss(TAGGER, XS, YS, **{name: value})


def test_float_lengths_are_not_called_class_indices():
    with pytest.raises(TypeError, match=r"lengths: expected an integer dtype \(one length "
                                        r"per sequence\), got float"):
        tagger.loss(TAGGER, XS, YS, lengths=[5.0, 2.0, 1.0])


@pytest.mark.parametrize("size", [0, -1])
@pytest.mark.parametrize("init", ["elman", "tagger", "layer", "stack"])
def test_init_with_a_size_below_one(init, size):
    call = {"elman": lambda: jrnn.elman.init(jax.random.key(0), D, size, C),
            "tagger": lambda: tagger.init(jax.random.key(0), "gru", D, size, C),
            "layer": lambda: layers.init_layer(jax.random.key(0), "lstm", D, size),
            "stack": lambda: layers.init_stack(jax.random.key(0), "elman", D, size)}[init]
    with pytest.raises(ValueError, match=rf"hidden_size: expected an int >= 1, got {size}"):
        call()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_an_empty_batch(reduction):
    with pytest.raises(ValueError, match=r"xs: expected shape \(T, B, \.\.\.\) with B >= 1, "
                                         r"got \(5, 0, 2\)"):
        tagger.loss(TAGGER, XS[:, :0], YS[:, :0], reduction=reduction)
    with pytest.raises(ValueError, match=r"xs: expected shape \(T, B, \.\.\.\) with B >= 1"):
        jrnn.elman.loss(jrnn.elman.init(jax.random.key(0), D, H, C, dtype=F64), XS[:, :0],
                        YS[:, :0], reduction=reduction)


def test_generator_with_no_steps():
    p = generator.init(jax.random.key(0), "gru", D, H, C, dtype=F64)
    with pytest.raises(ValueError, match=r"ys: expected shape \(T, B\) with T >= 1, got \(0, 3\)"):
        generator.loss(p, XS[0], YS[:0])


def test_seq2seq_with_no_target_steps():
    p = seq2seq.init(jax.random.key(0), "gru", D, H, C, dtype=F64)
    with pytest.raises(ValueError, match=r"ys: expected shape \(T_y, 3\) with T_y >= 1, "
                                         r"got \(0, 3\)"):
        seq2seq.loss(p, XS, YS[:0])


def test_forward_mode_points_to_the_switch():
    loss = lambda p, backward="manual": tagger.loss(p, XS, YS, backward=backward)
    for transform in (lambda f: jax.jvp(f, (TAGGER,), (TAGGER,)), lambda f: jax.jacfwd(f)(TAGGER),
                      lambda f: jax.jit(lambda p: jax.jvp(f, (p,), (p,)))(TAGGER)):
        with pytest.raises(TypeError, match=r"jrnn.rnn: forward-mode.*backward='autodiff'"):
            transform(loss)
    J, tangent = jax.jvp(functools.partial(loss, backward="autodiff"), (TAGGER,), (TAGGER,))
    assert np.isfinite(float(tangent))


# ---- 6. lengths out of range under jit: raised by jrnn.checked, documented without ----

LOSS_OF_LENGTHS = jax.jit(jax.value_and_grad(
    lambda p, lengths, ys: tagger.loss(p, XS, ys, lengths=lengths)))


@pytest.mark.parametrize("lengths, shown", [([6, 2, 1], r"\[1, 6\]"), ([5, -1, 1], r"\[-1, 5\]")])
def test_checked_raises_for_lengths_out_of_range_under_jit(lengths, shown):
    with pytest.raises(ValueError, match=rf"lengths: expected values in \[0, 5\] \(T = 5 "
                                         rf"steps\), got values in {shown}"):
        jrnn.checked(LOSS_OF_LENGTHS)(TAGGER, jnp.array(lengths), YS)


def test_checked_raises_for_labels_out_of_range_under_jit():
    with pytest.raises(ValueError, match=r"ys: expected class indices in \[0, 3\), got "
                                         r"values in \[0, 3\]"):
        jrnn.checked(LOSS_OF_LENGTHS)(TAGGER, LENGTHS, YS.at[0, 0].set(3))


def test_checked_passes_good_values_and_padded_bad_labels():
    expected = LOSS_OF_LENGTHS(TAGGER, LENGTHS, YS)
    ys = YS.at[4, 2].set(99)  # beyond row 2's length: never read
    assert rel_error(jrnn.checked(LOSS_OF_LENGTHS)(TAGGER, LENGTHS, ys), expected) == 0.0


def test_without_checked_lengths_out_of_range_act_as_clamped():
    """The documented behaviour without jrnn.checked: t < length decides, so a
    length above T acts as T and one below 0 as 0."""
    assert rel_error(LOSS_OF_LENGTHS(TAGGER, jnp.array([9, 2, -3]), YS),
                     LOSS_OF_LENGTHS(TAGGER, jnp.array([5, 2, 0]), YS)) == 0.0


# ---- 7. PyTorch: bfloat16 both ways, dropout refused ----

def test_torch_bfloat16_round_trip():
    torch = pytest.importorskip("torch")
    stack = layers.init_stack(jax.random.key(0), "gru", D, H, num_layers=2, bidirectional=True,
                              dtype=jnp.bfloat16)
    module = jrnn.pytorch.to_torch(stack)
    assert all(p.dtype == torch.bfloat16 for p in module.parameters())
    back = jrnn.pytorch.from_torch(module)
    for a, b in zip(jax.tree.leaves(stack), jax.tree.leaves(back), strict=True):
        assert a.dtype == b.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    h_n, = jrnn.pytorch.states_to_torch(layers.zero_states(stack, (B,)))
    assert h_n.dtype == torch.bfloat16


def test_torch_dropout_between_layers_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"module: dropout=0.5 between layers .*dropout = 0"):
        jrnn.pytorch.from_torch(torch.nn.LSTM(D, H, num_layers=2, dropout=0.5))
    module = torch.nn.LSTM(D, H, num_layers=2, dropout=0.5)
    module.dropout = 0.0
    assert len(jrnn.pytorch.from_torch(module)) == 2


def test_torch_dropout_between_layers_converts_to_jrnns():
    """with_dropout=True: PyTorch's dropout= as jrnn.dropout.Dropout(between=...), and in
    evaluation (torch's eval(), jrnn's training=False) the same function as torch's."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.GRU(D, H, num_layers=2, dropout=0.5).double().eval()
    stack, dropout = jrnn.pytorch.from_torch(module, with_dropout=True)
    assert dropout == jrnn.dropout.Dropout(between=0.5)
    xs = np.random.default_rng(0).normal(size=(T, B, D))
    ours, _ = layers.run_stack(stack, jnp.asarray(xs), dropout=dropout, training=False)
    with torch.no_grad():
        theirs, _ = module(torch.from_numpy(xs))
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-12, atol=1e-12)
    trained, _ = layers.run_stack(stack, jnp.asarray(xs), dropout=dropout,
                                  key=jax.random.key(0), training=True)
    assert not np.allclose(np.asarray(trained), theirs.numpy())  # training draws masks
    single = torch.nn.LSTM(D, H, num_layers=1)
    assert jrnn.pytorch.from_torch(single, with_dropout=True)[1] == jrnn.dropout.Dropout()


# ---- 8. PRNG keys of both kinds, or an error that says which ----

INITS = {
    "elman.init": lambda key: jrnn.elman.init(key, D, H, C),
    "layers.init_layer": lambda key: layers.init_layer(key, "gru", D, H),
    "layers.init_stack": lambda key: layers.init_stack(key, "lstm", D, H, num_layers=2,
                                                       bidirectional=True),
    "heads.init_head": lambda key: heads.init_head(key, H, C),
    "tagger.init": lambda key: tagger.init(key, "lstm", D, H, C, num_layers=2),
    "classifier.init": lambda key: classifier.init(key, "gru", D, H, C, bidirectional=True),
    "generator.init": lambda key: generator.init(key, "elman", D, H, C),
    "seq2seq.init": lambda key: seq2seq.init(key, "lstm", D, H, C, num_layers=2),
}


@pytest.mark.parametrize("name", sorted(INITS))
def test_legacy_raw_keys_draw_the_same_parameters(name):
    typed, raw = INITS[name](jax.random.key(7)), INITS[name](jax.random.PRNGKey(7))
    for a, b in zip(jax.tree.leaves(typed), jax.tree.leaves(raw), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(INITS))
def test_a_non_key_is_named(name):
    with pytest.raises(TypeError, match=r"key: expected a PRNG key, jax.random.key\(seed\) or "
                                        r"the legacy jax.random.PRNGKey\(seed\)"):
        INITS[name](jnp.zeros(3))


def test_sampling_takes_either_key_kind():
    gen = generator.init(jax.random.key(0), "gru", D, H, C)
    context = jnp.ones((B, D), jnp.float32)
    np.testing.assert_array_equal(generator.sample(gen, jax.random.key(3), context, 4),
                                  generator.sample(gen, jax.random.PRNGKey(3), context, 4))
    char = tagger.init(jax.random.key(0), "lstm", C, H, C)
    np.testing.assert_array_equal(tagger.sample(char, jax.random.key(3), jnp.array([0, 1]), 4),
                                  tagger.sample(char, jax.random.PRNGKey(3), jnp.array([0, 1]),
                                                4))


# ---- 9. the README's test command is CI's, and installs the PyTorch parity tests ----

def test_readme_test_command_installs_torch_and_ci_adds_nothing():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\n```bash\n(.+?)\n```", readme).group(1)
    assert re.search(r"pip install .*torch==\d+\.\d+\.\d+", command), command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install" not in ci, "CI must install exactly what the README's command does"
    assert "without PyTorch" in readme  # says what a user without torch loses
