"""Parity with PyTorch: conversion both ways, outputs, final states and every gradient.

PyTorch is an optional test extra; without it these tests skip and say why.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: it is an optional test extra "
                    "(pip install torch==2.13.0, as the README's test command does) for the parity tests")

from jrnn import layers  # noqa: E402
from jrnn.pytorch import from_torch, from_torch_named, states_from_torch, to_torch  # noqa: E402
from helpers import TOL, rel_error  # noqa: E402

T, B, D, H = 6, 3, 4, 5
LENGTHS = [6, 3, 1]

# (module, num_layers, bidirectional, bias, batch_first, packed, proj_size): every
# option appears for every module, with ragged packed batches in most; the LSTM
# also with a projection (LSTMP, proj_size = P < H), deep and bidirectional.
CONFIGS = [(kind, *options, 0) for kind in ("RNN", "LSTM", "GRU") for options in [
    (1, False, True, False, False),
    (2, True, True, False, True),
    (2, False, False, True, True),
    (1, True, True, True, True),
]] + [("LSTM", 2, True, True, False, True, 3), ("LSTM", 3, False, True, True, False, 2),
      ("LSTM", 1, True, False, False, True, 1)]


def ids(config):
    kind, layers_, bi, bias, bf, packed, proj = config
    return f"{kind}-L{layers_}{'-bi' if bi else ''}{'' if bias else '-nobias'}" \
           f"{'-batchfirst' if bf else ''}{'-packed' if packed else ''}" \
           f"{f'-proj{proj}' if proj else ''}"


@functools.lru_cache(maxsize=None)
def jrnn_value_and_grad(packed: bool, is_lstm: bool):
    """jit(value_and_grad) of the same loss as the torch side, for any stack shape."""
    def J(stack, xs, h0, w_out, w_h, w_c):
        outputs, finals = layers.run_stack(stack, xs, h0,
                                           lengths=jnp.array(LENGTHS) if packed else None)
        flat = [s for layer in finals for s in layer]
        h_n = jnp.stack([s.h if is_lstm else s for s in flat])
        loss = jnp.sum(outputs * w_out) + jnp.sum(h_n * w_h)
        if is_lstm:
            loss = loss + jnp.sum(jnp.stack([s.c for s in flat]) * w_c)
        return loss, (outputs, finals)
    return jax.jit(jax.value_and_grad(J, argnums=(0, 1, 2), has_aux=True))


# float64 for every config; float32 for one config of each module.
CASES = [(c, "float64") for c in CONFIGS] + [(c, "float32") for c in CONFIGS[1::4]] + \
    [(CONFIGS[-3], "float32")]


@pytest.mark.parametrize("config,dtype", CASES, ids=[f"{ids(c)}-{d}" for c, d in CASES])
def test_parity_with_torch(config, dtype):
    kind, num_layers, bidirectional, bias, batch_first, packed, proj = config
    tdtype, is_lstm = getattr(torch, dtype), kind == "LSTM"
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(D, H, num_layers=num_layers, bias=bias,
                                     batch_first=batch_first, bidirectional=bidirectional,
                                     dtype=tdtype, **(dict(proj_size=proj) if proj else {}))
    with torch.no_grad():  # nonzero biases everywhere, so that each one is checked
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    stack = from_torch(module)

    # Lossless round trip.
    back = to_torch(stack, batch_first=batch_first)
    assert repr(back) == repr(module)
    for (name, a), (_, b) in zip(module.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    # The same loss on both sides: outputs and final states, weighted at random.
    L, P = num_layers * (2 if bidirectional else 1), proj or H  # P: the width of h
    x = torch.randn(T, B, D, dtype=tdtype)
    h0 = (0.5 * torch.randn(L, B, P, dtype=tdtype)).requires_grad_()
    c0 = (0.5 * torch.randn(L, B, H, dtype=tdtype)).requires_grad_() if is_lstm else None
    w_out = torch.randn(T, B, P * (2 if bidirectional else 1), dtype=tdtype)
    w_h, w_c = torch.randn(L, B, P, dtype=tdtype), torch.randn(L, B, H, dtype=tdtype)
    x_in = (x.transpose(0, 1) if batch_first else x).clone().requires_grad_()
    state0 = (h0, c0) if is_lstm else h0
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(x_in, torch.tensor(LENGTHS),
                                                      batch_first=batch_first,
                                                      enforce_sorted=False)
        out, state = module(seq, state0)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                        total_length=T)
    else:
        out, state = module(x_in, state0)
    out_tm = out.transpose(0, 1) if batch_first else out
    h_n, c_n = state if is_lstm else (state, None)
    loss = (out_tm * w_out).sum() + (h_n * w_h).sum() + ((c_n * w_c).sum() if is_lstm else 0)
    loss.backward()

    j = lambda t: jnp.asarray(t.detach().numpy())
    h0_j = states_from_torch(stack, h0, c0)
    (J, (outputs, finals)), (g_stack, g_xs, g_h0) = jrnn_value_and_grad(packed, is_lstm)(
        stack, j(x), h0_j, j(w_out), j(w_h), j(w_c))
    tol = TOL[jnp.float64 if dtype == "float64" else jnp.float32]
    assert rel_error(J, j(loss)) <= tol
    assert rel_error(outputs, j(out_tm)) <= tol
    assert rel_error(finals, states_from_torch(stack, h_n, c_n)) <= tol
    torch_grads = from_torch_named(module, lambda name: getattr(module, name).grad)
    assert jax.tree.structure(torch_grads) == jax.tree.structure(g_stack)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_stack),
                            jax.tree.leaves(torch_grads)):
        assert rel_error(a, b) <= tol, jax.tree_util.keystr(path)
    x_grad = x_in.grad.transpose(0, 1) if batch_first else x_in.grad
    assert rel_error(g_xs, j(x_grad)) <= tol
    assert rel_error(g_h0, states_from_torch(stack, h0.grad, c0.grad if is_lstm else None)) <= tol


def test_a_jrnn_stack_runs_in_torch_unchanged():
    """jrnn -> torch: a stack initialised in jrnn (no b_r for tanh) gives the same outputs."""
    stack = layers.init_stack(jax.random.key(0), "elman", D, H, num_layers=2, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    outputs, _ = layers.run_stack(stack, xs)
    out, _ = to_torch(stack)(torch.from_numpy(np.array(xs)))
    assert rel_error(outputs, jnp.asarray(out.detach().numpy())) <= 1e-12


def test_unsupported_modules_are_refused():
    with pytest.raises(ValueError, match="nonlinearity='relu'"):
        from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"))
    with pytest.raises(TypeError, match="expected torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU"):
        from_torch(torch.nn.Linear(3, 4))


def test_projection_round_trips():
    """LSTMP both ways: a jrnn stack with proj_size becomes torch's LSTM(proj_size=P)
    with the same weights (weight_hr included) and outputs, and comes back unchanged."""
    stack = layers.init_stack(jax.random.key(0), "lstm", D, H, num_layers=2, bidirectional=True,
                              proj_size=2, dtype=jnp.float64)
    module = to_torch(stack)
    assert module.proj_size == 2 and module.weight_hr_l1_reverse.shape == (2, H)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
    outputs, _ = layers.run_stack(stack, xs)
    out, _ = module(torch.from_numpy(np.array(xs)))
    assert outputs.shape == (T, B, 4)
    assert rel_error(outputs, jnp.asarray(out.detach().numpy())) <= 1e-12
    back = from_torch(module)
    for l, layer in enumerate(stack):
        for d, part in enumerate(layer):
            for name in ("U", "W", "b", "W_hr"):
                np.testing.assert_array_equal(getattr(back[l][d], name), getattr(part, name))
            np.testing.assert_array_equal(back[l][d].b_r, 0)  # torch's bias_hh, zero


def test_states_round_trip():
    from jrnn.pytorch import states_to_torch
    stack = from_torch(torch.nn.LSTM(D, H, num_layers=2, bidirectional=True, dtype=torch.float64))
    h_n, c_n = torch.randn(4, B, H, dtype=torch.float64), torch.randn(4, B, H, dtype=torch.float64)
    back = states_to_torch(states_from_torch(stack, h_n, c_n))
    assert torch.equal(back[0], h_n) and torch.equal(back[1], c_n)


def test_docstring_example():
    import doctest
    import jrnn.pytorch
    assert doctest.testmod(jrnn.pytorch).failed == 0
