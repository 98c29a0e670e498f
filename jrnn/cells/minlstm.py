r"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), a linear recurrence.

With P = x_t Uᵀ + bias split into blocks (k_f, k_i, h̃), the paper's normalised gates:

.. math::

    f_t = \sigma(k_f), \quad i_t = \sigma(k_i), \quad
    f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
    h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t ,

so a_t = f'_t ∈ (0, 1) and b_t = i'_t ⊙ h̃_t (plain space, no g(·): see
:mod:`jrnn.cells.mingru`). With s = f + i, backward from da, db:

.. math::

    di' = db \odot \tilde h, \quad d\tilde h = db \odot i', \quad
    df = i (da - di') / s^2, \quad di = f (di' - da) / s^2 , \\
    dk_f = df \odot f (1 - f), \quad dk_i = di \odot i (1 - i) .
"""
from __future__ import annotations

import jax

from jrnn.cells.linear_contract import LinearCell, register


def coefficients(P, params=None):
    k_f, k_i, h_tilde = P
    f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
    s = f + i
    return f / s, (i / s) * h_tilde


def coefficients_vjp(P, params, da, db):
    k_f, k_i, h_tilde = P
    f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
    s = f + i
    di_n = db * h_tilde
    diff = (da - di_n) / (s * s)
    return (diff * i * (f * (1 - f)), -diff * f * (i * (1 - i)), db * (i / s)), None


CELL = register(LinearCell("minlstm", 3, coefficients, coefficients_vjp))
