"""The zero-length guarantee: a row with ``lengths`` 0 is exact.

Its outputs are zeros, its final state is its initial state, and it adds
nothing to the loss or to any gradient: the loss and the gradients equal
those of the batch without that row. (PyTorch's packed sequences and JAX's
cuDNN RNN reject length 0; jrnn documents and tests it, for every cell,
architecture and model.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import layers
from jrnn.models import classifier, generator, seq2seq, tagger
from helpers import TOL, rel_error

T, B, D, H, C = 4, 3, 2, 3, 3
F64 = jnp.float64
XS = jax.random.normal(jax.random.key(1), (T, B, D), F64)
YS = jax.random.randint(jax.random.key(2), (T, B), 0, C)
LENGTHS = jnp.array([4, 0, 2])  # row 1 is empty
KEEP = jnp.array([0, 2])        # the batch without it
CELLS = jrnn.cells.names()


def drop(a, axis=1):
    return jnp.take(a, KEEP, axis=axis)


def assert_same_loss_and_gradients(loss, p, *with_row, without_row):
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    assert rel_error(value_and_grad(p, *with_row), value_and_grad(p, *without_row)) <= TOL[F64]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_a_layer_leaves_an_empty_row_at_its_initial_state(cell, reverse):
    layer = layers.init_layer(jax.random.key(0), cell, D, H, dtype=F64)
    h0 = jax.tree.map(lambda a: a + 0.5, layers.zero_states(((layer,),), (B,))[0][0])
    hs, final = layers.run_layer(layer, XS, h0, lengths=LENGTHS, reverse=reverse)
    assert not np.any(np.asarray(hs[:, 1]))
    for a, a0 in zip(jax.tree.leaves(final), jax.tree.leaves(h0)):
        np.testing.assert_array_equal(a[1], a0[1])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tagger_deep_bidirectional(cell, reduction):
    p = tagger.init(jax.random.key(0), cell, D, H, C, num_layers=2, bidirectional=True,
                    dtype=F64)
    loss = lambda p, xs, ys, n: tagger.loss(p, xs, ys, lengths=n, reduction=reduction)
    assert_same_loss_and_gradients(loss, p, XS, YS, LENGTHS,
                                   without_row=(drop(XS), drop(YS), drop(LENGTHS, 0)))


@pytest.mark.parametrize("cell", CELLS)
def test_classifier(cell):
    p = classifier.init(jax.random.key(0), cell, D, H, C, bidirectional=True, learn_h0=True,
                        dtype=F64)
    p = p._replace(h0=jax.tree.map(lambda a: a + 0.5, p.h0))
    loss = lambda p, xs, ys, n: classifier.loss(p, xs, ys, lengths=n)
    # An empty row still has a label: its features are the initial states, so it
    # is dropped from the batch here with its label and compared with that.
    with_row = jax.jit(jax.value_and_grad(loss))(p, XS, YS[0], LENGTHS)
    feats = classifier.features(p, XS, lengths=LENGTHS)
    h0_feats = jnp.concatenate([jrnn.layers.hidden_of(cell, p.h0[-1][d]) for d in (0, 1)])
    np.testing.assert_array_equal(feats[1], h0_feats)
    without = jax.jit(jax.value_and_grad(loss))(p, drop(XS), drop(YS[0], 0), drop(LENGTHS, 0))
    empty_only = jax.jit(jax.value_and_grad(loss))(p, XS[:, 1:2], YS[0, 1:2], LENGTHS[1:2])
    total = jax.tree.map(jnp.add, without, empty_only)
    assert rel_error(with_row, total) <= TOL[F64]
    assert not any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(empty_only[1].rnn))


@pytest.mark.parametrize("cell", CELLS)
def test_seq2seq_empty_input_and_empty_target(cell):
    p = seq2seq.init(jax.random.key(0), cell, D, H, C, dtype=F64)
    y_lengths = jnp.array([3, 0, 4])
    loss = lambda p, xs, ys, nx, ny: seq2seq.loss(p, xs, ys, x_lengths=nx, y_lengths=ny)
    assert_same_loss_and_gradients(
        loss, p, XS, YS, LENGTHS, y_lengths,
        without_row=(drop(XS), drop(YS), drop(LENGTHS, 0), drop(y_lengths, 0)))


@pytest.mark.parametrize("cell", CELLS)
def test_generator(cell):
    p = generator.init(jax.random.key(0), cell, D, H, C, num_layers=2, dtype=F64)
    context = XS[0]
    loss = lambda p, x, ys, n: generator.loss(p, x, ys, lengths=n, reduction="mean")
    assert_same_loss_and_gradients(loss, p, context, YS, LENGTHS,
                                   without_row=(drop(context, 0), drop(YS), drop(LENGTHS, 0)))


def test_every_row_empty():
    p = tagger.init(jax.random.key(0), "lstm", D, H, C, dtype=F64)
    J, g = jax.value_and_grad(tagger.loss)(p, XS, YS, lengths=jnp.zeros(B, jnp.int32),
                                           reduction="mean")
    assert float(J) == 0.0
    assert not any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(g))
