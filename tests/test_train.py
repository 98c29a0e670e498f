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


# A regularised tagger for the keyed TBPTT helpers: every chunk draws its own masks.
NOISE = jrnn.dropout.Dropout(recurrent=0.3, zoneout=0.2)
TAGGER = jrnn.models.tagger.init(jax.random.key(1), "gru", 3, 8, 3, dtype=jnp.float32)
TAGGER_H0 = jnp.zeros((4, 8), jnp.float32)


def regularised_loss_and_state(p, xs, ys, h0, key=None):
    J, finals = jrnn.models.tagger.loss_and_state(p, xs, ys, ((h0,),), reduction="mean",
                                                  dropout=NOISE, key=key, training=True)
    return J, finals[0][0]


def test_tbptt_step_draws_its_masks_from_the_key_it_is_given():
    step = jrnn.train.make_tbptt_step(regularised_loss_and_state, OPT)
    run = lambda key: step(TAGGER, OPT.init(TAGGER), TAGGER_H0, XS[:4], YS[:4], key)
    same, again, other = run(jax.random.key(5)), run(jax.random.key(5)), run(jax.random.key(6))
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
    expected = regularised_loss_and_state(TAGGER, XS[:4], YS[:4], TAGGER_H0,
                                          key=jax.random.key(5))[0]
    np.testing.assert_allclose(same[3].loss, expected, rtol=1e-6)
    assert float(other[3].loss) != float(same[3].loss)


def test_tbptt_value_and_grad_folds_the_chunk_index_into_the_key():
    """Chunk i's masks come from fold_in(key, i): the sum of per-chunk losses and
    gradients, the last (shorter) chunk included."""
    key = jax.random.key(7)
    total, grads, h = jrnn.train.tbptt_value_and_grad(regularised_loss_and_state, TAGGER, XS, YS,
                                                      TAGGER_H0, 4, key=key)
    grad_fn = jax.value_and_grad(regularised_loss_and_state, has_aux=True)
    want_total, want_grads, want_h = 0.0, jax.tree.map(jnp.zeros_like, TAGGER), TAGGER_H0
    for i, (xs, ys) in enumerate(jrnn.train.chunks(XS, YS, 4)):
        (J, want_h), g = grad_fn(TAGGER, xs, ys, want_h, key=jax.random.fold_in(key, i))
        want_total, want_grads = want_total + J, jax.tree.map(jnp.add, want_grads, g)
    np.testing.assert_allclose(total, want_total, rtol=1e-5)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    unkeyed = jrnn.train.tbptt_value_and_grad(regularised_loss_and_state, TAGGER, XS, YS,
                                              TAGGER_H0, 4, key=jax.random.key(8))[0]
    assert float(unkeyed) != float(total)
