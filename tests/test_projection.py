"""LSTM with a projection (LSTMP, proj_size): the equations (with zoneout too),
generation, transforms, the adapters and the refusals. Its gradients against autodiff are rows of the
descriptor table (jrnn/gradcheck.py, ``*-projection``); its parity with
``torch.nn.LSTM(proj_size=...)`` is in test_pytorch.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import layers
from helpers import rel_error

T, B, D, H, P = 6, 3, 4, 5, 2
F64 = jnp.float64


def _layer(seed=0, cell="lstm", **options):
    return layers.init_layer(jax.random.key(seed), cell, D, H, proj_size=P, dtype=F64,
                             recurrent_bias=True, **options)


def _xs(seed=1, steps=T):
    return jax.random.normal(jax.random.key(seed), (steps, B, D), F64)


def _h0(seed=2):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jrnn.cells.LSTMState(0.5 * jax.random.normal(k1, (B, P), F64),
                                0.5 * jax.random.normal(k2, (B, H), F64))


def numpy_lstmp(layer, xs, h, c, zoneout=None):
    """Sak et al. (2014)'s LSTMP, one step at a time in numpy: an independent oracle.
    ``zoneout``: keep-masks (k_h (T, B, P), k_c (T, B, H)) of Krueger et al. (2017),
    h_t = k_h h_{t−1} + (1 − k_h) h̃_t and c_t = k_c c_{t−1} + (1 − k_c) c̃_t, where
    h̃_t = W_hr (o ⊙ tanh c̃_t) reads the cell's own c̃_t."""
    sig = lambda z: 1 / (1 + np.exp(-z))
    U, W, W_hr = (np.asarray(a) for a in (layer.U, layer.W, layer.W_hr))
    b, b_r = np.asarray(layer.b), np.asarray(layer.b_r)
    h, c, outputs = np.asarray(h), np.asarray(c), []
    for t, x in enumerate(np.asarray(xs)):
        z = x @ U.T + b + h @ W.T + b_r
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c_new = f * c + i * g
        h_new = (o * np.tanh(c_new)) @ W_hr.T
        if zoneout is None:
            h, c = h_new, c_new
        else:
            k_h, k_c = (np.asarray(k[t]) for k in zoneout)
            h, c = k_h * h + (1 - k_h) * h_new, k_c * c + (1 - k_c) * c_new
        outputs.append(h)
    return np.stack(outputs), h, c


def test_shapes_follow_pytorch():
    layer = _layer()
    assert layer.W.shape == (4 * H, P) and layer.W_hr.shape == (P, H)
    assert (layer.hidden_size, layer.output_size, layer.proj_size) == (H, P, P)
    stack = layers.init_stack(jax.random.key(0), "lstm", D, H, num_layers=2, bidirectional=True,
                              proj_size=P)
    assert stack[1][0].U.shape == (4 * H, 2 * P) and layers.output_size(stack) == 2 * P
    state = layers.zero_states(stack, (B,))[1][1]
    assert state.h.shape == (B, P) and state.c.shape == (B, H)


def test_forward_equals_the_equations_in_numpy():
    layer, xs, h0 = _layer(), _xs(), _h0()
    hs, final = layers.run_layer(layer, xs, h0)
    ref_hs, ref_h, ref_c = numpy_lstmp(layer, xs, h0.h, h0.c)
    assert rel_error(hs, jnp.asarray(ref_hs)) <= 1e-13
    assert rel_error(final, jrnn.cells.LSTMState(jnp.asarray(ref_h), jnp.asarray(ref_c))) <= 1e-13


def test_generation_steps_follow_the_scan():
    """step_stack (sampling) runs the same projected equations as the scan."""
    stack = layers.init_stack(jax.random.key(3), "lstm", D, H, num_layers=2, proj_size=P,
                              dtype=F64)
    xs = _xs()
    outputs, finals = layers.run_stack(stack, xs)
    states = tuple(s for (s,) in layers.zero_states(stack, (B,)))
    for t in range(T):
        states, h = layers.step_stack(stack, states, xs[t])
        assert rel_error(h, outputs[t]) <= 1e-13
    assert rel_error(states, tuple(s for (s,) in finals)) <= 1e-13


