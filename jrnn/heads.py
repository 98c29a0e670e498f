r"""The softmax / negative log-likelihood output head, with its hand-written VJP.

.. math::

    o_t = c + V h_t, \qquad \hat y_t = \mathrm{softmax}(o_t), \qquad
    J = \sum_t -\log \hat y_t[y_t] = \sum_t \big(\mathrm{logsumexp}(o_t) - o_t[y_t]\big)

computed with log-sum-exp, never ``log(softmax)``. Backward (seed 001: the
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

import jax
import jax.numpy as jnp

from jrnn import _checks

__all__ = ["softmax_nll", "logits"]


def logits(V, c, hs):
    """o = hs Vᵀ + c for hs of shape (..., H); returns (..., C)."""
    o = jnp.einsum("...h,ch->...c", hs, V)
    return o + c.reshape((1,) * (o.ndim - 1) + c.shape)


def _accumulation_dtype(dtype):
    """Half-precision logits are reduced in float32."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def _terms(V, c, hs, ys, mask):
    """Per-row NLL (masked rows 0, out-of-range labels NaN), logits, log-sum-exp."""
    o = logits(V, c, hs)
    o = o.astype(_accumulation_dtype(o.dtype))
    lse = jax.nn.logsumexp(o, axis=-1)
    num_classes = V.shape[0]
    valid = (ys >= 0) & (ys < num_classes)
    o_y = jnp.take_along_axis(o, jnp.where(valid, ys, 0)[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, lse - o_y, jnp.nan)
    if mask is not None:
        nll = jnp.where(mask, nll, 0)
    return nll, o, lse, valid


@jax.custom_vjp
def _softmax_nll_manual(V, c, hs, ys, mask):
    return _terms(V, c, hs, ys, mask)[0].sum()


def _softmax_nll_manual_fwd(V, c, hs, ys, mask):
    nll, o, lse, valid = _terms(V, c, hs, ys, mask)
    probs = jnp.exp(o - lse[..., None])
    d_o = probs - jax.nn.one_hot(ys, V.shape[0], dtype=probs.dtype)  # ŷ − onehot(y)
    d_o = jnp.where(valid[..., None], d_o, jnp.nan)  # as the loss: NaN for a bad label
    if mask is not None:
        d_o = jnp.where(mask[..., None], d_o, 0)
    return nll.sum(), (d_o.astype(V.dtype), hs, V)


def _softmax_nll_manual_bwd(residuals, g):
    d_o, hs, V = residuals
    d_o = d_o * g.astype(d_o.dtype)
    rows = lambda a: a.reshape(-1, a.shape[-1])  # one 2-D matmul over every row
    dV = rows(d_o).T @ rows(hs)
    dc = rows(d_o).sum(0)
    d_hs = jnp.einsum("...c,ch->...h", d_o, V)
    return dV, dc, d_hs, None, None


_softmax_nll_manual.defvjp(_softmax_nll_manual_fwd, _softmax_nll_manual_bwd)


def softmax_nll(V, c, hs, ys, mask=None, *, backward: str = "manual"):
    """Summed negative log-likelihood of integer labels under softmax(c + V h).

    Args:
      V: (C, H) output weights. c: (C,) output bias.
      hs: (..., H) hidden states, e.g. (T, B, H) or (B, H).
      ys: integer labels of shape ``hs.shape[:-1]``, each in [0, C).
      mask: optional bool of shape ``hs.shape[:-1]``; False rows add nothing.
      backward: ``"manual"`` (hand-written VJP) or ``"autodiff"``.

    Returns:
      J, a scalar, in float32 when the parameters are half precision. A label
      outside [0, C) gives NaN (checked eagerly when ``ys`` is concrete).
    """
    _checks.backward(backward)
    _checks.floating("V", V)
    _checks.rank("V", V, (2,), "(C, H)")
    C, H = V.shape
    _checks.shape("c", c, (C,))
    _checks.same_dtype("c", c, V.dtype, "V")
    if hs.shape[-1:] != (H,):
        _checks.fail_shape("hs", f"(..., {H}): last axis = hidden size, V is {tuple(V.shape)}",
                           hs.shape)
    _checks.same_dtype("hs", hs, V.dtype, "V")
    _checks.integer("ys", ys)
    _checks.shape("ys", ys, hs.shape[:-1], f"{tuple(hs.shape[:-1])}, one label per step")
    if mask is not None:
        _checks.boolean("mask", mask)
        _checks.shape("mask", mask, hs.shape[:-1])
    _checks.labels_in_range("ys", ys, C, mask)
    if backward == "autodiff":
        return _terms(V, c, hs, ys, mask)[0].sum()
    _checks.reject_forward_mode("jrnn.heads.softmax_nll", V, c, hs)
    return _softmax_nll_manual(V, c, hs, ys, mask)
