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
recurrent bias inside r ⊙ ·, as in PyTorch's convention).

LN_x reads A_t alone, so it is the cell's ``prepare`` map (:mod:`jrnn.cells`):
the driver normalises all T·B rows of A at once before the loop, and the step
reads A'_t = LN_x(A_t). Backward: the classic cell's backward gives the
cotangents of the normalised pre-activations (dy_x = dz, and dy_r = dz, or for
the GRU's n block dy_r = da^n ⊙ r); dy_x is the step's dA'_t, and the LN
backward above turns dy_r into dR_t and this step's dγ_r, dβ_r, which the
driver sums over the steps. After the backward scan, LN_x's backward runs once
over all rows: dA' → dA, with dγ_x and dβ_x summed over every row. The LSTM's
cell path: dĉ = dh ⊙ o ⊙ (1 − tanh² ĉ), then dc_t += LN_c backward of dĉ, and
the rest as for the LSTM. Residuals per step: x̂ and s of LN_r (G·H + 1 per row,
+ H + 1 for the LSTM's c), beside what the classic cell stores; LN_x's x̂ and s
(G·H + 1 per row) are stored once by the time-parallel map.
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


def _along(v, x):
    """A (H,) vector shaped to broadcast along the last axis of x, whatever x's rank."""
    return v.reshape((1,) * (x.ndim - 1) + v.shape)


def layer_norm(x, gain, bias):
    """LN over the units of all blocks of x together: (y, x̂, s), each block (B, H)."""
    n = sum(b.shape[-1] for b in x)
    mu = sum(b.sum(-1, keepdims=True) for b in x) / n
    centred = tuple(b - mu for b in x)
    s = lax.rsqrt(sum((c * c).sum(-1, keepdims=True) for c in centred) / n + EPS)
    x_hat = tuple(c * s for c in centred)
    G = len(x)
    y = tuple(xh * _along(g, xh) + _along(b, xh)
              for xh, g, b in zip(x_hat, _blocks(gain, G), _blocks(bias, G)))
    return y, x_hat, s


def layer_norm_vjp(dy, x_hat, s, gain):
    """(dx, dγ, dβ) for :func:`layer_norm`, over blocks; dγ and dβ summed over every row
    (blocks (B, H) of one step, or (T, B, H) of all steps)."""
    G = len(dy)
    n = sum(b.shape[-1] for b in dy)
    d_hat = tuple(d * _along(g, d) for d, g in zip(dy, _blocks(gain, G)))
    mean_d = sum(d.sum(-1, keepdims=True) for d in d_hat) / n
    mean_dx = sum((d * x).sum(-1, keepdims=True) for d, x in zip(d_hat, x_hat)) / n
    dx = tuple(s * (d - mean_d - x * mean_dx) for d, x in zip(d_hat, x_hat))
    cat = lambda parts: parts[0] if G == 1 else jnp.concatenate(parts)
    rows = tuple(range(dy[0].ndim - 1))
    d_gain = cat(tuple((d * x).sum(rows) for d, x in zip(dy, x_hat)))
    d_bias = cat(tuple(d.sum(rows) for d in dy))
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


# -- LN_x: the driver's time-parallel ``prepare`` (it reads A_t alone) ------------------------

def prepare(A, params):
    """LN_x over all rows at once (before the loop): (LN_x(A), (x̂, s))."""
    y_x, x_hat, s = layer_norm(A, params.x_gain, params.x_bias)
    return y_x, (x_hat, s)


def prepare_vjp(dy_x, saved, params):
    """dA and the gradients of LN_x's gain and bias, over all rows at once (after the scan)."""
    x_hat, s = saved
    dA, d_gain, d_bias = layer_norm_vjp(dy_x, x_hat, s, params.x_gain)
    zero = lambda a: None if a is None else jnp.zeros_like(a)
    return dA, LayerNormParams(d_gain, d_bias, *map(zero, params[2:]))


def _step_grads(params, d_gain_r, d_bias_r, c_grads=(None, None)):
    """A step's share of the parameters' gradient: LN_r's (and LN_c's); LN_x's is prepare_vjp's."""
    return LayerNormParams(jnp.zeros_like(params.x_gain), jnp.zeros_like(params.x_bias),
                           d_gain_r, d_bias_r, *c_grads)


# -- tanh -----------------------------------------------------------------------------------

def elman_step(A, R, carry, params):
    y_r, xh_r, s_r = layer_norm(R, params.r_gain, params.r_bias)
    return (jnp.tanh(A[0] + y_r[0]),), (xh_r, s_r)


def elman_step_vjp(carry_in, carry, saved, dcarry, params):
    (h,), (dh,) = carry, dcarry
    da = dh * ((1 - h) * (1 + h))
    dR, dgr, dbr = layer_norm_vjp((da,), *saved, params.r_gain)
    return (da,), dR, (jnp.zeros_like(dh),), _step_grads(params, dgr, dbr)


# -- LSTM -----------------------------------------------------------------------------------

def lstm_step(A, R, carry, params):
    _, c_prev = carry
    y_r, xh_r, s_r = layer_norm(R, params.r_gain, params.r_bias)
    z_i, z_f, z_g, z_o = (a + r for a, r in zip(A, y_r))
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    c = f * c_prev + i * g
    (c_norm,), c_hat, c_s = layer_norm((c,), params.c_gain, params.c_bias)
    h = o * jnp.tanh(c_norm)
    return (h, c), ((i, f, g, o), (xh_r, s_r), (c_hat, c_s))


def lstm_step_vjp(carry_in, carry, extra, dcarry, params):
    _, c_prev = carry_in
    (i, f, g, o), saved, ((c_hat,), c_s) = extra
    dh, dc = dcarry
    tanh_c = jnp.tanh(c_hat * params.c_gain[None] + params.c_bias[None])
    d_norm = dh * o * ((1 - tanh_c) * (1 + tanh_c))
    (dc_ln,), dgc, dbc = layer_norm_vjp((d_norm,), (c_hat,), c_s, params.c_gain)
    dc = dc + dc_ln
    dz = (dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * ((1 - g) * (1 + g)),
          dh * tanh_c * o * (1 - o))
    dR, dgr, dbr = layer_norm_vjp(dz, *saved, params.r_gain)
    return dz, dR, (jnp.zeros_like(carry_in[0]), dc * f), _step_grads(params, dgr, dbr,
                                                                         (dgc, dbc))


# -- GRU ------------------------------------------------------------------------------------

def gru_step(A, R, carry, params):
    y_r, xh_r, s_r = layer_norm(R, params.r_gain, params.r_bias)
    (h,), extra = _gru.step(A, y_r, carry)
    return (h,), (extra, (xh_r, s_r))


def gru_step_vjp(carry_in, carry, extra, dcarry, params):
    gru_extra, saved = extra
    dy_x, dy_r, d_in, _ = _gru.step_vjp(carry_in, carry, gru_extra, dcarry)
    dR, dgr, dbr = layer_norm_vjp(dy_r, *saved, params.r_gain)
    return dy_x, dR, d_in, _step_grads(params, dgr, dbr)


ELMAN = register(Cell(name="layernorm_elman", gates=1, carry_size=1, step=elman_step,
                      step_vjp=elman_step_vjp, to_carry=lambda h: (h,),
                      from_carry=lambda carry: carry[0], init_params=_init(1, False),
                      default_bias=False, prepare=prepare, prepare_vjp=prepare_vjp))
LSTM = register(Cell(name="layernorm_lstm", gates=4, carry_size=2, step=lstm_step,
                     step_vjp=lstm_step_vjp, to_carry=lambda state: (state[0], state[1]),
                     from_carry=lambda carry: _lstm.LSTMState(*carry),
                     init_params=_init(4, True), default_bias=False, projectable=True,
                     prepare=prepare, prepare_vjp=prepare_vjp))
GRU = register(Cell(name="layernorm_gru", gates=3, carry_size=1, step=gru_step,
                    step_vjp=gru_step_vjp, to_carry=lambda h: (h,),
                    from_carry=lambda carry: carry[0], init_params=_init(3, False),
                    default_bias=False, prepare=prepare, prepare_vjp=prepare_vjp))
