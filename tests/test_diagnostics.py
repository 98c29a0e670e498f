"""Gradient flow: the norms read from the hand-written backward equal an autodiff oracle."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import cells, layers, recurrence
from jrnn.models import classifier, seq2seq

T, B, D, H = 9, 3, 2, 4


def oracle(layer, xs, h0, reverse):
    """‖dJ/dh_t‖ and ‖∇_W^(t) J‖ by autodiff of a probed forward: h_t + ε_t, and a
    separate copy W_t of W at every step (∇_{W_t} J is step t's contribution)."""
    cell = cells.get(layer.cell)
    G = cell.gates

    def loss_of(eps, W_steps):
        A = jnp.einsum("tbd,gd->tbg", xs, layer.U)
        A = A if layer.b is None else A + layer.b[None, None, :]
        carry = cell.to_carry(h0)
        order = range(T - 1, -1, -1) if reverse else range(T)
        hs = [None] * T
        for t in order:
            R = recurrence.recurrent(carry[0], W_steps[t], layer.b_r, G, layer.heads)
            carry, _ = cell.step(recurrence.gate_blocks(A[t], G), recurrence.gate_blocks(R, G),
                                 carry, layer.cell_params)
            carry = (carry[0] + eps[t],) + tuple(carry[1:])
            hs[t] = carry[0]
        return readout(jnp.stack(hs), cell.from_carry(carry))

    eps = jnp.zeros((T, B, H), xs.dtype)
    W_steps = jnp.broadcast_to(layer.W, (T,) + layer.W.shape)
    d_eps, d_W = jax.grad(loss_of, argnums=(0, 1))(eps, W_steps)
    return (np.linalg.norm(np.asarray(d_eps).reshape(T, -1), axis=1),
            np.linalg.norm(np.asarray(d_W).reshape(T, -1), axis=1))


def readout(hs, final):
    """A loss on every output and on the final state, with weights that differ per unit."""
    w = jnp.arange(1, H + 1, dtype=hs.dtype).reshape(1, 1, H)
    return jnp.sum(jnp.sin(hs) * w) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", jrnn.cells.names())
def test_flow_equals_autodiff_oracle(cell, reverse):
    k = jax.random.split(jax.random.key(3), 3)
    layer = layers.init_layer(k[0], cell, D, H, dtype=jnp.float64)
    layer = dataclasses.replace(layer, W=2.0 * layer.W)  # gradients reach far back
    xs = jax.random.normal(k[1], (T, B, D), jnp.float64)
    h0 = jax.tree.map(lambda a: 0.5 * jax.random.normal(k[2], a.shape, jnp.float64),
                      layers.zero_states(((layer,),), (B,))[0][0])

    def loss(layer, xs, h0):
        hs, final = layers.run_layer(layer, xs, h0, reverse=reverse)
        return readout(hs, final)

    grads, flows = jrnn.diagnostics.gradient_flow(loss, layer, xs, h0)
    assert len(flows) == 1 and flows[0].cell == cell and flows[0].reverse == reverse
    dh, dW = oracle(layer, xs, h0, reverse)
    np.testing.assert_allclose(flows[0].dh_norm, dh, rtol=1e-10)
    np.testing.assert_allclose(flows[0].dW_norm, dW, rtol=1e-10)
    # The gradients returned are the ordinary ones.
    expected = jax.grad(loss)(layer, xs, h0)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "slstm"])
def test_flow_of_a_block_diagonal_recurrence_equals_autodiff_oracle(cell):
    """‖∇W^(t)‖ of a multi-head W: the norm over the stored blocks only."""
    k = jax.random.split(jax.random.key(4), 3)
    layer = layers.init_layer(k[0], cell, D, H, heads=2, dtype=jnp.float64)
    xs = jax.random.normal(k[1], (T, B, D), jnp.float64)
    h0 = layers.zero_states(((layer,),), (B,))[0][0]
    loss = lambda layer, xs, h0: readout(*layers.run_layer(layer, xs, h0))
    _, flows = jrnn.diagnostics.gradient_flow(loss, layer, xs, h0)
    dh, dW = oracle(layer, xs, h0, False)
    np.testing.assert_allclose(flows[0].dh_norm, dh, rtol=1e-10)
    np.testing.assert_allclose(flows[0].dW_norm, dW, rtol=1e-10)


