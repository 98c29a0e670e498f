r"""Layer-normalised cells: tanh, LSTM and GRU with a layer normalisation inside the step.

Layer normalisation (Ba, Kiros and Hinton 2016, "Layer Normalization", §3.1)
of a row x of n units, with gain γ and bias β:

.. math::

    \mathrm{LN}(x) = \gamma \odot \hat x + \beta, \qquad
    \hat x = (x - \mu)\, s, \quad \mu = \tfrac1n \textstyle\sum_j x_j, \quad
    s = \big(\tfrac1n \textstyle\sum_j (x_j - \mu)^2 + \epsilon\big)^{-1/2}

and its backward, given dy:

.. math::

    d\hat x = dy \odot \gamma, \qquad
    dx = s\,\big(d\hat x - \overline{d\hat x} - \hat x\, \overline{d\hat x \odot \hat x}\big),
    \qquad d\gamma = \textstyle\sum_{\text{rows}} dy \odot \hat x, \qquad
    d\beta = \textstyle\sum_{\text{rows}} dy

(the bars are means over the n units). As in haste's LayerNormLSTM and
LayerNormGRU, the input projection A_t = U x_t and the recurrent projection
R_t = W h_{t−1} are normalised separately, each over all G·H gate units with
its own gain and bias, and the LSTM also normalises its cell state (over H)
before the output tanh:

.. math::

    \text{tanh:}\quad h_t &= \tanh(\mathrm{LN}_x(A_t) + \mathrm{LN}_r(R_t)) \\
    \text{LSTM:}\quad z_t &= \mathrm{LN}_x(A_t) + \mathrm{LN}_r(R_t)
        \to (i, f, g, o), \quad c_t = f \odot c_{t-1} + i \odot g, \quad
        h_t = o \odot \tanh(\mathrm{LN}_c(c_t)) \\
    \text{GRU:}\quad (a^r, a^z, a^n) &= \mathrm{LN}_x(A_t), \ (q^r, q^z, q^n) =
        \mathrm{LN}_r(R_t), \quad r = \sigma(a^r + q^r), \ z = \sigma(a^z + q^z), \\
        n &= \tanh(a^n + r \odot q^n), \quad h_t = (1 - z) \odot n + z \odot h_{t-1}

The normalisations' biases take the place of the layer biases b and b_r, so
layers of these cells have none by default (β_r's n block is the GRU's
recurrent bias inside r ⊙ ·, as in PyTorch's convention). Backward: the
classic cell's backward gives the cotangents of the normalised pre-activations
(dy_x = dz, and dy_r = dz, or for the GRU's n block dy_r = da^n ⊙ r), then the
LN backward above gives dA_t, dR_t and this step's dγ, dβ, which the driver sums
over the steps. The LSTM's cell path: dĉ = dh ⊙ o ⊙ (1 − tanh² ĉ), then
dc_t += LN_c backward of dĉ, and the rest as for the LSTM. Residuals per step: x̂_r
and s_r of the recurrent normalisation, μ_x and s_x of the input one (G·H + 3 numbers
a row; the LSTM's c: μ_c and s_c, 2 more), beside the carries. The backward
recomputes the rest pointwise, which on the CPU costs less than storing it: x̂_x =
(A_t − μ_x) s_x from the A_t the driver keeps (``Cell.vjp_reads_inputs``), the
normalised pre-activations and the gates from x̂_x and x̂_r, and the LSTM's ĉ from c_t.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jrnn.cells import Cell, register
from jrnn.cells import gru as _gru
from jrnn.cells import lstm as _lstm

EPS = 1e-5  # PyTorch's nn.LayerNorm default


class LayerNormParams(NamedTuple):
    """Gains and biases of a layer-normalised cell (G·H each; the LSTM's c: H)."""

    x_gain: jax.Array
    x_bias: jax.Array
    r_gain: jax.Array
    r_bias: jax.Array
    c_gain: Optional[jax.Array] = None
    c_bias: Optional[jax.Array] = None


def _blocks(v, G):
    return tuple(jnp.split(v, G)) if G > 1 else (v,)


def _affine(x_hat, gain, bias):
    """γ ⊙ x̂ + β over blocks: each block of x̂ (B, H) with its block of the gain and bias."""
    G = len(x_hat)
    return tuple(xh * g[None] + b[None]
                 for xh, g, b in zip(x_hat, _blocks(gain, G), _blocks(bias, G)))


def layer_norm(x, gain, bias, with_mean=False):
    """LN over the units of all blocks of x together: (y, x̂, s), each block (B, H);
    ``with_mean``: (y, x̂, s, μ)."""
    n = sum(b.shape[-1] for b in x)
    mu = sum(b.sum(-1, keepdims=True) for b in x) / n
    centred = tuple(b - mu for b in x)
    s = lax.rsqrt(sum((c * c).sum(-1, keepdims=True) for c in centred) / n + EPS)
    x_hat = tuple(c * s for c in centred)
    y = _affine(x_hat, gain, bias)
    return (y, x_hat, s, mu) if with_mean else (y, x_hat, s)


def normalised(x, mu, s):
    """x̂ = (x − μ) s again, from the input and the two numbers a row LN stored."""
    return tuple((b - mu) * s for b in x)


def layer_norm_vjp(dy, x_hat, s, gain):
    """(dx, dγ, dβ) for :func:`layer_norm`, over blocks."""
    G = len(dy)
    n = sum(b.shape[-1] for b in dy)
    d_hat = tuple(d * g[None] for d, g in zip(dy, _blocks(gain, G)))
    mean_d = sum(d.sum(-1, keepdims=True) for d in d_hat) / n
    mean_dx = sum((d * x).sum(-1, keepdims=True) for d, x in zip(d_hat, x_hat)) / n
    dx = tuple(s * (d - mean_d - x * mean_dx) for d, x in zip(d_hat, x_hat))
    cat = lambda parts: parts[0] if G == 1 else jnp.concatenate(parts)
    d_gain = cat(tuple((d * x).sum(0) for d, x in zip(dy, x_hat)))
    d_bias = cat(tuple(d.sum(0) for d in dy))
    return dx, d_gain, d_bias


def _init(gates: int, cell_state: bool):
    def init(key, hidden_size: int, dtype=jnp.float32) -> LayerNormParams:
        del key  # deterministic, as in Ba et al.: gains 1, biases 0
        n = gates * hidden_size
        ones, zeros = jnp.ones((n,), dtype), jnp.zeros((n,), dtype)
        c = (jnp.ones((hidden_size,), dtype), jnp.zeros((hidden_size,), dtype)) if cell_state \
            else (None, None)
        return LayerNormParams(ones, zeros, ones, zeros, *c)
    return init


def _normalised(A, R, params):
    # LN_x's x̂ is not stored: the backward recomputes it from A_t (Cell.vjp_reads_inputs)
    y_x, _, s_x, mu_x = layer_norm(A, params.x_gain, params.x_bias, with_mean=True)
    y_r, xh_r, s_r = layer_norm(R, params.r_gain, params.r_bias)
    return y_x, y_r, (mu_x, s_x, xh_r, s_r)


def _renormalised(A, saved, params):
    """The forward's LN_x(A_t), LN_r(R_t) and x̂_x again, from A_t and what was stored."""
    mu_x, _, xh_r, _ = saved
    xh_x = normalised(A, mu_x, saved[1])
    return (_affine(xh_x, params.x_gain, params.x_bias),
            _affine(xh_r, params.r_gain, params.r_bias), xh_x)


def _normalised_vjp(dy_x, dy_r, A, saved, params, c_grads=(None, None), xh_x=None):
    mu_x, s_x, xh_r, s_r = saved
    xh_x = normalised(A, mu_x, s_x) if xh_x is None else xh_x
    dA, dgx, dbx = layer_norm_vjp(dy_x, xh_x, s_x, params.x_gain)
    dR, dgr, dbr = layer_norm_vjp(dy_r, xh_r, s_r, params.r_gain)
    return dA, dR, LayerNormParams(dgx, dbx, dgr, dbr, *c_grads)


# -- tanh -----------------------------------------------------------------------------------

def elman_step(A, R, carry, params):
    y_x, y_r, saved = _normalised(A, R, params)
    return (jnp.tanh(y_x[0] + y_r[0]),), saved


def elman_step_vjp(carry_in, carry, saved, dcarry, params, A):
    (h,), (dh,) = carry, dcarry
    da = dh * ((1 - h) * (1 + h))
    dA, dR, dparams = _normalised_vjp((da,), (da,), A, saved, params)
    return dA, dR, (jnp.zeros_like(dh),), dparams


# -- LSTM -----------------------------------------------------------------------------------

def lstm_step(A, R, carry, params):
    _, c_prev = carry
    y_x, y_r, saved = _normalised(A, R, params)
    z_i, z_f, z_g, z_o = (a + r for a, r in zip(y_x, y_r))
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    c = f * c_prev + i * g
    (c_norm,), _, c_s, c_mean = layer_norm((c,), params.c_gain, params.c_bias, with_mean=True)
    h = o * jnp.tanh(c_norm)
    # ĉ is not stored: the backward recomputes it from c_t (a carry, kept anyway), μ and s;
    # nor are the gates: it recomputes them from A_t and x̂_r
    return (h, c), (saved, (c_mean, c_s))


def lstm_step_vjp(carry_in, carry, extra, dcarry, params, A):
    _, c_prev = carry_in
    saved, (c_mean, c_s) = extra
    y_x, y_r, xh_x = _renormalised(A, saved, params)
    z_i, z_f, z_g, z_o = (a + r for a, r in zip(y_x, y_r))
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    (c_hat,) = normalised((carry[1],), c_mean, c_s)
    dh, dc = dcarry
    (c_norm,) = _affine((c_hat,), params.c_gain, params.c_bias)
    tanh_c = jnp.tanh(c_norm)
    d_norm = dh * o * ((1 - tanh_c) * (1 + tanh_c))
    (dc_ln,), dgc, dbc = layer_norm_vjp((d_norm,), (c_hat,), c_s, params.c_gain)
    dc = dc + dc_ln
    dz = (dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * ((1 - g) * (1 + g)),
          dh * tanh_c * o * (1 - o))
    dA, dR, dparams = _normalised_vjp(dz, dz, A, saved, params, (dgc, dbc), xh_x)
    return dA, dR, (jnp.zeros_like(carry_in[0]), dc * f), dparams


# -- GRU ------------------------------------------------------------------------------------

def gru_step(A, R, carry, params):
    y_x, y_r, saved = _normalised(A, R, params)
    (h,), _ = _gru.step(y_x, y_r, carry)
    return (h,), saved  # the gates are recomputed in the backward from A_t and x̂_r


def gru_step_vjp(carry_in, carry, extra, dcarry, params, A):
    saved = extra
    y_x, y_r, xh_x = _renormalised(A, saved, params)
    _, gru_extra = _gru.step(y_x, y_r, carry_in)
    dy_x, dy_r, d_in, _ = _gru.step_vjp(carry_in, carry, gru_extra, dcarry)
    dA, dR, dparams = _normalised_vjp(dy_x, dy_r, A, saved, params, xh_x=xh_x)
    return dA, dR, d_in, dparams


ELMAN = register(Cell(name="layernorm_elman", gates=1, carry_size=1, step=elman_step,
                      step_vjp=elman_step_vjp, to_carry=lambda h: (h,),
                      from_carry=lambda carry: carry[0], init_params=_init(1, False),
                      default_bias=False, vjp_reads_inputs=True,
                      vjp_reads_carry_pointwise=True))  # dh ⊙ (1 − h²), then LN's backward
LSTM = register(Cell(name="layernorm_lstm", gates=4, carry_size=2, step=lstm_step,
                     step_vjp=lstm_step_vjp, to_carry=lambda state: (state[0], state[1]),
                     from_carry=lambda carry: _lstm.LSTMState(*carry),
                     init_params=_init(4, True), default_bias=False, projectable=True,
                     vjp_reads_inputs=True))
GRU = register(Cell(name="layernorm_gru", gates=3, carry_size=1, step=gru_step,
                    step_vjp=gru_step_vjp, to_carry=lambda h: (h,),
                    from_carry=lambda carry: carry[0], init_params=_init(3, False),
                    default_bias=False, vjp_reads_inputs=True,
                    vjp_reads_carry_pointwise=True))  # as the GRU: h_t is not read
