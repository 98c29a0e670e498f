"""The native sampler (jrnn/native_sampler.py; jrnn/csrc/sampler.h) against the scan's loop:
the same tokens from the same noise, the same final state, and the models' sample
functions with ``kernel="native"``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn import dropout, layers, native, native_sampler
from jrnn.models import _common, generator, seq2seq, tagger
from tests.helpers import TOL, rel_error

pytestmark = pytest.mark.skipif(
    not native.available(), reason=f"jrnn.native unavailable: {native.why_unavailable()}")

B, H, C, STEPS = 3, 20, 11, 9  # H and C not multiples of 8 or 32: partial unit/output blocks
WIDE_B = 11  # over the AVX-512 build's 8-row tile: a full tile and a partial one
CELLS = ("lstm", "gru", "elman")


def _model(cell, scale=3.0, batch=B):
    """A one-layer tagger whose logits are large beside the noise (scaled weights), and a
    non-zero state, so that the tokens depend on every part of the step."""
    params = tagger.init(jax.random.key(0), cell, C, H, C)
    params = jax.tree.map(lambda a: a * scale, params)
    states = tuple(s for (s,) in layers.zero_states(params.rnn, (batch,)))
    states = jax.tree.map(lambda a: jnp.full_like(a, 0.3), states)
    return params, states


def _embed(token):
    return jax.nn.one_hot(token, C, dtype=jnp.float32)


def _noise(n=STEPS, batch=B):
    return jax.random.gumbel(jax.random.key(5), (n, batch, C), jnp.float32)


def _x0(batch=B):
    return _embed(jnp.arange(batch) % C)


def _run(kind, cell, temperature, greedy, threads=None, batch=B, x0=None):
    params, states = _model(cell, batch=batch)
    stack, head = params.rnn, params.head
    if kind == "native":
        run = native_sampler.steps(stack, head, _embed, temperature, num_threads=threads)
    else:
        run = _common.scan_steps(stack, head, _embed, temperature)
    f = jax.jit(lambda carry, noise: run(carry, noise, STEPS))
    x0 = _x0(batch) if x0 is None else x0
    return f((states, x0), None if greedy else _noise(batch=batch))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("temperature,greedy", [(1.0, False), (0.7, False), (1.0, True)])
def test_native_sampler_draws_the_scans_tokens(cell, temperature, greedy):
    (states, x), tokens = _run("native", cell, temperature, greedy)
    (want_states, want_x), want = _run("scan", cell, temperature, greedy)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(want))
    assert tokens.dtype == jnp.int32 and tokens.shape == (STEPS, B)
    for got, ref in zip(jax.tree.leaves(states), jax.tree.leaves(want_states)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(want_x))
    # the model decides: the tokens are not those of the noise (or of the first step) alone
    alone = jnp.argmax(_noise(), -1) if not greedy else jnp.broadcast_to(want[0], want.shape)
    assert (np.asarray(want) != np.asarray(alone)).any()


@pytest.mark.parametrize("cell", CELLS)
def test_a_batch_over_one_tile_draws_the_scans_tokens(cell):
    """B = 11: one full 8-row tile of the AVX-512 build and a partial one, from a first input
    that is no row of the embedding table (the kernel projects it apart from the table).
    The states are compared norm-wise, as every float32 result of two implementations is in
    this project (tests/helpers.py): with 11 rows, one element of 220 after 9 steps through
    weights scaled by 3 differs by 3e-6 on 0.07 where the two sum in another order."""
    x0 = jax.random.normal(jax.random.key(8), (WIDE_B, C), jnp.float32)
    (states, x), tokens = _run("native", cell, 1.0, False, batch=WIDE_B, x0=x0)
    (want_states, want_x), want = _run("scan", cell, 1.0, False, batch=WIDE_B, x0=x0)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(want))
    assert tokens.shape == (STEPS, WIDE_B)
    assert rel_error(states, want_states) <= TOL[jnp.float32]
    np.testing.assert_array_equal(np.asarray(x), np.asarray(want_x))
    two = _run("native", cell, 1.0, False, threads=2, batch=WIDE_B, x0=x0)
    one = _run("native", cell, 1.0, False, threads=1, batch=WIDE_B, x0=x0)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch", [B, 64, 67])
def test_threads_change_no_token_or_state(cell, batch):
    """1, 2 and 3 threads draw the same tokens and reach the same state, bit for bit: at B 3
    they split the hidden units and the head's outputs; at B 64 and 67 the rows (32 and
    more a thread), each thread its own rows' head and argmax."""
    one = _run("native", cell, 1.0, False, threads=1, batch=batch)
    for threads in (2, 3):
        many = _run("native", cell, 1.0, False, threads=threads, batch=batch)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tokens = np.asarray(one[1])
    assert (tokens != tokens[:, :1]).any()  # rows that differ: a row's token from another's