def test_every_layer_of_an_architecture_reports():
    k = jax.random.split(jax.random.key(0), 4)
    p = seq2seq.init(k[0], "gru", D, H, 3, num_layers=2, bidirectional_encoder=True,
                     dtype=jnp.float64)
    xs = jax.random.normal(k[1], (T, B, D), jnp.float64)
    ys = jax.random.randint(k[2], (T + 1, B), 0, 3)
    _, flows = jrnn.diagnostics.gradient_flow(seq2seq.loss, p, xs, ys)
    assert len(flows) == 2 * 2 + 2  # encoder: 2 layers x 2 directions; decoder: 2 layers
    assert {len(f.dh_norm) for f in flows} == {T, T + 1}
    for f in flows:
        assert np.all(np.isfinite(f.dh_norm)) and np.all(f.dh_norm > 0)


def test_vanishing_gradient_is_visible_for_a_small_tanh_rnn():
    """Loss at the last step only and small recurrent weights: ‖dJ/dh_t‖ decays
    geometrically going back in time (the picture the plots are for)."""
    k = jax.random.split(jax.random.key(1), 3)
    p = classifier.init(k[0], "elman", D, H, 2, dtype=jnp.float64)
    p = p._replace(rnn=((dataclasses.replace(p.rnn[0][0], W=0.3 * p.rnn[0][0].W),),))
    xs = jax.random.normal(k[1], (40, B, D), jnp.float64)
    ys = jax.random.randint(k[2], (B,), 0, 2)
    _, (flow,) = jrnn.diagnostics.gradient_flow(classifier.loss, p, xs, ys)
    assert flow.dh_norm[0] < 1e-6 * flow.dh_norm[-1]
    assert np.all(np.diff(np.log(flow.dh_norm)) > 0)  # rising towards the loss


def test_a_loss_without_manual_layers_is_refused():
    k = jax.random.split(jax.random.key(0), 2)
    p = classifier.init(k[0], "elman", D, H, 2, dtype=jnp.float64)
    xs = jax.random.normal(k[1], (T, B, D), jnp.float64)
    ys = jnp.zeros((B,), jnp.int32)
    with pytest.raises(ValueError, match="backward='manual'"):
        jrnn.diagnostics.gradient_flow(
            lambda p: classifier.loss(p, xs, ys, backward="autodiff"), p)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    flows = [jrnn.diagnostics.LayerFlow(0, "elman", False, np.geomspace(1e-6, 1, 20),
                                        np.geomspace(1e-7, 1e-1, 20))]
    path = jrnn.plots.gradient_flow(flows, str(tmp_path / "flow.png"), title="t")
    assert (tmp_path / "flow.png").stat().st_size > 1000 and path.endswith("flow.png")


def test_memory_bounded_bptt_is_refused_with_the_reason():
    k = jax.random.split(jax.random.key(0), 2)
    p = jrnn.models.tagger.init(k[0], "elman", D, H, 3, dtype=jnp.float64)
    xs = jax.random.normal(k[1], (T, B, D), jnp.float64)
    ys = jnp.zeros((T, B), jnp.int32)
    h0 = layers.zero_states(p.rnn, (B,))
    fn = jrnn.remat.segmented(jrnn.models.tagger.loss_and_state, 3)
    with pytest.raises(ValueError, match="without jrnn.remat.segmented"):
        jrnn.diagnostics.gradient_flow(lambda p: fn(p, xs, ys, h0)[0], p)


# ---- the linear driver (jrnn.linear): λ_t of the adjoint scan and step t's share of dU ----

def linear_case(cell, key):
    """U, bias, h0, params of a small float64 linear layer (the LRU: complex h0)."""
    spec = jrnn.cells.linear_contract.get(cell)
    k = jax.random.split(key, 5)
    U = jax.random.normal(k[0], (spec.blocks * H, D), jnp.float64)
    bias = 0.3 * jax.random.normal(k[1], (spec.blocks * H,), jnp.float64)
    h0 = 0.5 * jax.random.normal(k[2], (B, H), jnp.float64)
    params = None
    if spec.complex_state:
        h0 = jax.lax.complex(h0, 0.5 * jax.random.normal(k[3], (B, H), jnp.float64))
        params = spec.init_params(k[4], H, jnp.float64)
    return U, bias, h0, params


