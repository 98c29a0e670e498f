"""Every architecture × option × cell: hand-written gradients equal autodiff's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import layers
from jrnn.models import classifier, generator, seq2seq, tagger
from architectures import ARCHS, B, C, D, H, LENGTHS, PAIRS, T, TBPTT, TBPTT_PAIRS
from helpers import TOL, rel_error

CELLS = jrnn.cells.names()


def split(batch):
    """Floating entries are differentiated; the rest (labels, lengths, flags) are not."""
    is_float = lambda v: all(jnp.issubdtype(l.dtype, jnp.floating) for l in jax.tree.leaves(v))
    return ({k: v for k, v in batch.items() if is_float(v)},
            {k: v for k, v in batch.items() if not is_float(v)})


def both_value_and_grads(arch: str):
    """Manual and autodiff (value, gradient) in one program: one compilation per dtype.

    Each test makes its own and drops it at its end, and its compiled programs with it: no
    other test runs the same (entry, cell) program, and holding the table's hundreds of
    them only fills the process's memory mappings until conftest.py drops every compiled
    program, the shared ones too (measured: the table's tests 7% faster this way)."""
    loss = ARCHS[arch].loss

    def both(p, floats, others):
        return tuple(jax.value_and_grad(lambda p, f: loss(p, {**f, **others}, backward),
                                        argnums=(0, 1))(p, floats)
                     for backward in ("manual", "autodiff"))
    return jax.jit(both)


def check(both, arch, cell, dtype, seed=0) -> set:
    """Asserts the agreement of both = both_value_and_grads(arch)'s two answers; returns the
    names of the parameters no gradient reached."""
    params, batch = ARCHS[arch].build(jax.random.key(seed), cell, dtype)
    floats, others = split(batch)
    (J_m, g_m), (J_a, g_a) = both(params, floats, others)
    assert rel_error(J_m, J_a) <= TOL[dtype]
    paths_m = jax.tree_util.tree_leaves_with_path(g_m)
    unreached = set()
    for (path, gm), ga in zip(paths_m, jax.tree.leaves(g_a), strict=True):
        name = jax.tree_util.keystr(path)
        assert rel_error(gm, ga) <= TOL[dtype], name
        # (a linear cell's W is empty, (0, H): there is no recurrent matrix)
        if ga.size and not np.any(np.asarray(ga) != 0):
            unreached.add(name)
    return unreached


# The architectures that hold every kind of layer and option between them, where
# float32 is checked too.
FLOAT32_ARCHS = ("deep-bidirectional", "many-to-one", "encoder-decoder",
                 "deep-bidirectional-dropout", "deep-bidirectional-projection",
                 "deep-bidirectional-heads")


@pytest.mark.parametrize("arch,cell", PAIRS)
def test_gradients_match_autodiff(arch, cell):
    """float64 on every row, and float32 on the rows of FLOAT32_ARCHS (their float64
    reference reuses the program compiled here).

    Every parameter must receive a gradient, or the comparison would not test it. At
    these sizes (B 3, H 4) one draw of every kind of dropout at once can cut every path to
    a parameter (e.g. a recurrent mask, a weight mask and zoneout together on one layer of
    an encoder); such a parameter must then be reached, and agree, under a second draw."""
    both = both_value_and_grads(arch)
    unreached = check(both, arch, cell, jnp.float64)
    if unreached:
        unreached &= check(both, arch, cell, jnp.float64, seed=1)
    assert not unreached, f"no gradient reaches {sorted(unreached)}"
    if arch in FLOAT32_ARCHS:
        check_float32(both, arch, cell)


def test_the_float32_architectures_are_entries_of_the_table():
    assert set(FLOAT32_ARCHS) <= set(ARCHS), set(FLOAT32_ARCHS) - set(ARCHS)


def check_float32(both, arch, cell):
    """float32: the hand-written gradients are as accurate as autodiff's.

    Both are measured against the float64 gradient of the same (upcast) inputs:
    the hand-written one must be within 1e-5 of it, or within twice autodiff's
    own float32 error where the problem itself is worse conditioned than that
    (a layer normalisation over the tests' 4 units amplifies float32 rounding
    to about 5e-5 in both: two float32 roundings of it can then differ by more
    than 1e-5 without either being wrong).
    """
    params, batch = ARCHS[arch].build(jax.random.key(0), cell, jnp.float32)
    floats, others = split(batch)
    (J_m, g_m), (J_a, g_a) = both(params, floats, others)
    up = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float64), tree)
    J_t, g_t = both(up(params), up(floats), others)[1]
    assert rel_error(up(J_m), J_t) <= max(TOL[jnp.float32], 2 * rel_error(up(J_a), J_t))
    for (path, gm), ga, gt in zip(jax.tree_util.tree_leaves_with_path(g_m),
                                  jax.tree.leaves(g_a), jax.tree.leaves(g_t), strict=True):
        err_m, err_a = rel_error(up(gm), gt), rel_error(up(ga), gt)
        assert err_m <= max(TOL[jnp.float32], 2 * err_a), (jax.tree_util.keystr(path), err_m,
                                                           err_a)


