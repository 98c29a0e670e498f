r"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"), a linear recurrence.

With P = x_t Uᵀ + bias split into blocks (k, h̃):

.. math::

    z_t = \sigma(k_t), \qquad
    h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t ,

so a_t = 1 − z_t = σ(−k_t) and b_t = z_t ⊙ h̃_t. This is the paper's plain-space form
(its Algorithm 1 and 2); h̃ is the linear projection itself, with no g(·): g
only keeps h̃ positive for the paper's log-space scan, which the (a, b)
associative scan does not need (it never divides nor exponentiates; a_t ∈ (0, 1)
so every partial product is in [0, 1]; benchmarks/NOTES.md measures float32 at
T = 65,536). Backward, from the driver's da, db:

.. math::

    dk = (db \odot \tilde h - da) \odot z (1 - z), \qquad d\tilde h = db \odot z .
"""
from __future__ import annotations

import jax

from jrnn.cells.linear_contract import LinearCell, register


def coefficients(P, params=None):
    k, h_tilde = P
    # a = 1 − z written σ(−k): exact where z → 1 (no cancellation), and a no longer shares
    # z with b, so XLA builds a and b straight from P without storing z for all steps
    # (benchmarks/NOTES.md: 64 -> 48 MiB for the parallel training step at T = 1,024).
    return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * h_tilde


def coefficients_vjp(P, params, da, db):
    k, h_tilde = P
    z = jax.nn.sigmoid(k)
    return ((db * h_tilde - da) * (z * (1 - z)), db * z), None


CELL = register(LinearCell("mingru", 2, coefficients, coefficients_vjp))
