"""Layer initialisation options, and the weights a generation loop arranges once."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import layers


@pytest.mark.parametrize("cell", jrnn.cells.names())
def test_default_initialisation_is_pytorchs(cell):
    layer = layers.init_layer(jax.random.key(0), cell, 7, 16)
    G = jrnn.cells.get(cell).gates
    assert layer.U.shape == (G * 16, 7) and layer.W.shape == (G * 16, 16)
    for a in (layer.U, layer.W, layer.b, layer.b_r):
        if a is not None:
            assert float(jnp.max(jnp.abs(a))) <= 1 / 4  # uniform in ±1/√H, H = 16
            assert float(jnp.std(a)) > 0.1              # and spread over it (≈ 0.144)
    assert (layer.b_r is not None) == (cell == "gru")
    # Layer-normalised cells: no layer biases; gains 1, biases 0 (Ba et al. 2016).
    assert (layer.b is None) == (layer.cell_params is not None)
    if layer.cell_params is not None:
        for name, a in layer.cell_params._asdict().items():
            if a is not None:
                np.testing.assert_array_equal(a, 1.0 if name.endswith("gain") else 0.0)


@pytest.mark.parametrize("cell", jrnn.cells.names())
def test_orthogonal_recurrent_blocks(cell):
    layer = layers.init_layer(jax.random.key(1), cell, 3, 8, recurrent_init="orthogonal",
                              dtype=jnp.float64)
    for block in jnp.split(layer.W, jrnn.cells.get(cell).gates):
        np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-12)


def test_forget_bias():
    layer = layers.init_layer(jax.random.key(2), "lstm", 3, 8, recurrent_bias=True,
                              forget_bias=1.0)
    np.testing.assert_array_equal(layer.b[8:16], 1.0)
    np.testing.assert_array_equal(layer.b_r[8:16], 0.0)
    assert not np.any(np.asarray(layer.b[:8]) == 1.0)


def test_no_bias():
    layer = layers.init_layer(jax.random.key(3), "gru", 3, 8, bias=False)
    assert layer.b is None and layer.b_r is None
    hs, _ = layers.run_layer(layer, jnp.zeros((4, 2, 3), jnp.float32))
    assert not np.any(np.asarray(hs))  # no input, no bias, zero state: stays zero


def test_bad_options():
    with pytest.raises(ValueError, match="forget_bias: only the LSTM and the sLSTM have a forget gate"):
        layers.init_layer(jax.random.key(0), "gru", 3, 8, forget_bias=1.0)
    with pytest.raises(ValueError, match=r"recurrent_init: expected one of \('uniform', 'orthogonal'\)"):
        layers.init_layer(jax.random.key(0), "elman", 3, 8, recurrent_init="identity")


def test_models_pass_layer_options_through():
    from jrnn.models import tagger
    p = tagger.init(jax.random.key(4), "lstm", 3, 8, 2, num_layers=2, forget_bias=1.0,
                    recurrent_init="orthogonal")
    for (layer,) in p.rnn:
        np.testing.assert_array_equal(layer.b[8:16], 1.0)


@pytest.mark.parametrize("cell", [c for c in jrnn.cells.names()
                                  if jrnn.cells.get(c).driver != "linear"])
def test_generation_steps_follow_the_scan_with_weights_arranged_for_a_loop(cell):
    """step_stack with the weights a generation loop arranges once runs the scan's
    equations."""
    T, B, D, H = 4, 3, 5, 6
    stack = layers.init_stack(jax.random.key(0), cell, D, H, num_layers=2, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    outputs, _ = layers.run_stack(stack, xs)
    weights = layers.step_weights(stack)
    states = tuple(s for (s,) in layers.zero_states(stack, (B,)))
    for t in range(T):
        states, h = layers.step_stack(stack, states, xs[t], weights=weights)
        np.testing.assert_allclose(h, outputs[t], rtol=1e-12, atol=1e-14)
