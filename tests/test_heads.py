"""Multi-head (block-diagonal) recurrence, ``heads=NH``: the same function as the dense
W with zeros off the blocks, generation, adapters and refusals. Its gradients against
autodiff are rows of the descriptor table (jrnn/gradcheck.py, ``*-heads``)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import layers
from helpers import rel_error

T, B, D, H, NH = 5, 3, 4, 6, 3
DH = H // NH
F64 = jnp.float64
CELLS = jrnn.cells.names()


def dense(layer):
    """The same layer with its block-diagonal W written out as the dense (G·H, H) matrix."""
    G = layer.W.shape[0] // H
    blocks = np.asarray(layer.W).reshape(G, NH, DH, DH)
    W = np.zeros((G, H, H))
    for n in range(NH):
        W[:, n * DH:(n + 1) * DH, n * DH:(n + 1) * DH] = blocks[:, n]
    return dataclasses.replace(layer, W=jnp.asarray(W.reshape(G * H, H)), heads=1)


def to_blocks(W_dense, G):
    """The diagonal blocks of a dense (G·H, H) gradient, in the (G·H, DH) layout."""
    W = np.asarray(W_dense).reshape(G, H, H)
    return np.concatenate([W[:, n * DH:(n + 1) * DH, n * DH:(n + 1) * DH] for n in range(NH)],
                          axis=1).reshape(G * H, DH)


def _loss(layer, xs, lengths):
    hs, final = layers.run_layer(layer, xs, lengths=lengths)
    return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final))


@pytest.mark.parametrize("cell", CELLS)
def test_block_diagonal_equals_the_dense_matrix_with_zeros_off_the_blocks(cell):
    """Forward and every gradient: the blocks' gradient is the dense one's diagonal blocks."""
    layer = layers.init_layer(jax.random.key(0), cell, D, H, heads=NH, recurrent_bias=True,
                              dtype=F64)
    assert layer.W.shape == (jrnn.cells.get(cell).gates * H, DH) and layer.hidden_size == H
    xs = jax.random.normal(jax.random.key(1), (T, B, D), F64)
    lengths = jnp.array([5, 3, 1])
    grad = jax.jit(jax.value_and_grad(_loss))
    (J, g), (J_d, g_d) = grad(layer, xs, lengths), grad(dense(layer), xs, lengths)
    assert rel_error(J, J_d) <= 1e-13
    assert rel_error(g.W, jnp.asarray(to_blocks(g_d.W, layer.W.shape[0] // H))) <= 1e-12
    for name in ("U", "b", "b_r", "cell_params"):
        assert rel_error(getattr(g, name), getattr(g_d, name)) <= 1e-12, name


def test_with_a_projection_each_head_reads_its_own_slice_of_the_projected_h():
    """heads with proj_size P: the blocks are (H/NH, P/NH), the same function as the dense
    (G·H, P) W with zeros off them; forward and every gradient, float64."""
    P = NH  # each head reads one unit of the projected h
    layer = layers.init_layer(jax.random.key(0), "lstm", D, H, heads=NH, proj_size=P,
                              recurrent_bias=True, dtype=F64)
    assert layer.W.shape == (4 * H, P // NH) and layer.output_size == P
    mask = np.kron(np.eye(NH), np.ones((DH, P // NH)))  # (H, P): head n's rows read its slice
    W_dense = jnp.asarray(np.tile(mask, (4, 1)) * np.tile(np.asarray(layer.W), (1, NH)))
    dense_layer = dataclasses.replace(layer, W=W_dense, heads=1)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), F64)
    lengths = jnp.array([5, 3, 1])
    grad = jax.jit(jax.value_and_grad(_loss))
    (J, g), (J_d, g_d) = grad(layer, xs, lengths), grad(dense_layer, xs, lengths)
    assert rel_error(J, J_d) <= 1e-13
    on_blocks = (np.asarray(g_d.W) * np.tile(mask, (4, 1))).reshape(4 * H, NH, P // NH).sum(1)
    assert rel_error(g.W, jnp.asarray(on_blocks)) <= 1e-12
    for name in ("U", "b", "b_r", "W_hr"):
        assert rel_error(getattr(g, name), getattr(g_d, name)) <= 1e-12, name


def test_one_head_is_the_dense_layer():
    layer = layers.init_layer(jax.random.key(0), "lstm", D, H, dtype=F64)
    assert layer.heads == 1 and layer.W.shape == (4 * H, H)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), F64)
    np.testing.assert_array_equal(layers.run_layer(layer, xs)[0],
                                  jrnn.rnn("lstm", layer.U, layer.W, layer.b, xs, heads=1)[0])


def test_generation_steps_follow_the_scan():
    stack = layers.init_stack(jax.random.key(3), "gru", D, H, num_layers=2, heads=NH, dtype=F64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), F64)
    outputs, finals = layers.run_stack(stack, xs)
    states = tuple(s for (s,) in layers.zero_states(stack, (B,)))
    for t in range(T):
        states, h = layers.step_stack(stack, states, xs[t])
        assert rel_error(h, outputs[t]) <= 1e-13


def test_orthogonal_init_makes_each_block_orthogonal():
    layer = layers.init_layer(jax.random.key(0), "lstm", D, H, heads=NH,
                              recurrent_init="orthogonal", dtype=F64)
    for block in np.asarray(layer.W).reshape(4 * NH, DH, DH):
        np.testing.assert_allclose(block @ block.T, np.eye(DH), atol=1e-12)


@pytest.mark.parametrize("heads,error,match", [
    (4, ValueError, "heads: expected a divisor of hidden_size = 6, got 4"),
    (0, ValueError, "heads: expected an int >= 1 .*got 0"),
    (-2, ValueError, "heads: expected an int >= 1 .*got -2"),
    (2.0, TypeError, "heads: expected an int >= 1 .*got float"),
])
def test_bad_heads_are_named(heads, error, match):
    with pytest.raises(error, match=match):
        layers.init_layer(jax.random.key(0), "lstm", D, H, heads=heads)


def test_refusals_are_named():
    layer = layers.init_layer(jax.random.key(0), "lstm", D, H, heads=NH)
    xs = jnp.ones((T, B, D), jnp.float32)
    with pytest.raises(ValueError, match=r"W: expected .*\(24, 2\) with heads=3"):
        jrnn.rnn("lstm", layer.U, jnp.zeros((4 * H, H), jnp.float32), layer.b, xs, heads=NH)
    with pytest.raises(ValueError, match="heads > 1"):
        layers.run_layer(layer, xs, kernel="persistent")
    with pytest.raises(ValueError, match="heads must divide proj_size = 2; got 3"):
        layers.init_layer(jax.random.key(0), "lstm", D, H, heads=NH, proj_size=2)
    torch = pytest.importorskip("torch")
    assert torch is not None
    with pytest.raises(ValueError, match=r"stack\[0\]\[0\]: heads=3: PyTorch"):
        jrnn.pytorch.to_torch(((layer,),))


def _functional(stack, xs, lengths):
    ys, finals = layers.run_stack(stack, xs, lengths=lengths)
    return jnp.sum(ys ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(finals))


def test_adapters_take_heads():
    nnx = pytest.importorskip("flax.nnx")
    eqx = pytest.importorskip("equinox")
    import jrnn.equinox
    import jrnn.linen
    import jrnn.nnx
    xs, lengths = jax.random.normal(jax.random.key(1), (T, B, D), F64), jnp.array([5, 3, 1])
    loss = lambda carry, ys: jnp.sum(ys ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(carry))

    module = jrnn.nnx.LSTM(D, H, num_layers=2, heads=NH, time_major=True, return_carry=True,
                           param_dtype=F64, rngs=nnx.Rngs(0))
    g = nnx.grad(lambda m: loss(*m(xs, seq_lengths=lengths)))(module)
    twin = nnx.clone(module)
    nnx.update(twin, g)
    assert module.stack[0][0].heads == NH
    assert rel_error(twin.stack, jax.grad(_functional)(module.stack, xs, lengths)) <= 1e-10

    eq = jrnn.equinox.GRU(D, H, heads=NH, time_major=True, return_carry=True, dtype=F64,
                          key=jax.random.key(0))
    g = eqx.filter_grad(lambda m: loss(*m(xs, seq_lengths=lengths)))(eq)
    assert rel_error(g.stack, jax.grad(_functional)(eq.stack, xs, lengths)) <= 1e-10
    with pytest.raises(ValueError, match="block-diagonal W"):
        jrnn.equinox.cell_from_layer(eq.stack[0][0])

    lin = jrnn.linen.LSTM(features=H, heads=NH, time_major=True, return_carry=True,
                          param_dtype=F64)
    params = lin.init(jax.random.key(0), xs)
    stack = ((layers.Layer(**params["params"]["l0"], cell="lstm", heads=NH),),)
    assert stack[0][0].W.shape == (4 * H, DH)
    assert rel_error(loss(*lin.apply(params, xs, seq_lengths=lengths)),
                     _functional(stack, xs, lengths)) <= 1e-12
