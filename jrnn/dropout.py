r"""Regularisation of recurrent stacks: dropout in its recurrent forms, DropConnect, zoneout.

A :class:`Dropout` names a probability for each kind of noise; :func:`layer_noise`
draws, for one direction of one layer, every mask from an explicit PRNG key,
outside the hand-written backward, so that the backward replays exactly the
forward's masks (and a test can pass fixed ones). ``training=False`` applies no
noise at all, except zoneout, which uses its expectation. With inverted dropout
every kept unit is scaled by 1/(1 − p) in training, so evaluation needs no
rescaling.

=================  ============================================  ===================  ==========
option             what is dropped                               mask                 memory
=================  ============================================  ===================  ==========
``input``          a layer's input features (Gal & Ghahramani    (B, D) per sequence  B·D
                   2016, "variational" dropout)
``recurrent``      h_{t−1} where it feeds W (Gal & Ghahramani    (B, H) per sequence  B·H
                   2016)
``weight``         entries of W (DropConnect: Wan et al. 2013;   (G·H, H) per call    G·H·H
                   AWD-LSTM: Merity et al. 2017)
``zoneout``        the update of each unit of h (and of c for    (T, B, H) per step   T·B·H per
                   the LSTM, ``zoneout_cell``): the unit keeps                        carry
                   its previous value (Krueger et al. 2017)
``between``        the outputs of every layer but the last,      (T, B, H) per step   T·B·H
                   fresh per step and unit, as PyTorch's
                   ``dropout=`` of ``nn.RNN/LSTM/GRU``
=================  ============================================  ===================  ==========

The sLSTM's cell state is (c, n, m): zoneout keeps the three together, with one mask
(``zoneout_cell``), so that c / n and the stabiliser keep their meaning. With an LSTM
projection (``proj_size`` P, LSTMP of Sak et al. 2014) h is P wide and c H wide: zoneout
keeps units of the projected h (a (T, B, P) mask) and of c (a (T, B, H) mask).

Linear cells (:mod:`jrnn.linear`: minGRU, minLSTM) take the two kinds that act outside
the recurrence, ``input`` and ``between``, exactly as the classic cells do.
:func:`check_cell` refuses the rest for them, by name: recurrent dropout and DropConnect
act on the recurrent matrix W and its input h_{t−1}, and a linear cell has no W (its
a_t, b_t come from x_t alone); zoneout would keep the linear form (a' = k + (1 − k) a,
b' = (1 − k) b for a kept-unit mask k) but the linear driver does not implement it.

The recurrent mask and zoneout act inside the recurrence, so the driver
(:func:`jrnn.rnn`, arguments ``recurrent_mask`` and ``zoneout``) applies them and
differentiates through them by hand:

.. math::

    R_t = (h_{t-1} \odot m)\,W^\top, \qquad
    \frac{\partial J}{\partial h_{t-1}} \mathrel{+}= (dR_t\, W) \odot m, \qquad
    dW = \sum_t dR_t^\top (h_{t-1} \odot m)

    \text{carry}_t = k_t \odot \text{carry}_{t-1} + (1 - k_t) \odot \tilde c_t, \qquad
    d\tilde c_t = (1 - k_t) \odot \delta_t, \qquad
    \frac{\partial J}{\partial \text{carry}_{t-1}} \mathrel{+}= k_t \odot \delta_t

where :math:`\tilde c_t` is the cell's own output. Input, weight and
between-layer dropout multiply arrays outside the recurrence (x ⊙ m, W ⊙ M,
y ⊙ m), where the product rule is all the backward needs.

The per-step masks (zoneout, between layers: T·B·H units a call) are drawn
two units per 32-bit random word, so their probability is p rounded to a
multiple of 2⁻¹⁶ (:func:`quantised`; off by at most 7.6·10⁻⁶), and the words
come from a counter-based hash seeded by the key (MurmurHash3's finaliser over a
counter; Salmon et al. 2011 for counter-based generators), much cheaper than
threefry; the per-sequence and per-call masks use ``jax.random.bernoulli`` with
p exactly.
Zoneout's masks reach the driver as boolean arrays (True: the unit keeps its value), one
byte a unit rather than four: they are part of the training step's temporary memory,
which the CPU pays for per byte (a fresh allocation above glibc's 32 MiB mmap threshold
faults on every page at every call).
Evaluation uses p as given.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

__all__ = ["Dropout", "check", "check_cell", "layer_noise", "between_layers", "zoneout_rates", "quantised"]


class Dropout(NamedTuple):
    """Probabilities of each kind of noise, each in [0, 1); 0 turns it off."""

    input: float = 0.0
    recurrent: float = 0.0
    weight: float = 0.0
    zoneout: float = 0.0
    zoneout_cell: Optional[float] = None  # the LSTM's c (sLSTM: c, n, m); None: ``zoneout``
    between: float = 0.0


def check(dropout: Dropout, key, training: bool) -> None:
    """Probabilities in [0, 1), and a key whenever training draws a mask."""
    if not isinstance(dropout, Dropout):
        raise TypeError(f"dropout: expected jrnn.dropout.Dropout, got {type(dropout).__name__}")
    for name, p in dropout._asdict().items():
        if p is None and name == "zoneout_cell":
            continue
        if not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"dropout.{name}: expected a probability in [0, 1), got {p!r}")
    if not isinstance(training, bool):
        raise TypeError(f"training: expected True or False, got {training!r}")
    active = any(p for p in dropout._asdict().values())
    if training and active and key is None:
        raise ValueError("key: training with dropout draws random masks and needs a PRNG key "
                         "(jax.random.key(...)); pass training=False to evaluate")


# What a linear cell refuses, and why (module doc).
_LINEAR_REFUSED = {
    "recurrent": "recurrent dropout acts on h_{t-1} where it feeds the recurrent matrix W, "
                 "and a linear cell has none (a_t, b_t come from x_t alone)",
    "weight": "weight drop (DropConnect) drops entries of the recurrent matrix W, and a "
              "linear cell has none (a_t, b_t come from x_t alone)",
    "zoneout": "zoneout is not implemented by the linear driver (jrnn.linear)",
    "zoneout_cell": "zoneout is not implemented by the linear driver (jrnn.linear)",
}


def check_cell(dropout: Dropout, cell) -> None:
    """Refuses, by name and with the reason, a kind of noise that ``cell`` cannot take:
    a linear cell (``cell.driver == "linear"``) takes only ``input`` and ``between``."""
    if getattr(cell, "driver", "recurrence") != "linear":
        return
    for name, why in _LINEAR_REFUSED.items():
        if getattr(dropout, name):
            raise ValueError(f"dropout.{name}: the linear cell {cell.name!r} takes input "
                             f"and between-layer dropout only: {why}; got "
                             f"{getattr(dropout, name)!r}")


def _keep(key, p: float, shape, dtype):
    """Inverted-dropout mask: 1/(1 − p) with probability 1 − p, else 0."""
    return jax.random.bernoulli(key, 1.0 - p, shape).astype(dtype) / jnp.asarray(1.0 - p, dtype)


QUANTUM = 2 ** 16  # per-step masks draw each unit's probability in steps of 1/QUANTUM


def quantised(p: float) -> float:
    """The probability a per-step mask really uses: p rounded to a multiple of 2⁻¹⁶."""
    return round(p * QUANTUM) / QUANTUM


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser (Appleby 2011): a bijection of uint32 with full
    avalanche (each input bit flips each output bit with probability about 1/2)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _hashed_words(key, n: int):
    """n pseudo-random uint32 words from a counter-based generator seeded by ``key``.

    Word j is fmix32(fmix32(j·φ + s₀) ⊕ s₁), with s₀, s₁ two words of JAX's threefry
    generator drawn from ``key`` and φ = 0x9E3779B1 (a Weyl sequence over the counter):
    a counter-based generator in the sense of Salmon et al. (2011), "Parallel random
    numbers: as easy as 1, 2, 3", with a cheaper bijection than threefry's 20 rounds.
    """
    if n >= 2 ** 32:
        raise ValueError(f"zoneout/between-layer masks: expected fewer than 2**32 random "
                         f"words per call, got {n}")
    seed = jax.random.bits(key, (2,), jnp.uint32)
    counter = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1) + seed[0]
    return _fmix32(_fmix32(counter) ^ seed[1])


def _per_step_bernoulli(key, p: float, shape):
    """True with probability :func:`quantised` (p), for the large per-step masks.

    Each 32-bit random word gives two units (its 16-bit halves, compared with
    p·2¹⁶), and the words come from a counter-based hash seeded by the key
    (:func:`_hashed_words`) rather than from ``jax.random.bits``: at S, both LSTM
    masks in 0.8 ms against 4.8 ms with threefry words (benchmarks/NOTES.md).
    The price is the quantisation: |quantised(p) − p| ≤ 2⁻¹⁷.
    """
    n = math.prod(shape)
    words = _hashed_words(key, (n + 1) // 2)
    halves = jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(-1)[:n]
    return (halves < round(p * QUANTUM)).reshape(shape)


def _per_step_keep(key, p: float, shape, dtype):
    """Inverted dropout for per-step masks: 1/(1 − q) with probability 1 − q, q = quantised(p)."""
    q = quantised(p)
    return (~_per_step_bernoulli(key, p, shape)).astype(dtype) / jnp.asarray(1.0 - q, dtype)


class LayerNoise(NamedTuple):
    """What one direction of one layer gets: see :func:`layer_noise`."""

    input_mask: Optional[jax.Array]      # (B, D)
    weight_mask: Optional[jax.Array]     # (G·H, H)
    recurrent_mask: Optional[jax.Array]  # (B, H)
    zoneout: Optional[object]            # jrnn.rnn's ``zoneout`` argument


def layer_noise(dropout: Dropout, key, training: bool, *, cell, num_steps: int,
                batch_shape: tuple, input_size: int, W, hidden_size=None,
                cell_size=None) -> LayerNoise:
    """Every mask for one direction of one layer, drawn from ``key``.

    ``hidden_size`` is the width of h (the layer's ``output_size``: P with a
    projection; default W.shape[1]), ``cell_size`` that of every other carry entry
    (the LSTM's c: H; default ``hidden_size``): with a projection, zoneout's mask of
    h is P wide and that of c H wide. In evaluation nothing is drawn: zoneout
    becomes its expectation (probabilities passed to :func:`jrnn.rnn`) and the
    rest is off.
    """
    H, dtype = W.shape[1] if hidden_size is None else hidden_size, W.dtype
    C = H if cell_size is None else cell_size
    z = zoneout_rates(dropout, cell)
    if not training:
        return LayerNoise(None, None, None, z if any(z) else None)
    k_in, k_w, k_r, k_z = jax.random.split(key, 4)
    batch = tuple(batch_shape)
    input_mask = _keep(k_in, dropout.input, batch + (input_size,), dtype) if dropout.input \
        else None
    weight_mask = _keep(k_w, dropout.weight, W.shape, dtype) if dropout.weight else None
    recurrent_mask = _keep(k_r, dropout.recurrent, batch + (H,), dtype) if dropout.recurrent \
        else None
    zoneout = None
    if any(z):
        shapes = ((num_steps,) + batch + (H,), (num_steps,) + batch + (C,))
        # h, then every other carry entry (the LSTM's c; the sLSTM's c, n and m, zoned out
        # together: one mask for the whole cell state, so that c / n keeps its meaning)
        # boolean (one byte a unit, not four): the stored masks are part of the training
        # step's temporary buffer, which the CPU pays per byte (benchmarks/NOTES.md)
        drawn = tuple(_per_step_bernoulli(k, p, shape)
                      for k, p, shape in zip(jax.random.split(k_z, min(len(z), 2)), z, shapes))
        zoneout = drawn + drawn[1:] * (len(z) - 2)
    return LayerNoise(input_mask, weight_mask, recurrent_mask, zoneout)


def zoneout_rates(dropout: Dropout, cell) -> tuple:
    """The zoneout probability of each carry entry of ``cell``: h, then every other entry
    (the LSTM's c; the sLSTM's c, n and m) at ``zoneout_cell``."""
    return (dropout.zoneout,) + (dropout.zoneout if dropout.zoneout_cell is None else
                                 dropout.zoneout_cell,) * (cell.carry_size - 1)


def between_layers(dropout: Dropout, key, training: bool, outputs):
    """PyTorch's ``dropout=``: outputs (T, B, F) of a layer below the top one."""
    if not training or not dropout.between:
        return outputs
    return outputs * _per_step_keep(key, dropout.between, outputs.shape, outputs.dtype)
