"""The sLSTM cell: its equations against numpy, the stabiliser, the gradient through m,
training from the command line. Its hand-written gradients against autodiff, in every
architecture and option, dense and multi-head, are rows of the descriptor table."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import cli, layers
from helpers import rel_error

T, B, D, H = 6, 3, 4, 4
F64 = jnp.float64


def _layer(heads=1, seed=0, scale=1.0):
    layer = layers.init_layer(jax.random.key(seed), "slstm", D, H, heads=heads,
                              recurrent_bias=True, dtype=F64)
    return jax.tree.map(lambda a: scale * a, layer)


def _xs(seed=1, scale=1.0):
    return scale * jax.random.normal(jax.random.key(seed), (T, B, D), F64)


def numpy_slstm(layer, xs):
    """Beck et al. (2024)'s equations, one step at a time in numpy, from the zero state;
    and the same without the stabiliser (c̄ = c e^m, n̄ = n e^m), whose h must agree."""
    sig = lambda z: 1 / (1 + np.exp(-z))
    U, W, b, b_r = (np.asarray(a) for a in (layer.U, layer.W, layer.b, layer.b_r))
    h, c, n, m = (np.zeros((B, H)) for _ in range(4))
    c_bar, n_bar = np.zeros((B, H)), np.zeros((B, H))
    hs, hs_bar = [], []
    for x in np.asarray(xs):
        z = x @ U.T + b + h @ W.T + b_r
        zi, zf, zz, zo = (z[:, k * H:(k + 1) * H] for k in range(4))
        log_f = np.log(sig(zf))
        m_new = np.where(n == 0, zi, np.maximum(log_f + m, zi))
        i_s, f_s = np.exp(zi - m_new), np.exp(log_f + m - m_new)
        c, n, m = f_s * c + i_s * np.tanh(zz), f_s * n + i_s, m_new
        h = sig(zo) * c / n
        c_bar = sig(zf) * c_bar + np.exp(zi) * np.tanh(zz)
        n_bar = sig(zf) * n_bar + np.exp(zi)
        hs.append(h)
        hs_bar.append(sig(zo) * c_bar / n_bar)
    return np.stack(hs), (h, c, n, m), np.stack(hs_bar)


def test_forward_equals_the_equations_and_the_unstabilised_form():
    layer, xs = _layer(), _xs()
    hs, final = layers.run_layer(layer, xs)
    ref, ref_final, unstabilised = numpy_slstm(layer, xs)
    assert rel_error(hs, jnp.asarray(ref)) <= 1e-13
    assert rel_error(tuple(final), tuple(jnp.asarray(a) for a in ref_final)) <= 1e-13
    assert rel_error(hs, jnp.asarray(unstabilised)) <= 1e-12  # m cancels from h
    np.testing.assert_allclose(final.n.min() > 0, True)


def test_large_input_gates_stay_finite_in_float32():
    """exp(ĩ) overflows float32 beyond ĩ ≈ 88; the stabilised cell does not."""
    layer = jax.tree.map(lambda a: a.astype(jnp.float32), _layer(scale=30.0))
    xs = _xs(scale=10.0).astype(jnp.float32)
    hs, final = layers.run_layer(layer, xs)
    g = jax.grad(lambda l: jnp.sum(layers.run_layer(l, xs)[0]))(layer)
    assert float(jnp.max(jnp.abs(layer.U @ xs[0].T))) > 88
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((hs, final, g)))


def _stopped_forward(layer, xs):
    """The reference implementations' backward: the same equations with the gradient of
    m stopped wherever m is used (written out again here, not jrnn's step)."""
    def stopped(A, R, carry, params=None):
        _, c_prev, n_prev, m_prev = carry
        z_i, z_f, z_z, z_o = (a + r for a, r in zip(A, R))
        log_f = -jax.nn.softplus(-z_f)
        m = jax.lax.stop_gradient(jnp.where(n_prev == 0, z_i,
                                            jnp.maximum(log_f + m_prev, z_i)))
        m_prev = jax.lax.stop_gradient(m_prev)
        i_s, f_s = jnp.exp(z_i - m), jnp.exp(log_f + m_prev - m)
        c = f_s * c_prev + i_s * jnp.tanh(z_z)
        n = f_s * n_prev + i_s
        return (jax.nn.sigmoid(z_o) * c / n, c, n, m), None
    cell = jrnn.cells.Cell("slstm_stopped", 4, 4, stopped, None, lambda s: tuple(s),
                           lambda c: jrnn.cells.SLSTMState(*c))
    return jrnn.rnn(cell, layer.U, layer.W, layer.b, xs, b_r=layer.b_r, heads=layer.heads,
                    backward="autodiff")


@pytest.mark.parametrize("heads", [1, 2])
def test_the_path_through_m_vanishes_for_outputs_and_not_for_the_state(heads):
    """Outputs-only loss: the exact gradient equals the stop-gradient one. A loss on the
    final state: they differ, and the hand-written one is autodiff's (as the table checks)."""
    layer, xs = _layer(heads), _xs()
    on_outputs = lambda run: lambda l: jnp.sum(jnp.sin(run(l, xs)[0]))
    on_state = lambda run: lambda l: jnp.sum(run(l, xs)[1].c ** 2)
    manual = lambda l, xs: layers.run_layer(l, xs)
    autodiff = lambda l, xs: layers.run_layer(l, xs, backward="autodiff")
    grad = lambda f: jax.jit(jax.grad(f))(layer)
    assert rel_error(grad(on_outputs(manual)), grad(on_outputs(_stopped_forward))) <= 1e-10
    assert rel_error(grad(on_state(manual)), grad(on_state(autodiff))) <= 1e-10
    assert rel_error(grad(on_state(_stopped_forward)), grad(on_state(autodiff))) > 1e-3


def test_no_pytorch_counterpart_is_said():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="cell 'slstm' has no torch.nn counterpart"):
        jrnn.pytorch.to_torch(((_layer(),),))


def test_train_from_the_command_line(tmp_path, capsys):
    assert cli.main(["train", "--cell", "slstm", "--heads", "2", "--max-chars", "20000",
                     "--hidden", "8", "--seq", "8", "--batch", "4", "--steps", "3",
                     "--sample", "10", "--quiet"]) == 0
    assert "val" in capsys.readouterr().out.lower()


def test_forget_bias_sets_the_forget_gate_block():
    layer = layers.init_layer(jax.random.key(0), "slstm", D, H, forget_bias=3.0,
                              recurrent_bias=True)
    np.testing.assert_array_equal(layer.b[H:2 * H], 3.0)
    np.testing.assert_array_equal(layer.b_r[H:2 * H], 0.0)
    assert not np.any(np.asarray(layer.b[:H]) == 3.0)


def test_a_bare_array_as_the_state_is_named():
    with pytest.raises(TypeError, match=r"h0: expected the sLSTM state .*SLSTMState\(h, c, n, m\), "
                                        r"got ArrayImpl"):
        layers.run_layer(_layer(), _xs(), jnp.zeros((B, H), F64))