def _loss(layer, xs, h0, backward):
    hs, final = layers.run_layer(layer, xs, h0, backward=backward)
    return jnp.sum(jnp.sin(hs)) + jnp.sum(final.h ** 2) + jnp.sum(final.c ** 3)


def test_vmap_of_the_gradient_equals_autodiff():
    layer, h0 = _layer(), _h0()
    xs = jax.random.normal(jax.random.key(4), (3, T, B, D), F64)
    grads = {b: jax.jit(jax.vmap(jax.grad(lambda l, x: _loss(l, x, h0, b)), (None, 0)))(layer, xs)
             for b in ("manual", "autodiff")}
    assert rel_error(grads["manual"], grads["autodiff"]) <= 1e-10
    assert np.all(np.asarray(grads["manual"].W_hr) != 0)


def test_grad_of_grad_equals_autodiff():
    """Reverse over reverse through the projection's hand-written backward."""
    layer, xs, h0 = _layer(), _xs(), _h0()

    def penalty(layer, backward):
        g = jax.grad(_loss, argnums=(0, 1, 2))(layer, xs, h0, backward)
        return sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(g))
    run = jax.jit(jax.grad(penalty), static_argnums=1)
    assert rel_error(run(layer, "manual"), run(layer, "autodiff")) <= 1e-10


def test_persistent_kernel_refuses_the_projection():
    with pytest.raises(ValueError, match="projection W_hr"):
        layers.run_layer(_layer(), _xs(), kernel="persistent")


@pytest.mark.parametrize("proj_size,match", [
    (-1, "0 < proj_size < hidden_size = 5.*got -1"),
    (5, "0 < proj_size < hidden_size = 5.*got 5"),
    (7, "got 7"),
])
def test_bad_proj_size_is_named(proj_size, match):
    with pytest.raises(ValueError, match=match):
        layers.init_layer(jax.random.key(0), "lstm", D, H, proj_size=proj_size)


def test_cells_without_a_pointwise_free_h_refuse_a_projection():
    for cell in ("gru", "elman", "layernorm_gru"):
        with pytest.raises(ValueError, match=f"proj_size: .*got cell '{cell}'"):
            layers.init_stack(jax.random.key(0), cell, D, H, proj_size=P)
    gru = layers.init_layer(jax.random.key(0), "gru", D, H)
    with pytest.raises(ValueError, match="W_hr: .*got cell 'gru'"):
        jrnn.rnn("gru", gru.U, gru.W, gru.b, _xs(), W_hr=jnp.zeros((P, H), jnp.float32))
    with pytest.raises(TypeError, match="proj_size: expected an int"):
        layers.init_layer(jax.random.key(0), "lstm", D, H, proj_size=2.0)


def _zoneout_masks(seed=5):
    k_h, k_c = jax.random.split(jax.random.key(seed))
    return (jax.random.bernoulli(k_h, 0.4, (T, B, P)).astype(F64),
            jax.random.bernoulli(k_c, 0.3, (T, B, H)).astype(F64))


def test_zoneout_with_a_projection_follows_the_equations():
    """h's keep-mask is P wide, c's H wide; both as in the numpy oracle, and in evaluation
    the expectation p of each."""
    layer, xs, h0, masks = _layer(), _xs(), _h0(), _zoneout_masks()
    hs, final = layers.run_layer(layer, xs, h0, zoneout=masks)
    ref_hs, ref_h, ref_c = numpy_lstmp(layer, xs, h0.h, h0.c, zoneout=masks)
    assert rel_error(hs, jnp.asarray(ref_hs)) <= 1e-13
    assert rel_error(final, jrnn.cells.LSTMState(jnp.asarray(ref_h), jnp.asarray(ref_c))) <= 1e-13
    expectation = (jnp.full((T, B, P), 0.3, F64), jnp.full((T, B, H), 0.2, F64))
    hs, _ = layers.run_layer(layer, xs, h0, zoneout=(0.3, 0.2))
    ref_hs, _, _ = numpy_lstmp(layer, xs, h0.h, h0.c, zoneout=expectation)
    assert rel_error(hs, jnp.asarray(ref_hs)) <= 1e-13