@pytest.mark.parametrize("entry,cell", [(e, c) for e, c in TBPTT_PAIRS
                                        if "dropout" not in e])  # tested below
def test_truncated_bptt_gradients(entry, cell):
    """Chunked gradients: manual equals autodiff, and equals an explicit loop over chunks
    with the state carried and stopped at each boundary."""
    params, batch = TBPTT[entry].build(jax.random.key(1), cell, jnp.float64)
    run = jax.jit(TBPTT[entry].loss, static_argnums=2)
    J_m, g_m, h_m = run(params, batch, "manual")
    J_a, g_a, h_a = run(params, batch, "autodiff")
    assert rel_error((J_m, g_m, h_m), (J_a, g_a, h_a)) <= 1e-10

    def chunk_loss(p, xs, ys, h0):
        outputs, finals = tagger.hidden(p, xs, ((h0,),), backward="autodiff")
        return jrnn.heads.softmax_nll(p.head.V, p.head.c, outputs, ys), finals[0][0]
    h = layers.zero_states(params.rnn, (B,))[0][0]
    total, grads = 0.0, jax.tree.map(jnp.zeros_like, params)
    chunk_grad = jax.jit(jax.value_and_grad(chunk_loss, has_aux=True))
    for xs, ys in jrnn.train.chunks(batch["xs"], batch["ys"], 2):
        (J, h), g = chunk_grad(params, xs, ys, h)
        total, grads = total + J, jax.tree.map(jnp.add, grads, g)
    assert rel_error(g_m, grads) <= 1e-10
    np.testing.assert_allclose(J_m, total, rtol=1e-12)
    # Differs from full BPTT: the boundaries really cut the gradient.
    full = jax.jit(jax.grad(lambda p: tagger.loss(p, batch["xs"], batch["ys"])))(params)
    assert rel_error(g_m.rnn, full.rnn) > 1e-3


@pytest.mark.parametrize("entry,cell", [(e, c) for e, c in TBPTT_PAIRS if "dropout" in e])
def test_truncated_bptt_with_dropout_gradients(entry, cell):
    """Noise (every kind; or input dropout alone, which linear cells take too), fresh masks
    per chunk: manual equals autodiff, and every parameter gets a gradient."""
    arch = TBPTT[entry]
    params, batch = arch.build(jax.random.key(1), cell, jnp.float64)
    run = jax.jit(arch.loss, static_argnums=2)
    J_m, g_m, h_m = run(params, batch, "manual")
    J_a, g_a, h_a = run(params, batch, "autodiff")
    assert rel_error((J_m, g_m, h_m), (J_a, g_a, h_a)) <= 1e-10
    for path, g in jax.tree_util.tree_leaves_with_path(g_m):  # (a linear layer's W is empty)
        assert g.size == 0 or np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)
    plain = jax.jit(TBPTT["truncated-bptt"].loss, static_argnums=2)(params, batch, "manual")
    assert rel_error(J_m, plain[0]) > 1e-3  # the masks do act


