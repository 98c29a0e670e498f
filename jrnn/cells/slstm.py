r"""The sLSTM cell (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", §2.2):
exponential input gate, sigmoid forget gate, a normaliser state n and a stabiliser m.

Gate order (i, f, z, o), as in the paper. With the pre-activations
\tilde\imath, \tilde f, \tilde z, \tilde o = A_t + R_t split into four H-blocks
(A_t = U x_t + b and R_t = W h_{t−1} + b_r from the driver; W may be the
block-diagonal multi-head matrix of the paper, ``heads=NH``), per unit:

.. math::

    a_t &= \log \sigma(\tilde f_t) = -\operatorname{softplus}(-\tilde f_t)
        \qquad \text{(the log of the forget gate)} \\
    m_t &= \begin{cases} \tilde\imath_t & n_{t-1} = 0 \ \text{(no history yet)} \\
                         \max(a_t + m_{t-1},\ \tilde\imath_t) & \text{otherwise} \end{cases} \\
    i'_t &= \exp(\tilde\imath_t - m_t), \qquad f'_t = \exp(a_t + m_{t-1} - m_t) \\
    c_t &= f'_t c_{t-1} + i'_t \tanh(\tilde z_t), \qquad n_t = f'_t n_{t-1} + i'_t \\
    h_t &= \sigma(\tilde o_t)\, c_t / n_t

The carry is (h, c, n, m) (:class:`SLSTMState`); the initial state is zeros
(the driver's default), so at t = 1 the first branch of m applies: m_1 =
\tilde\imath_1, i'_1 = 1 and n_1 = 1 (n_0 = 0 would otherwise make h_1 = 0/0
where \exp(\tilde\imath_1 - m_1) underflows), and f'_1 = 0: there is no
history to forget (\exp(a_1 + m_0 - m_1) itself would overflow for a very
negative \tilde\imath_1, and 0 · ∞ is NaN). This is the reference
implementation's convention (NX-AI's ``slstm``); it also restarts the
stabiliser wherever a row's state is reset to zeros. The forget gate is the
sigmoid one (the paper also allows \exp(\tilde f); the sigmoid keeps
f'_t ≤ \exp(m_{t-1} − m_t) ≤ 1 without relying on m).

Layers initialise it like every cell (uniform in ±1/√H); ``forget_bias=`` in
:func:`jrnn.layers.init_layer` sets the forget gate's bias, which the paper starts
positive so that the cell starts out remembering.

The stabiliser cancels from h: with \bar c_t = c_t e^{m_t} and \bar n_t =
n_t e^{m_t}, \bar c_t = \sigma(\tilde f_t) \bar c_{t-1} + e^{\tilde\imath_t}
\tanh\tilde z_t (likewise \bar n_t) does not involve m, and h_t = o_t \bar
c_t / \bar n_t. So a loss that reads only the outputs h has, in exact
arithmetic, zero total derivative through m, and the reference
implementations stop the gradient there. A loss may however read the final
state (c_T, n_T, m_T) itself (a state handed to another network, summed over
directions as the encoder-decoder does, or a penalty on it), where the
derivative through m is not zero. This VJP therefore carries m's cotangent
exactly, which costs a few pointwise operations and makes it the derivative
of the forward as written, equal to ``jax.grad`` of it in every case.

Backward, given the cotangents dh, dc, dn, dm of the carry (o = σ(õ),
g = tanh z̃):

.. math::

    \delta c &= dc + dh\, o / n_t, \qquad \delta n = dn - dh\, h_t / n_t,
    \qquad d\tilde o = dh\, (c_t / n_t)\, o (1 - o) \\
    e_f &= f'_t\,(\delta c\, c_{t-1} + \delta n\, n_{t-1}), \qquad
    e_i = i'_t\,(\delta c\, g + \delta n) \qquad \text{(cotangents of the exponents)} \\
    \delta m &= dm - e_f - e_i \qquad \text{(what reaches } m_t\text{)} \\
    d\tilde z &= \delta c\, i'_t (1 - g^2), \qquad
    dc_{t-1} = \delta c\, f'_t, \qquad dn_{t-1} = \delta n\, f'_t \\
    da &= e_f + w\, \delta m, \qquad dm_{t-1} = e_f + w\, \delta m, \qquad
    d\tilde\imath = e_i + (1 - w)\, \delta m, \qquad
    d\tilde f = da\, (1 - \sigma(\tilde f))

where w is the share of m_t that came from a_t + m_{t−1}: 1 where it won the
max, 0 where \tilde\imath won or there was no history, ½ at a tie (as JAX
differentiates ``maximum``). h_{t−1} enters only through R_t.

Residuals: g, o, i', f', 1 − σ(f̃) and w (6H per step), beside the carries.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn.cells import Cell, register


class SLSTMState(NamedTuple):
    """The sLSTM carry, each (B, H) (or (H,)): hidden h, cell c, normaliser n, stabiliser m."""

    h: jax.Array
    c: jax.Array
    n: jax.Array
    m: jax.Array


def step(A, R, carry, params=None):
    _, c_prev, n_prev, m_prev = carry
    z_i, z_f, z_z, z_o = (a + r for a, r in zip(A, R))
    log_f = -jax.nn.softplus(-z_f)
    from_history = log_f + m_prev
    first = n_prev == 0
    m = jnp.where(first, z_i, jnp.maximum(from_history, z_i))
    # No history: f' = 0, not exp(a + m_prev - m), which overflows when ĩ is very negative
    # (then 0 · inf = NaN). The inner where keeps autodiff's cotangent finite as well.
    zero = jnp.zeros((), m.dtype)
    f_s = jnp.where(first, zero, jnp.exp(jnp.where(first, zero, from_history - m)))
    i_s = jnp.exp(z_i - m)
    g, o = jnp.tanh(z_z), jax.nn.sigmoid(z_o)
    c = f_s * c_prev + i_s * g
    n = f_s * n_prev + i_s
    h = o * c / n
    # w: the share of m_t that came from a_t + m_{t-1} (JAX's maximum splits a tie in halves)
    w = jnp.where(first, 0.0, jnp.where(from_history > z_i, 1.0,
                                        jnp.where(from_history == z_i, 0.5, 0.0))).astype(c.dtype)
    return (h, c, n, m), (g, o, i_s, f_s, -jnp.expm1(log_f), w)


def step_vjp(carry_in, carry, extra, dcarry, params=None):
    h_prev, c_prev, n_prev, _ = carry_in
    h, c, n, _ = carry
    g, o, i_s, f_s, one_minus_f, w = extra
    dh, dc, dn, dm = dcarry
    # n_t >= i'_t > 0 after every step the cell ran; the driver also hands this VJP the
    # unchanged (zero) state of a masked step, whose cotangent is zero: 0, not 0/0, there.
    n = jnp.where(n == 0, jnp.ones((), n.dtype), n)
    dc = dc + dh * o / n
    dn = dn - dh * h / n
    dz_o = dh * (c / n) * o * (1 - o)
    e_f = f_s * (dc * c_prev + dn * n_prev)
    e_i = i_s * (dc * g + dn)
    d_m = dm - e_f - e_i
    dz_z = dc * i_s * ((1 - g) * (1 + g))
    d_hist = e_f + w * d_m          # cotangent of a_t + m_{t-1}
    dz_i = e_i + (1 - w) * d_m
    dz_f = d_hist * one_minus_f
    d_in = (jnp.zeros_like(h_prev), dc * f_s, dn * f_s, d_hist)
    return (dz_i, dz_f, dz_z, dz_o), None, d_in, None


def to_carry(state) -> tuple:
    """The public state (an :class:`SLSTMState` or any 4-tuple) as the carry tuple."""
    if not (isinstance(state, (tuple, list)) and len(state) == 4):
        raise TypeError(f"h0: expected the sLSTM state jrnn.cells.SLSTMState(h, c, n, m), got "
                        f"{type(state).__name__}" + (f" of length {len(state)}"
                                                     if isinstance(state, (tuple, list)) else ""))
    return tuple(state)


CELL = register(Cell(
    name="slstm",
    gates=4,
    carry_size=4,
    step=step,
    step_vjp=step_vjp,
    to_carry=to_carry,
    from_carry=lambda carry: SLSTMState(*carry),
))
