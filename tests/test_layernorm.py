"""Layer-normalised cells: the forward equals the equations run step by step in numpy,
and they work through every adapter. Their gradients against autodiff, in every
architecture, are rows of the gradient table (tests/test_architectures.py)."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import layers

T, B, D, H = 5, 3, 4, 6


def _ln(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_reference(cell, layer, xs, h0):
    """haste's LayerNormLSTM/GRU equations (with both LN biases), one step at a time."""
    U, W = np.asarray(layer.U), np.asarray(layer.W)
    p = jax.tree.map(np.asarray, layer.cell_params)
    h, c = np.asarray(h0), np.zeros_like(np.asarray(h0)) + 0.25
    out = []
    for x in np.asarray(xs):
        a = _ln(x @ U.T, p.x_gain, p.x_bias)
        r = _ln(h @ W.T, p.r_gain, p.r_bias)
        if cell == "layernorm_elman":
            h = np.tanh(a + r)
        elif cell == "layernorm_lstm":
            i, f, g, o = np.split(a + r, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(_ln(c, p.c_gain, p.c_bias))
        else:
            (a_r, a_z, a_n), (q_r, q_z, q_n) = np.split(a, 3, -1), np.split(r, 3, -1)
            rr, z = _sigmoid(a_r + q_r), _sigmoid(a_z + q_z)
            n = np.tanh(a_n + rr * q_n)
            h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out)


def _layer(cell):
    layer = layers.init_layer(jax.random.key(0), cell, D, H, dtype=jnp.float64)
    leaves, tree = jax.tree.flatten(layer.cell_params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    rand = [l + 0.3 * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
    return layers.Layer(layer.U, layer.W, layer.b, layer.b_r, cell,
                        jax.tree.unflatten(tree, rand))


@pytest.mark.parametrize("cell", ["layernorm_elman", "layernorm_lstm", "layernorm_gru"])
def test_forward_is_the_layer_norm_equations(cell):
    layer = _layer(cell)
    xs = jax.random.normal(jax.random.key(2), (T, B, D), jnp.float64)
    h0 = 0.5 * jax.random.normal(jax.random.key(3), (B, H), jnp.float64)
    state = jrnn.cells.LSTMState(h0, jnp.full((B, H), 0.25)) if cell == "layernorm_lstm" else h0
    hs, _ = layers.run_layer(layer, xs, state)
    np.testing.assert_allclose(np.asarray(hs), numpy_reference(cell, layer, xs, h0), rtol=1e-12,
                               atol=1e-12)


def test_layer_norm_cells_have_no_layer_biases_by_default():
    layer = layers.init_layer(jax.random.key(0), "layernorm_gru", D, H)
    assert layer.b is None and layer.b_r is None
    assert isinstance(layer.cell_params, jrnn.cells.LayerNormParams)


def test_cell_params_are_checked():
    layer = _layer("layernorm_lstm")
    xs = jnp.ones((T, B, D), jnp.float64)
    with pytest.raises(ValueError, match="cell_params: cell 'layernorm_lstm' needs its own"):
        jrnn.rnn("layernorm_lstm", layer.U, layer.W, None, xs)
    with pytest.raises(ValueError, match=r"cell_params.x_gain: expected shape \(24,\)"):
        jrnn.rnn("layernorm_lstm", layer.U, layer.W, None, xs, cell_params=layer.cell_params
                 ._replace(x_gain=jnp.ones(5, jnp.float64)))
    with pytest.raises(ValueError, match="cell_params: cell 'lstm' has no parameters"):
        jrnn.rnn("lstm", layer.U, layer.W, None, xs, cell_params=layer.cell_params)


@pytest.mark.skipif(importlib.util.find_spec("flax") is None or
                    importlib.util.find_spec("equinox") is None,
                    reason="the flax and equinox extras are not installed")
@pytest.mark.parametrize("cell", ["layernorm_lstm", "layernorm_gru"])
def test_adapters_carry_the_cell_parameters(cell):
    """Each adapter holds the gains and biases as parameters and differentiates them."""
    import equinox as eqx
    from flax import nnx
    import jrnn.equinox
    import jrnn.linen
    import jrnn.nnx
    xs = jax.random.normal(jax.random.key(0), (B, T, D), jnp.float32)
    loss = lambda y: jnp.sum(y ** 2)
    m = jrnn.nnx.RNN(cell, D, H, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m: loss(m(xs)))(m)
    assert any("cell_params" in str(path) for path, _ in nnx.to_flat_state(nnx.state(grads)))
    linen = jrnn.linen.RNN(cell=cell, features=H)
    variables = linen.init(jax.random.key(0), xs)
    g = jax.grad(lambda v: loss(linen.apply(v, xs)))(variables)
    assert "cell_params" in str(jax.tree_util.tree_structure(g))
    e = jrnn.equinox.RNN(cell, D, H, key=jax.random.key(0))
    ge = eqx.filter_grad(lambda e: loss(e(xs)))(e)
    assert ge.stack[0][0].cell_params is not None
    assert float(jnp.abs(ge.stack[0][0].cell_params.x_gain).sum()) > 0
