r"""The LRU layer (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
Long-Range Reasoning"): the complex diagonal recurrence of :mod:`jrnn.cells.lru`
with its real input and output projections.

.. math::

    h_t = \lambda \odot h_{t-1} + \gamma \odot (B x_t), \qquad
    y_t = \mathrm{Re}(C h_t) + D \odot x_t

with λ = exp(−e^ν + i e^θ), γ = e^{γ_log}, B = B_re + i B_im (N, H), C = C_re + i C_im
(H, N), D (H,): real inputs x_t (H,) and real outputs y_t (H,), a complex state (N,)
(complex64 for float32 parameters). The recurrence runs on :func:`jrnn.linear.linear_rnn`
with U = [B_re; B_im], so its backward is the hand-written adjoint scan; the readout
y = h_re C_reᵀ − h_im C_imᵀ + D ⊙ x is one real matmul after the scan, differentiated
by JAX (it is the transpose of a matmul, nothing to hand-write). B and C start as the
paper's: normal with variance 1/(2H) and 1/N per part, D normal.

>>> import jax, jax.numpy as jnp, jrnn.lru
>>> p = jrnn.lru.init(jax.random.key(0), hidden_size=3, state_size=4)
>>> ys, h_T = jrnn.lru.apply(p, jnp.ones((5, 2, 3)))
>>> ys.shape, h_T.shape, h_T.dtype
((5, 2, 3), (2, 4), dtype('complex64'))
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, linear
from jrnn.cells import lru as _cell

__all__ = ["LRU", "init", "apply"]


class LRU(NamedTuple):
    """The LRU's real parameters (N = state size, H = model size)."""

    recurrence: _cell.LRUParams   # ν, θ, γ_log, each (N,)
    B_re: jax.Array               # (N, H)
    B_im: jax.Array               # (N, H)
    C_re: jax.Array               # (H, N)
    C_im: jax.Array               # (H, N)
    D: jax.Array                  # (H,)


def init(key, hidden_size: int, state_size: int, *, r_min: float = 0.9, r_max: float = 0.999,
         max_phase: float = 2 * math.pi, dtype=jnp.float32) -> LRU:
    """The paper's initialisation: λ uniform on the ring r_min ≤ |λ| ≤ r_max (each in
    (0, 1]) with phase in [0, max_phase], γ = √(1 − |λ|²)."""
    key = _checks.key("key", key)
    _checks.size("hidden_size", hidden_size)
    _checks.size("state_size", state_size)
    k = jax.random.split(key, 6)
    H, N = hidden_size, state_size
    normal = lambda k, shape, var: jax.random.normal(k, shape, dtype) * math.sqrt(var)
    return LRU(_cell.init_params(k[0], N, dtype, r_min=r_min, r_max=r_max, max_phase=max_phase),
               normal(k[1], (N, H), 1 / (2 * H)), normal(k[2], (N, H), 1 / (2 * H)),
               normal(k[3], (H, N), 1 / N), normal(k[4], (H, N), 1 / N),
               normal(k[5], (H,), 1.0))


def apply(params: LRU, xs, h0=None, *, mask=None, lengths=None, reset=None,
          reverse: bool = False, mode: Optional[str] = None, backward: str = "manual"):
    """Runs the LRU over xs (T, B, H) (or (T, H)); returns ``(ys, final)``: ys (T, B, H)
    real (zeros at masked steps), final the complex state (B, N). Options as in
    :func:`jrnn.linear.linear_rnn`."""
    if not isinstance(params, LRU):
        raise TypeError(f"params: expected jrnn.lru.LRU, got {type(params).__name__}")
    U = jnp.concatenate([params.B_re, params.B_im])
    hs, final = linear.linear_rnn("lru", U, None, xs, h0, cell_params=params.recurrence,
                                  mask=mask, lengths=lengths, reset=reset, reverse=reverse,
                                  mode=mode, backward=backward)
    C = jnp.concatenate([params.C_re, -params.C_im], axis=1)  # Re(C h) = [h_re, h_im] [C_re, −C_im]ᵀ
    ys = jnp.einsum("...n,hn->...h", jnp.concatenate([jnp.real(hs), jnp.imag(hs)], -1), C)
    xs = jnp.asarray(xs)
    if mask is None and lengths is None:
        return ys + jnp.broadcast_to(params.D, xs.shape) * xs, final
    valid = jnp.ones(xs.shape[:-1], bool) if mask is None else jnp.asarray(mask)
    if lengths is not None:
        valid = valid & linear.lengths_to_mask(jnp.asarray(lengths), xs.shape[0])
    valid = valid[..., None]
    xs = jnp.where(valid, xs, jnp.zeros((), xs.dtype))  # a NaN in padding reaches nothing
    ys = ys + jnp.broadcast_to(params.D, xs.shape) * xs
    return jnp.where(valid, ys, jnp.zeros((), ys.dtype)), final
