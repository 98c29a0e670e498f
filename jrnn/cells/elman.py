r"""The tanh (Elman 1990) cell of the textbook RNN (Deep Learning §10.2).

Forward, with A_t = U x_t + b and R_t = W h_{t-1} (+ b_r) from the driver:

.. math::

    a_t = A_t + R_t, \qquad h_t = \tanh(a_t)

Backward (Deep Learning §10.2.2), given dJ/dh_t:

.. math::

    \frac{\partial J}{\partial a_t} = \frac{\partial J}{\partial h_t} \odot (1 - h_t^2)

and dJ/dA_t = dJ/dR_t = dJ/da_t. tanh' = 1 − tanh², so the only residual is h_t,
which the driver keeps anyway as the carry: this cell stores nothing extra.
"""
from __future__ import annotations

import jax.numpy as jnp

from jrnn.cells import Cell, register


def step(A, R, carry, params=None):
    """``h_t = tanh(A_t + R_t)``; the carry is ``(h,)``; one gate block."""
    h = jnp.tanh(A[0] + R[0])
    return (h,), ()


def step_vjp(carry_in, carry, extra, dcarry, params=None):
    """``dJ/da_t = dJ/dh_t ⊙ (1 − h_t²)``; h_{t-1} reaches h_t only through R_t."""
    (h,) = carry
    (dh,) = dcarry
    da = dh * ((1 - h) * (1 + h))  # 1 - h² without cancellation near ±1
    return (da,), None, (jnp.zeros_like(dh),), None


CELL = register(Cell(
    name="elman",
    gates=1,
    carry_size=1,
    step=step,
    step_vjp=step_vjp,
    to_carry=lambda h: (h,),
    from_carry=lambda carry: carry[0],
    vjp_reads_carry_pointwise=True,  # dh ⊙ (1 − h²)
))
