r"""The softmax / negative log-likelihood output head, with its hand-written VJP.

.. math::

    o_t = c + V h_t, \qquad \hat y_t = \mathrm{softmax}(o_t), \qquad
    J = \sum_t -\log \hat y_t[y_t] = \sum_t \big(\mathrm{logsumexp}(o_t) - o_t[y_t]\big)

computed with log-sum-exp, never ``log(softmax)``. Backward (Deep Learning §10.2.2: the
softmax Jacobian's ŷ factors cancel against the 1/ŷ of the log):

.. math::

    \frac{\partial J}{\partial o_t} = \hat y_t - \mathrm{onehot}(y_t), \quad
    dV = \sum_t \frac{\partial J}{\partial o_t} h_t^\top, \quad
    dc = \sum_t \frac{\partial J}{\partial o_t}, \quad
    \frac{\partial J}{\partial h_t} = V^\top \frac{\partial J}{\partial o_t}.

The head is time-parallel: all three products are single matmuls over every
row. The forward pass of the VJP computes ŷ − onehot(y) once and keeps it as
the only residual besides h and V, so the backward does no softmax again.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn import _checks, _matmul, native_head

__all__ = ["Head", "init_head", "softmax_nll", "squared_error", "logits"]


class Head(NamedTuple):
    """A time-parallel linear output layer o = c + V h."""

    V: jax.Array  # (C, H)
    c: jax.Array  # (C,)


def init_head(key, input_size: int, output_size: int, dtype=jnp.float32) -> Head:
    """PyTorch's ``nn.Linear`` initialisation: uniform in ±1/√fan_in."""
    _checks.size("input_size", input_size)
    _checks.size("output_size", output_size)
    bound = 1.0 / float(input_size) ** 0.5
    kV, kc = jax.random.split(_checks.key("key", key))
    return Head(jax.random.uniform(kV, (output_size, input_size), dtype, -bound, bound),
                jax.random.uniform(kc, (output_size,), dtype, -bound, bound))


def logits(V, c, hs, matmul_dtype=None):
    """o = hs Vᵀ + c for hs of shape (..., H); returns (..., C)."""
    o = _matmul.einsum("...h,ch->...c", hs, V, matmul_dtype)
    return o + c.reshape((1,) * (o.ndim - 1) + c.shape)