def linear_readout(hs, final):
    """A real loss on every (complex) output and the final state, weights that differ per unit."""
    w = jnp.arange(1, H + 1, dtype=jnp.float64).reshape(1, 1, H)
    return (jnp.sum(jnp.sin(jnp.real(hs)) * w) + jnp.sum(jnp.cos(jnp.imag(hs)) * w)
            + jnp.sum(jnp.abs(final) ** 2))


def linear_oracle(cell, U, bias, xs, h0, params, mask, reverse):
    """‖dJ/dh_t‖ and ‖∇_U^(t) J‖ by autodiff of a probed step-by-step forward: h_t + ε_t
    (real and imaginary parts), and a separate copy U_t of U at every step."""
    spec = jrnn.cells.linear_contract.get(cell)

    def loss_of(eps_re, eps_im, U_steps):
        h, hs = h0, [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            P = tuple(xs[t] @ U_k.T + b_k[None] for U_k, b_k in
                      zip(jnp.split(U_steps[t], spec.blocks), jnp.split(bias, spec.blocks)))
            a, b = spec.coefficients(P, params)
            a = jnp.broadcast_to(a, b.shape)  # the LRU's a is constant, (N,)
            m = mask[t][:, None]
            h = jnp.where(m, a * h + b, h)
            h = h + (jax.lax.complex(eps_re[t], eps_im[t]) if spec.complex_state else eps_re[t])
            hs[t] = jnp.where(m, h, 0)
        return linear_readout(jnp.stack(hs), h)

    eps = jnp.zeros((T, B, H), jnp.float64)
    d_re, d_im, d_U = jax.grad(loss_of, argnums=(0, 1, 2))(
        eps, eps, jnp.broadcast_to(U, (T,) + U.shape))
    dh = np.sqrt(np.sum(np.asarray(d_re) ** 2 + np.asarray(d_im) ** 2, axis=(1, 2)))
    return dh, np.linalg.norm(np.asarray(d_U).reshape(T, -1), axis=1)


@pytest.mark.parametrize("variant", ["plain", "reverse, lengths"])
@pytest.mark.parametrize("mode", jrnn.linear.MODES)
@pytest.mark.parametrize("cell", jrnn.cells.linear_contract.names())
def test_linear_flow_equals_autodiff_oracle(cell, mode, variant):
    """The norms read from the hand-written adjoint scan, in both modes, against autodiff
    of the probed forward (T = 9 is cut into chunks by the parallel mode's blocked scan)."""
    U, bias, h0, params = linear_case(cell, jax.random.key(5))
    xs = jax.random.normal(jax.random.key(6), (T, B, D), jnp.float64)
    reverse = variant != "plain"
    lengths = jnp.array([T, 5, 7]) if reverse else None

    def loss(U, bias, xs, h0, params):
        hs, final = jrnn.linear.linear_rnn(cell, U, bias, xs, h0, cell_params=params,
                                           lengths=lengths, reverse=reverse, mode=mode)
        return linear_readout(hs, final)

    grads, flows = jrnn.diagnostics.gradient_flow(loss, U, bias, xs, h0, params)
    assert len(flows) == 1 and flows[0].cell == cell and flows[0].weight == "U"
    assert flows[0].reverse == reverse
    mask = (np.ones((T, B), bool) if lengths is None
            else np.arange(T)[:, None] < np.asarray(lengths)[None])
    # xs at masked steps never reaches the loss (the driver zeroes it): the oracle too.
    xs_seen = jnp.where(mask[..., None], xs, 0.0)
    dh, dU = linear_oracle(cell, U, bias, xs_seen, h0, params, mask, reverse)
    np.testing.assert_allclose(flows[0].dh_norm, dh, rtol=1e-10)
    np.testing.assert_allclose(flows[0].dW_norm, dU, rtol=1e-10)
    expected = jax.grad(loss)(U, bias, xs, h0, params)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
