"""optax training: the step learns, is pure, skips non-finite updates; TBPTT."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from helpers import elman_problem

P, XS, YS, H0 = elman_problem(0, T=10, B=4, D=3, H=8, C=3, dtype=jnp.float32)
OPT = jrnn.train.adam(1e-2)
STEP = jrnn.train.make_train_step(
    lambda p, batch: (jrnn.elman.loss(p, *batch, reduction="mean"), None), OPT)


def test_steps_reduce_the_loss():
    p, state = P, OPT.init(P)
    losses = []
    for _ in range(30):
        p, state, _, metrics = STEP(p, state, (XS, YS))
        losses.append(float(metrics.loss))
    assert losses[-1] < 0.8 * losses[0]


def test_step_is_pure():
    out1 = STEP(P, OPT.init(P), (XS, YS))
    out2 = STEP(P, OPT.init(P), (XS, YS))
    for a, b in zip(jax.tree.leaves(out1), jax.tree.leaves(out2)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_step_changes_nothing():
    state = OPT.init(P)
    p, new_state, _, metrics = STEP(P, state, (XS.at[3, 1, 0].set(jnp.nan), YS))
    assert not bool(metrics.finite)
    for a, b in zip(jax.tree.leaves((p, new_state)), jax.tree.leaves((P, state))):
        np.testing.assert_array_equal(a, b)


def test_tbptt_carries_the_state_between_chunks():
    step = jrnn.train.make_tbptt_step(
        functools.partial(jrnn.elman.loss_and_state, reduction="mean"), OPT)
    h = jnp.zeros_like(H0)
    p, state = P, OPT.init(P)
    for xs, ys in jrnn.train.chunks(XS, YS, 4):
        expected_h = jrnn.elman.hidden(p, xs, h)[1]
        p, state, h, metrics = step(p, state, h, xs, ys)
        assert bool(metrics.finite)
        np.testing.assert_allclose(h, expected_h, rtol=1e-6)


def test_chunks_cover_the_stream():
    pieces = list(jrnn.train.chunks(XS, YS, 4))
    assert [x.shape[0] for x, _ in pieces] == [4, 4, 2]
    np.testing.assert_array_equal(jnp.concatenate([y for _, y in pieces]), YS)
