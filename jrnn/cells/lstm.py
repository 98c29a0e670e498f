r"""The LSTM cell, in PyTorch's gate order (i, f, g, o) and carry (h, c).

With z_t = A_t + R_t split into four H-blocks (A_t = U x_t + b and
R_t = W h_{t−1} + b_r come from the driver):

.. math::

    i_t &= \sigma(z_i), \quad f_t = \sigma(z_f), \quad g_t = \tanh(z_g), \quad o_t = \sigma(z_o) \\
    c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
    h_t &= o_t \odot \tanh(c_t)

Backward, given the cotangents dh_t and dc_t of the carry:

.. math::

    \delta c &= dc_t + dh_t \odot o_t \odot (1 - \tanh^2 c_t) \\
    dz_o &= dh_t \odot \tanh(c_t) \odot o_t (1 - o_t), &
    dz_i &= \delta c \odot g_t \odot i_t (1 - i_t), \\
    dz_f &= \delta c \odot c_{t-1} \odot f_t (1 - f_t), &
    dz_g &= \delta c \odot i_t \odot (1 - g_t^2), \\
    dc_{t-1} &= \delta c \odot f_t

and dA_t = dR_t = dz (A and R enter only through their sum); h_{t−1} reaches
the cell only through R_t, so its direct cotangent is zero.

With a projection (LSTMP, Sak et al. 2014; ``proj_size`` in
:func:`jrnn.layers.init_layer`) this cell is unchanged: its h-output u_t =
o_t ⊙ tanh(c_t) is projected by the driver (:func:`jrnn.rnn`'s ``W_hr``),

.. math::

    h_t = W_{hr} u_t, \qquad \frac{\partial J}{\partial u_t} = W_{hr}^\top \frac{\partial J}{\partial h_t},
    \qquad dW_{hr} = \sum_t \frac{\partial J}{\partial h_t} u_t^\top

and this VJP receives ∂J/∂u_t as dh_t; h_{t−1} (then P wide) still enters
only through R_t, so its direct cotangent is zeros shaped like it.

Residuals: the four activated gates (4H per step). With the carries (h_t,
c_t) that the driver keeps anyway, that is all the backward reads: every
gate appears in it, c_{t−1} is the previous carry, and tanh(c_t) is
recomputed from c_t (one pointwise tanh) rather than stored. With zoneout the driver
stores the zoned carries; the cell's own (h_t, c_t) it recomputes from the gates
(``carry_from_gates``) instead of storing them as well.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn.cells import Cell, register


class LSTMState(NamedTuple):
    """The LSTM carry: hidden state h and cell state c, each (B, H) (or (H,))."""

    h: jax.Array
    c: jax.Array


def step(A, R, carry, params=None):
    _, c_prev = carry
    z_i, z_f, z_g, z_o = (a + r for a, r in zip(A, R))
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return (h, c), (i, f, g, o)


def step_vjp(carry_in, carry, gates, dcarry, params=None):
    _, c_prev = carry_in
    _, c = carry
    i, f, g, o = gates
    dh, dc = dcarry
    tanh_c = jnp.tanh(c)
    dc = dc + dh * o * ((1 - tanh_c) * (1 + tanh_c))
    dz_i = dc * g * i * (1 - i)
    dz_f = dc * c_prev * f * (1 - f)
    dz_g = dc * i * ((1 - g) * (1 + g))
    dz_o = dh * tanh_c * o * (1 - o)
    return (dz_i, dz_f, dz_g, dz_o), None, (jnp.zeros_like(carry_in[0]), dc * f), None


def carry_from_gates(carry_in, gates):
    """(h_t, c_t) again from c_{t−1} and the stored gates: c_t = f ⊙ c_{t−1} + i ⊙ g."""
    i, f, g, o = gates
    c = f * carry_in[1] + i * g
    return o * jnp.tanh(c), c


CELL = register(Cell(
    name="lstm",
    gates=4,
    carry_size=2,
    step=step,
    step_vjp=step_vjp,
    to_carry=lambda state: (state[0], state[1]),
    from_carry=lambda carry: LSTMState(*carry),
    projectable=True,
    carry_from_extra=carry_from_gates,
))