def _accumulation_dtype(dtype):
    """Half-precision logits are reduced in float32."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def _terms(V, c, hs, ys, mask, md=None):
    """Per-row NLL (masked rows 0, out-of-range labels NaN), logits, log-sum-exp."""
    o = logits(V, c, hs, md)
    o = o.astype(_accumulation_dtype(o.dtype))
    lse = jax.nn.logsumexp(o, axis=-1)
    num_classes = V.shape[0]
    valid = (ys >= 0) & (ys < num_classes)
    o_y = jnp.take_along_axis(o, jnp.where(valid, ys, 0)[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, lse - o_y, jnp.nan)
    if mask is not None:
        nll = jnp.where(mask, nll, 0)
    return nll, o, lse, valid


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _softmax_nll_manual(md, kernel, V, c, hs, ys, mask):
    if kernel == "native":
        return native_head.softmax_nll(V, c, hs, ys, mask, keep_gradient=False)[0]
    return _terms(V, c, hs, ys, mask, md)[0].sum()


def _softmax_nll_manual_fwd(md, kernel, V, c, hs, ys, mask):
    if kernel == "native":
        J, d_o = native_head.softmax_nll(V, c, hs, ys, mask, keep_gradient=True)
        return J, (d_o, hs, V)
    nll, o, lse, valid = _terms(V, c, hs, ys, mask, md)
    probs = jnp.exp(o - lse[..., None])
    d_o = probs - jax.nn.one_hot(ys, V.shape[0], dtype=probs.dtype)  # ŷ − onehot(y)
    d_o = jnp.where(valid[..., None], d_o, jnp.nan)  # as the loss: NaN for a bad label
    if mask is not None:
        d_o = jnp.where(mask[..., None], d_o, 0)
    return nll.sum(), (d_o.astype(V.dtype), hs, V)


def _softmax_nll_manual_bwd(md, kernel, residuals, g):
    d_o, hs, V = residuals
    if kernel == "native":
        return (*native_head.backward(d_o, hs, V, g), None, None)
    d_o = d_o * jnp.asarray(g, d_o.dtype)  # g may be a Python float (vjp_fn(1.0))
    rows = lambda a: a.reshape(-1, a.shape[-1])  # one 2-D matmul over every row
    dV = _matmul.einsum("nc,nh->ch", rows(d_o), rows(hs), md)
    dc = rows(d_o).sum(0)
    d_hs = _matmul.einsum("...c,ch->...h", d_o, V, md)
    return dV, dc, d_hs, None, None


_softmax_nll_manual.defvjp(_softmax_nll_manual_fwd, _softmax_nll_manual_bwd)


KERNELS = ("auto", "xla", "native")


def softmax_nll(V, c, hs, ys, mask=None, *, matmul_dtype=None, backward: str = "manual",
                kernel: str = "auto"):
    """Summed negative log-likelihood of integer labels under softmax(c + V h).

    Args:
      V: (C, H) output weights. c: (C,) output bias.
      hs: (..., H) hidden states, e.g. (T, B, H) or (B, H).
      ys: integer labels of shape ``hs.shape[:-1]``, each in [0, C).
      mask: optional bool of shape ``hs.shape[:-1]``; False rows add nothing.
      matmul_dtype: None, or e.g. ``jnp.bfloat16`` for the products (see
        :func:`jrnn.rnn`).
      backward: ``"manual"`` (hand-written VJP) or ``"autodiff"``.
      kernel: ``"auto"`` or ``"xla"`` (XLA's products and reductions), or ``"native"``:
        the logits, the loss and ŷ − onehot(y) in one C++ call on the CPU
        (:mod:`jrnn.native_head`; float32, the manual backward); the models pass
        ``"native"`` when their own ``kernel`` is.

    Returns:
      J, a scalar, in float32 when the parameters are half precision. A label
      outside [0, C) gives NaN (checked eagerly when ``ys`` is concrete).
    """
    _checks.backward(backward)
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    V, c, hs, ys, mask = (_checks.array(name, a) for name, a in
                          zip(("V", "c", "hs", "ys", "mask"), (V, c, hs, ys, mask)))
    _check_linear(V, c, hs)
    C = V.shape[0]
    _checks.integer("ys", ys)
    _checks.shape("ys", ys, hs.shape[:-1], f"{tuple(hs.shape[:-1])}, one label per step")
    if mask is not None:
        _checks.boolean("mask", mask)
        _checks.shape("mask", mask, hs.shape[:-1])
    _checks.labels_in_range("ys", ys, C, mask)
    md = _matmul.check(matmul_dtype)
    if kernel == "native":
        if backward != "manual":
            raise ValueError("kernel='native' has a hand-written backward only: "
                             "use backward='manual'")
        reason = native_head.unsupported(V, hs, md)
        if reason is not None:
            raise ValueError(f"kernel='native' cannot run this head: {reason}; "
                             f"use kernel='auto'")
    if backward == "autodiff":
        return _terms(V, c, hs, ys, mask, md)[0].sum()
    _checks.reject_forward_mode("jrnn.heads.softmax_nll", V, c, hs)
    return _softmax_nll_manual(md, "native" if kernel == "native" else "xla",
                               V, c, hs, ys, mask)


def _check_linear(V, c, hs):
    _checks.floating("V", V)
    _checks.rank("V", V, (2,), "(C, H)")
    C, H = V.shape
    _checks.shape("c", c, (C,))
    _checks.same_dtype("c", c, V.dtype, "V")
    if hs.shape[-1:] != (H,):
        _checks.fail_shape("hs", f"(..., {H}): last axis = hidden size, V is {tuple(V.shape)}",
                           hs.shape)
    _checks.same_dtype("hs", hs, V.dtype, "V")


def _squared_error_terms(V, c, hs, targets, md=None):
    return jnp.sum(jnp.square(logits(V, c, hs, md) - targets))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _squared_error_manual(md, V, c, hs, targets):
    return _squared_error_terms(V, c, hs, targets, md)


def _squared_error_manual_fwd(md, V, c, hs, targets):
    residual = logits(V, c, hs, md) - targets
    return jnp.sum(jnp.square(residual)), (residual, hs, V)


def _squared_error_manual_bwd(md, saved, g):
    residual, hs, V = saved
    d_o = (2 * jnp.asarray(g, residual.dtype)) * residual  # dJ/do = 2 (o − y)
    rows = lambda a: a.reshape(-1, a.shape[-1])
    return (_matmul.einsum("nc,nh->ch", rows(d_o), rows(hs), md), rows(d_o).sum(0),
            _matmul.einsum("...c,ch->...h", d_o, V, md), -d_o)


_squared_error_manual.defvjp(_squared_error_manual_fwd, _squared_error_manual_bwd)


def squared_error(V, c, hs, targets, *, matmul_dtype=None, backward: str = "manual"):
    r"""J = Σ ‖c + V h − y‖² over all rows, for regression (the adding problem).

    .. math::  \frac{\partial J}{\partial o} = 2 (o - y), \quad
               dV = \sum 2 (o - y) h^\top, \quad dh = V^\top 2 (o - y)

    ``targets`` has shape ``hs.shape[:-1] + (C,)``.
    """
    _checks.backward(backward)
    V, c, hs, targets = (_checks.array(name, a) for name, a in
                         zip(("V", "c", "hs", "targets"), (V, c, hs, targets)))
    _check_linear(V, c, hs)
    _checks.same_dtype("targets", targets, V.dtype, "V")
    _checks.shape("targets", targets, hs.shape[:-1] + V.shape[:1])
    md = _matmul.check(matmul_dtype)
    if backward == "autodiff":
        return _squared_error_terms(V, c, hs, targets, md)
    _checks.reject_forward_mode("jrnn.heads.squared_error", V, c, hs, targets)
    return _squared_error_manual(md, V, c, hs, targets)