@pytest.mark.parametrize("cell", CELLS)
def test_padding_moves_nothing_valid(cell):
    """Garbage in padded steps, and extra garbage steps, change no loss or gradient."""
    key = jax.random.key(2)
    garbage = lambda shape: 100.0 * jax.random.normal(key, shape, jnp.float64)
    valid = jrnn.lengths_to_mask(LENGTHS, T)[..., None]

    p, batch = ARCHS["deep-bidirectional"].build(key, cell, jnp.float64)
    xs, ys = batch["xs"], batch["ys"]
    padded = jnp.concatenate([jnp.where(valid, xs, garbage(xs.shape)), garbage((2, B, D))])
    ys_padded = jnp.concatenate([ys, jnp.zeros((2, B), ys.dtype)])
    for loss in (lambda p, xs, ys: tagger.loss(p, xs, ys, lengths=LENGTHS),
                 lambda p, xs, ys: classifier.loss(
                     classifier.Params(p.rnn, p.head, p.h0), xs, ys[0], lengths=LENGTHS)):
        grad = jax.jit(jax.value_and_grad(loss))
        J, g = grad(p, xs, ys)
        J_pad, g_pad = grad(p, padded, ys_padded)
        assert rel_error(J_pad, J) <= 1e-13 and rel_error(g_pad, g) <= 1e-12

    p, batch = ARCHS["encoder-decoder"].build(key, cell, jnp.float64)
    loss = lambda p, xs, ys, y_lengths: seq2seq.loss(p, xs, ys, x_lengths=LENGTHS,
                                                     y_lengths=y_lengths)
    y_lengths = batch["y_lengths"]
    y_valid = jrnn.lengths_to_mask(y_lengths, batch["ys"].shape[0])
    ys_garbage = jnp.where(y_valid, batch["ys"], (batch["ys"] + 1) % C)
    grad = jax.jit(jax.value_and_grad(loss))
    J, g = grad(p, batch["xs"], batch["ys"], y_lengths)
    J_pad, g_pad = grad(
        p, jnp.concatenate([jnp.where(valid, batch["xs"], garbage(batch["xs"].shape)),
                            garbage((3, B, D))]), ys_garbage, y_lengths)
    assert rel_error(J_pad, J) <= 1e-13 and rel_error(g_pad, g) <= 1e-12


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_restarts_split_the_stream_into_episodes(cell):
    """With a restart at t = 3, both directions see two independent episodes."""
    stack = layers.init_stack(jax.random.key(3), cell, D, H, num_layers=2, bidirectional=True,
                              dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(4), (T + 2, 1, D), jnp.float64)
    reset = jnp.zeros((T + 2, 1), bool).at[3].set(True)
    whole, _ = layers.run_stack(stack, xs, reset=reset)
    first, _ = layers.run_stack(stack, xs[:3])
    second, _ = layers.run_stack(stack, xs[3:])
    np.testing.assert_allclose(whole, jnp.concatenate([first, second]), rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_generation_follows_the_trained_equations(cell):
    """Greedy tokens equal the argmax of the teacher-forced logits fed those tokens."""
    key = jax.random.key(5)
    p = generator.init(key, cell, D, 8, C, num_layers=2, dtype=jnp.float64)
    context = jax.random.normal(key, (B, D), jnp.float64)
    tokens = generator.sample(p, key, context, 6, temperature=0)
    outputs, _ = layers.run_stack(p.rnn, generator.teacher_inputs(context, tokens, C))
    np.testing.assert_array_equal(
        jnp.argmax(jrnn.heads.logits(p.head.V, p.head.c, outputs), -1), tokens)

    p = seq2seq.init(key, cell, D, 8, C, num_layers=2, bidirectional_encoder=True,
                     dtype=jnp.float64)
    xs = jax.random.normal(key, (T, B, D), jnp.float64)
    tokens = seq2seq.decode(p, xs, 6, x_lengths=LENGTHS)
    states = seq2seq.encode(p, xs, lengths=LENGTHS)
    outputs, _ = layers.run_stack(p.decoder, seq2seq.decoder_inputs(tokens, C, xs.dtype), states)
    np.testing.assert_array_equal(
        jnp.argmax(jrnn.heads.logits(p.head.V, p.head.c, outputs), -1), tokens)


@pytest.mark.parametrize("noise_bytes", [None, 3 * B * C * 8])  # one chunk; 3-step chunks
@pytest.mark.parametrize("raw_key", [False, True])
def test_sampling_draws_what_categorical_draws_from_the_trained_logits(noise_bytes, raw_key,
                                                                       monkeypatch):
    """Step t's token is jax.random.categorical(split(key, length)[t], o_t / temperature) of
    the teacher-forced logits o_t, whether the noise is drawn in one chunk or in chunks of 3
    steps with a remainder (8 = 2 × 3 + 2)."""
    from jrnn.models import _common
    if noise_bytes is not None:
        monkeypatch.setattr(_common, "NOISE_BYTES", noise_bytes)
    key = jax.random.PRNGKey(11) if raw_key else jax.random.key(11)
    p = generator.init(jax.random.key(5), "gru", D, 8, C, num_layers=2, dtype=jnp.float64)
    context = jax.random.normal(jax.random.key(6), (B, D), jnp.float64)
    tokens = generator.sample(p, key, context, 8, temperature=0.7)
    outputs, _ = layers.run_stack(p.rnn, generator.teacher_inputs(context, tokens, C))
    o = jrnn.heads.logits(p.head.V, p.head.c, outputs)
    drawn = jax.vmap(lambda k, o: jax.random.categorical(k, o / 0.7))(jax.random.split(key, 8), o)
    np.testing.assert_array_equal(drawn, tokens)
    assert tokens.dtype == jnp.int32 and len(np.unique(tokens)) > 1


def test_elman_sampling_follows_its_logits():
    p = jrnn.elman.init(jax.random.key(6), 5, 8, 5, dtype=jnp.float64)
    prompt = jnp.array([1, 3, 2], jnp.int32)
    tokens = jrnn.elman.sample(p, jax.random.key(7), prompt, 6, temperature=0)
    text = jnp.concatenate([prompt, tokens])
    o = jrnn.elman.logits(p, jax.nn.one_hot(text[:-1], 5, dtype=jnp.float64))
    np.testing.assert_array_equal(jnp.argmax(o, -1)[len(prompt) - 1:], tokens)


def test_classifier_reads_the_last_valid_state():
    p = classifier.init(jax.random.key(8), "elman", D, H, C, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(9), (T, B, D), jnp.float64)
    feats = classifier.features(p, xs, lengths=LENGTHS)
    hs, _ = layers.run_layer(p.rnn[0][0], xs)
    for i, n in enumerate(LENGTHS):
        np.testing.assert_allclose(feats[i], hs[n - 1, i], rtol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_finite_differences(cell):
    """Directional derivatives of a deep bidirectional tagger, every parameter and xs."""
    params, batch = ARCHS["deep-bidirectional"].build(jax.random.key(10), cell, jnp.float64)
    floats, others = split(batch)
    loss = jax.jit(lambda p, f: ARCHS["deep-bidirectional"].loss(p, {**f, **others}, "manual"))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, floats)
    leaves, treedef = jax.tree.flatten((params, floats))
    eps = 1e-6
    for i, (leaf, g) in enumerate(zip(leaves, jax.tree.leaves(grads))):
        v = jnp.asarray(np.random.default_rng(i).standard_normal(leaf.shape))
        def at(s):
            moved = list(leaves)
            moved[i] = leaf + s * eps * v
            return float(loss(*jax.tree.unflatten(treedef, moved)))
        fd = (at(1) - at(-1)) / (2 * eps)
        analytic = float(jnp.vdot(g, v))
        assert abs(fd - analytic) <= 1e-7 * max(1.0, abs(analytic)), (i, fd, analytic)


@pytest.mark.parametrize("segment", [1, 3, 5, 8])
def test_memory_bounded_bptt_for_any_segment_length(segment):
    """Segments of 1 step, a remainder, exactly T, longer than T: all exact."""
    p, xs, ys, h0 = jrnn.elman.init(jax.random.key(0), D, H, C, dtype=jnp.float64), None, None, None
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    ys = jax.random.randint(jax.random.key(2), (T, B), 0, C)
    h0 = jax.random.normal(jax.random.key(3), (B, H), jnp.float64)
    full = jax.grad(lambda p, xs, h0: jrnn.elman.loss(p, xs, ys, h0, backward="autodiff"),
                    argnums=(0, 1, 2))(p, xs, h0)
    fn = jrnn.remat.segmented(jrnn.elman.loss_and_state, segment)
    J, h_T = fn(p, xs, ys, h0)
    np.testing.assert_allclose(J, jrnn.elman.loss(p, xs, ys, h0), rtol=1e-13)
    got = jax.grad(lambda p, xs, h0: fn(p, xs, ys, h0)[0], argnums=(0, 1, 2))(p, xs, h0)
    assert rel_error(got, full) <= 1e-10


def test_memory_bounded_bptt_stores_one_state_per_segment():
    """The residuals of the wrapped loss: one (B, H) state per segment, no (T, B, H)."""
    T_long = 64
    p = jrnn.elman.init(jax.random.key(0), D, H, C, dtype=jnp.float64)
    xs = jnp.zeros((T_long, B, D))
    ys = jnp.zeros((T_long, B), jnp.int32)
    fn = jrnn.remat.segmented(jrnn.elman.loss_and_state, 8)
    _, vjp = jax.vjp(lambda p: fn(p, xs, ys, jnp.zeros((B, H)))[0], p)
    shapes = [leaf.shape for leaf in jax.tree.leaves(vjp)]
    assert (8, B, H) in shapes                      # the 8 segment start states
    assert not any(s[:2] == (T_long, B) and s[-1] == H for s in shapes)


@pytest.mark.parametrize("key", [jax.random.key(4), jax.random.PRNGKey(4)], ids=["typed", "uint32"])
def test_memory_bounded_bptt_with_dropout_draws_one_fold_per_segment(key):
    """Segment s is the loss with key fold_in(key, s), h0=None included (segment 0 then
    runs outside the recomputed part); its gradient is that forward's autodiff."""
    p = tagger.init(jax.random.key(0), "gru", D, H, C, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    ys = jax.random.randint(jax.random.key(2), (T, B), 0, C)
    noise = jrnn.dropout.Dropout(recurrent=0.3, zoneout=0.2, input=0.2)
    fn = functools.partial(tagger.loss_and_state, dropout=noise, training=True)

    def loop(p, backward):
        J, h = 0.0, None
        for i, start in enumerate(range(0, T, 2)):
            J_i, h = fn(p, xs[start:start + 2], ys[start:start + 2], h, backward=backward,
                        key=jax.random.fold_in(key, i))
            J = J + J_i
        return J
    segmented = jrnn.remat.segmented(fn, 2)
    J, grads = jax.value_and_grad(lambda p: segmented(p, xs, ys, None, key=key)[0])(p)
    J_ref, grads_ref = jax.value_and_grad(lambda p: loop(p, "autodiff"))(p)
    assert rel_error(J, J_ref) <= 1e-12 and rel_error(grads, grads_ref) <= 1e-10
    assert rel_error(J, segmented(p, xs, ys, None, key=jax.random.fold_in(key, 1))[0]) > 1e-3