def test_zoneout_with_a_projection_draws_masks_of_both_widths():
    """A stack with proj_size trains with zoneout: the drawn masks of h and c differ in
    width, and the gradient equals autodiff's."""
    stack = layers.init_stack(jax.random.key(6), "lstm", D, H, num_layers=2, proj_size=P,
                              dtype=F64)
    cfg = jrnn.dropout.Dropout(zoneout=0.3, zoneout_cell=0.2)
    noise = jrnn.dropout.layer_noise(cfg, jax.random.key(7), True, cell=jrnn.cells.get("lstm"),
                                     num_steps=T, batch_shape=(B,), input_size=D,
                                     W=stack[0][0].W, hidden_size=P, cell_size=H)
    assert [k.shape for k in noise.zoneout] == [(T, B, P), (T, B, H)]

    def loss(stack, backward):
        out, _ = layers.run_stack(stack, _xs(), dropout=cfg, key=jax.random.key(8),
                                  training=True, backward=backward)
        return jnp.sum(jnp.sin(out))
    grads = {b: jax.grad(loss)(stack, b) for b in ("manual", "autodiff")}
    assert rel_error(grads["manual"], grads["autodiff"]) <= 1e-10


def test_wrong_shapes_are_named():
    layer = _layer()
    with pytest.raises(ValueError, match=r"W_hr: .*1 <= P < H"):
        jrnn.rnn("lstm", layer.U, layer.W, layer.b, _xs(), W_hr=jnp.zeros((H, H), F64))
    with pytest.raises(ValueError, match=r"W: expected .*\(20, 2\)"):
        jrnn.rnn("lstm", layer.U, jnp.zeros((4 * H, H), F64), layer.b, _xs(), W_hr=layer.W_hr)
    with pytest.raises(ValueError, match=r"h0\[0\]: expected .*\(3, 2\)"):
        layers.run_layer(layer, _xs(), jrnn.cells.LSTMState(jnp.zeros((B, H), F64),
                                                             jnp.zeros((B, H), F64)))


def _functional(stack, xs, lengths):
    ys, finals = layers.run_stack(stack, xs, lengths=lengths)
    return jnp.sum(ys ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(finals))


def _module_loss(carry, ys):
    return jnp.sum(ys ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(carry))


def test_nnx_module_takes_proj_size():
    nnx = pytest.importorskip("flax.nnx")
    import jrnn.nnx
    module = jrnn.nnx.LSTM(D, H, num_layers=2, bidirectional=True, proj_size=P, time_major=True,
                           return_carry=True, param_dtype=F64, rngs=nnx.Rngs(3))
    xs, lengths = _xs(), jnp.array([6, 3, 1])
    g = nnx.grad(lambda m: _module_loss(*m(xs, seq_lengths=lengths)))(module)
    twin = nnx.clone(module)
    nnx.update(twin, g)
    assert module(xs)[1].shape == (T, B, 2 * P)
    assert rel_error(twin.stack, jax.grad(_functional)(module.stack, xs, lengths)) <= 1e-10
    single = jrnn.nnx.LSTM(D, H, proj_size=P, param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no projection"):
        jrnn.nnx.to_flax(single)


def test_linen_module_takes_proj_size():
    pytest.importorskip("flax.linen")
    import jrnn.linen
    module = jrnn.linen.LSTM(features=H, num_layers=2, proj_size=P, time_major=True,
                             return_carry=True, param_dtype=F64)
    xs, lengths = _xs(), jnp.array([6, 3, 1])
    params = module.init(jax.random.key(0), xs)
    stack = tuple((layers.Layer(**params["params"][f"l{l}"], cell="lstm"),) for l in range(2))
    assert stack[0][0].W_hr.shape == (P, H)
    value = module.apply(params, xs, seq_lengths=lengths)
    assert rel_error(_module_loss(*value), _functional(stack, xs, lengths)) <= 1e-12


def test_equinox_module_takes_proj_size():
    eqx = pytest.importorskip("equinox")
    import jrnn.equinox
    module = jrnn.equinox.LSTM(D, H, bidirectional=True, proj_size=P, time_major=True,
                               return_carry=True, dtype=F64, key=jax.random.key(0))
    xs, lengths = _xs(), jnp.array([6, 3, 1])
    g = eqx.filter_grad(lambda m: _module_loss(*m(xs, seq_lengths=lengths)))(module)
    assert rel_error(g.stack, jax.grad(_functional)(module.stack, xs, lengths)) <= 1e-10
    with pytest.raises(ValueError, match="no projection"):
        jrnn.equinox.cell_from_layer(module.stack[0][0])
