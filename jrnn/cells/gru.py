r"""The GRU cell, in PyTorch's convention: gates (r, z, n), r applied to W_hn h + b_hn.

With A_t = U x_t + b and R_t = W h_{t−1} + b_r from the driver, each split
into H-blocks (r, z, n):

.. math::

    r_t &= \sigma(A_r + R_r), \quad z_t = \sigma(A_z + R_z) \\
    n_t &= \tanh(A_n + r_t \odot R_n) \\
    h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

So the recurrent bias b_r matters (its n-block sits inside r ⊙ (·)); layers
of this cell get one by default. Backward, given dh_t:

.. math::

    dn &= dh_t \odot (1 - z_t), \quad da_n = dn \odot (1 - n_t^2) \\
    dA_n &= da_n, \quad dR_n = da_n \odot r_t \\
    dA_r &= dR_r = da_n \odot R_n \odot r_t (1 - r_t) \\
    dA_z &= dR_z = dh_t \odot (h_{t-1} - n_t) \odot z_t (1 - z_t) \\
    dh_{t-1} &\mathrel{+}= dh_t \odot z_t \quad \text{(direct path; the driver adds } dR\,W\text{)}

Residuals: r_t, z_t, n_t and R_n (4H per step); h_{t−1} is the previous
carry. R_n is a product with W and would cost a matmul to recompute, and
each of the four appears in the backward.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn.cells import Cell, register


def step(A, R, carry, params=None):
    (h_prev,) = carry
    (A_r, A_z, A_n), (R_r, R_z, R_n) = A, R
    r = jax.nn.sigmoid(A_r + R_r)
    z = jax.nn.sigmoid(A_z + R_z)
    n = jnp.tanh(A_n + r * R_n)
    h = (1 - z) * n + z * h_prev
    return (h,), (r, z, n, R_n)


def step_vjp(carry_in, carry, saved, dcarry, params=None):
    (h_prev,) = carry_in
    r, z, n, R_n = saved
    (dh,) = dcarry
    da_n = dh * (1 - z) * ((1 - n) * (1 + n))
    dz_r = da_n * R_n * r * (1 - r)
    dz_z = dh * (h_prev - n) * z * (1 - z)
    # dR shares its r and z blocks with dA (the driver stores them once).
    return (dz_r, dz_z, da_n), (dz_r, dz_z, da_n * r), (dh * z,), None


CELL = register(Cell(
    name="gru",
    gates=3,
    carry_size=1,
    step=step,
    step_vjp=step_vjp,
    to_carry=lambda h: (h,),
    from_carry=lambda carry: carry[0],
    needs_recurrent_bias=True,
    vjp_reads_carry_pointwise=True,  # its backward reads h_{t-1} and the gates, not h_t
))