def test_nan_logits_are_drawn_as_jnp_argmax_draws_them():
    """A NaN logit wins, the first NaN among several (jnp.argmax's rule)."""
    params, states = _model("gru")
    head = params.head._replace(c=params.head.c.at[jnp.array([4, 7])].set(jnp.nan))
    for temperature, noise in [(1.0, _noise()), (0.0, None)]:
        got = native_sampler.steps(params.rnn, head, _embed, temperature)(
            (states, _x0()), noise, STEPS)[1]
        want = _common.scan_steps(params.rnn, head, _embed, temperature)(
            (states, _x0()), noise, STEPS)[1]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert (np.asarray(got) == 4).all()


@pytest.mark.parametrize("cell", CELLS)
def test_models_sample_alike_with_either_kernel(cell, monkeypatch):
    """tagger.sample after a prompt, with the noise drawn in chunks of 4 steps and a rest."""
    monkeypatch.setattr(_common, "NOISE_BYTES", 4 * C * 4)
    params, _ = _model(cell)
    prompt = jnp.array([1, 5, 2])
    got, want = (tagger.sample(params, jax.random.key(2), prompt, 11, kernel=k)
                 for k in ("native", "scan"))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_generator_and_decoder_sample_alike_with_either_kernel():
    """Inputs that are not one-hot vectors alone (the generator's context beside the
    token), a batch, and the decoder of an encoder-decoder model."""
    scale = lambda p: jax.tree.map(lambda a: a * 3.0, p)
    g = scale(generator.init(jax.random.key(1), "lstm", 4, H, C))
    context = jax.random.normal(jax.random.key(3), (B, 4), jnp.float32)
    got, want = (generator.sample(g, jax.random.key(4), context, 7, kernel=k)
                 for k in ("native", "scan"))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    s = scale(seq2seq.init(jax.random.key(1), "gru", 5, H, C))
    xs = jax.random.normal(jax.random.key(6), (4, B, 5), jnp.float32)
    for temperature in (0.0, 0.8):
        got, want = (seq2seq.decode(s, xs, 6, key=jax.random.key(7), temperature=temperature,
                                    kernel=k) for k in ("native", "scan"))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("build,reason", [
    (lambda: tagger.init(jax.random.key(0), "gru", C, H, C, num_layers=2), "one-layer"),
    (lambda: tagger.init(jax.random.key(0), "lstm", C, H, C, proj_size=4), "projection"),
    (lambda: tagger.init(jax.random.key(0), "gru", C, H, C, dtype=jnp.float64), "float32"),
    (lambda: tagger.init(jax.random.key(0), "layernorm_lstm", C, H, C), "native kernels cover"),
    (lambda: tagger.init(jax.random.key(0), "mingru", C, H, C), "native kernels cover"),
])
def test_native_sampling_names_what_it_cannot_run(build, reason):
    with pytest.raises(ValueError, match=f"kernel='native' cannot sample.*{reason}"):
        tagger.sample(build(), jax.random.key(0), jnp.array([1]), 3, kernel="native")


def test_native_sampling_refuses_zoneout_and_unknown_kernels():
    params = tagger.init(jax.random.key(0), "lstm", C, H, C)
    with pytest.raises(ValueError, match="kernel='native' cannot sample.*zoneout"):
        tagger.sample(params, jax.random.key(0), jnp.array([1]), 3, kernel="native",
                      dropout=dropout.Dropout(zoneout=0.1))
    with pytest.raises(ValueError, match=r"kernel: expected one of \('auto', 'scan', "
                                         r"'native'\), got 'fast'"):
        tagger.sample(params, jax.random.key(0), jnp.array([1]), 3, kernel="fast")
