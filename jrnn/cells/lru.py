r"""The LRU's recurrence (Orvieto et al. 2023, "Resurrecting Recurrent Neural
Networks for Long-Range Reasoning"): a complex diagonal linear recurrence.

With the cell's own real parameters ν, θ, γ_log (N,) and P = x_t Uᵀ split into
(P_re, P_im) (U = [B_re; B_im], the paper's complex B as two real blocks):

.. math::

    \lambda = \exp(-e^{\nu} + i\, e^{\theta}), \qquad \gamma = e^{\gamma_{\log}} \\
    h_t = \lambda \odot h_{t-1} + \gamma \odot (P_{re} + i P_{im})

so a = λ (constant in time) and b_t = γ ⊙ B x_t. γ_log starts at
log √(1 − |λ|²), the paper's normalisation, and is learned as in its code. The
state is complex (complex64 for float32 parameters): the scan multiplies complex
numbers directly, which XLA lowers to the four real products. The readout
y = Re(C h) + D ⊙ x is :func:`jrnn.lru.apply`'s. Backward, with complex
cotangents in the convention ∂J/∂Re + i ∂J/∂Im (the driver hands da_t = λ̄_t
conj(h_{t−1}) and db_t; λ is shared by every step, so its gradient is the sum):

.. math::

    dP_{re} = \gamma\, \mathrm{Re}(db), \quad dP_{im} = \gamma\, \mathrm{Im}(db), \quad
    d\gamma_{\log} = \gamma \textstyle\sum \mathrm{Re}(db)P_{re} + \mathrm{Im}(db)P_{im} \\
    dw = da\, \overline{\lambda}\ (w = \log\lambda), \quad
    d\nu = -e^{\nu}\, \mathrm{Re}(dw), \quad d\theta = e^{\theta}\, \mathrm{Im}(dw) .
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn.cells.linear_contract import GainForm, LinearCell, register


class LRUParams(NamedTuple):
    """The LRU's own parameters, each (N,): λ = exp(−exp(ν) + i exp(θ)), γ = exp(γ_log)."""

    nu_log: jax.Array
    theta_log: jax.Array
    gamma_log: jax.Array


def check_ring(r_min, r_max, max_phase) -> None:
    """0 < r_min ≤ r_max ≤ 1 and max_phase > 0, else a ValueError naming the argument."""
    for name, r in (("r_min", r_min), ("r_max", r_max)):
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 < r <= 1:
            raise ValueError(f"{name}: expected a number in (0, 1] (the modulus |λ| of a "
                             f"stable eigenvalue), got {r!r}")
    if r_min > r_max:
        raise ValueError(f"r_min: expected r_min <= r_max = {r_max}, got {r_min}")
    if not isinstance(max_phase, (int, float)) or isinstance(max_phase, bool) or max_phase <= 0:
        raise ValueError(f"max_phase: expected a number > 0, got {max_phase!r}")


def init_params(key, N: int, dtype=jnp.float32, r_min: float = 0.9, r_max: float = 0.999,
                max_phase: float = 2 * math.pi) -> LRUParams:
    """λ uniform on the ring r_min ≤ |λ| ≤ r_max with phase in [0, max_phase] (the paper's
    init), γ_log = log √(1 − |λ|²)."""
    check_ring(r_min, r_max, max_phase)
    k1, k2 = jax.random.split(key)
    u1 = jax.random.uniform(k1, (N,), dtype)
    u2 = jax.random.uniform(k2, (N,), dtype)
    modulus_sq = u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2
    nu_log = jnp.log(-0.5 * jnp.log(modulus_sq))
    theta_log = jnp.log(max_phase * u2 + jnp.finfo(dtype).tiny)
    gamma_log = 0.5 * jnp.log1p(-modulus_sq)
    # |λ| = 1 exactly (r_max = 1, u1 → 1) would give ν = −inf and γ = 0: keep it just inside
    # the ring, where the gradients are finite.
    nu_log = jnp.maximum(nu_log, jnp.log(jnp.finfo(dtype).eps))
    gamma_log = jnp.maximum(gamma_log, 0.5 * jnp.log(jnp.finfo(dtype).eps))
    return LRUParams(nu_log, theta_log, gamma_log)


def eigenvalues(params: LRUParams):
    """λ = exp(−exp(ν) + i exp(θ)), complex (N,)."""
    return jnp.exp(jax.lax.complex(-jnp.exp(params.nu_log), jnp.exp(params.theta_log)))


def coefficients(P, params):
    P_re, P_im = P
    gamma = jnp.broadcast_to(jnp.exp(params.gamma_log), P_re.shape)
    return eigenvalues(params), jax.lax.complex(gamma * P_re, gamma * P_im)


def coefficients_vjp(P, params, da, db):
    P_re, P_im = P
    gamma = jnp.exp(params.gamma_log)
    db_re, db_im = jnp.real(db), jnp.imag(db)
    leading = tuple(range(db.ndim - 1))  # every axis but the state's: λ and γ are shared
    d_gamma_log = gamma * jnp.sum(db_re * P_re + db_im * P_im, axis=leading)
    dw = jnp.sum(da, axis=leading) * jnp.conj(eigenvalues(params))
    d_nu = -jnp.exp(params.nu_log) * jnp.real(dw)
    d_theta = jnp.exp(params.theta_log) * jnp.imag(dw)
    gamma_rows = jnp.broadcast_to(gamma, db.shape)
    return (gamma_rows * db_re, gamma_rows * db_im), LRUParams(d_nu, d_theta, d_gamma_log)


def input_vjp(params, db):
    """dP = γ ⊙ (Re db, Im db): the projection's cotangent, which needs no P."""
    gamma = jnp.broadcast_to(jnp.exp(params.gamma_log), db.shape)
    return gamma * jnp.real(db), gamma * jnp.imag(db)


def params_vjp(params, da, U, dU, bias, dbias):
    r"""The parameters' gradient from Σ da (N,) and the weights: with dP = γ ⊙ db,
    :math:`d\gamma_{\log} = \sum_{t,b} dP \odot P = \sum_d dU \odot U + dbias \odot bias`
    over both blocks (P = X Uᵀ + bias), so P itself is never needed."""
    d_gamma_log = sum(jnp.sum(d * u, axis=1) for u, d in zip(U, dU))
    if bias is not None:
        d_gamma_log = d_gamma_log + sum(d * c for c, d in zip(bias, dbias))
    dw = da * jnp.conj(eigenvalues(params))
    return LRUParams(-jnp.exp(params.nu_log) * jnp.real(dw),
                     jnp.exp(params.theta_log) * jnp.imag(dw), d_gamma_log)


CELL = register(LinearCell("lru", 2, coefficients, coefficients_vjp, complex_state=True,
                           constant_a=True, init_params=init_params, default_bias=False,
                           gain_form=GainForm(eigenvalues, input_vjp, params_vjp)))
