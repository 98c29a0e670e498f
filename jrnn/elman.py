r"""The textbook model: a tanh RNN with a softmax output and NLL loss.

In the notation of Goodfellow, Bengio and Courville, Deep Learning (2016), §10.2.2:

.. math::

    a_t &= b + W h_{t-1} + U x_t  \\
    h_t &= \tanh(a_t) \\
    o_t &= c + V h_t \\
    \hat y_t &= \mathrm{softmax}(o_t) \\
    J &= \sum_t -\log \hat y_t[y_t]

with U (H, D), W (H, H), b (H,), V (C, H), c (C,): PyTorch's layout (out, in).
Vardhan's notes (2022) write W_ax = Uᵀ, W_aa = Wᵀ, W_ya = Vᵀ, b_a = b, b_y = c; Khan's
slides (Backpropagation Through Time, CS-568) write W^0 = U, W^11 = W, W^1 = V, b^0 = b, b^1 = c (its ∇ are transposed).

``jax.grad(loss)`` runs the hand-written BPTT of :mod:`jrnn.recurrence` and the
hand-written head VJP of :mod:`jrnn.heads`; ``backward="autodiff"`` runs plain
JAX autodiff of the very same forward.

>>> import jax, jax.numpy as jnp, jrnn
>>> p = jrnn.elman.init(jax.random.key(0), input_size=4, hidden_size=5, output_size=3)
>>> xs = jax.random.normal(jax.random.key(1), (7, 4))      # one sequence, T = 7
>>> ys = jnp.array([0, 2, 1, 1, 0, 2, 2])
>>> J, grads = jax.value_and_grad(jrnn.elman.loss)(p, xs, ys)
>>> grads.W.shape
(5, 5)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, cells, heads, layers, recurrence
from jrnn.models import tagger

__all__ = ["Params", "init", "hidden", "logits", "loss", "loss_and_state", "sample"]

_CELL = cells.get("elman")
REDUCTIONS = ("sum", "mean")


class Params(NamedTuple):
    """Parameters of the textbook tanh RNN (shapes are (out, in), as in PyTorch)."""

    U: jax.Array  # (H, D) input -> hidden
    W: jax.Array  # (H, H) hidden -> hidden
    b: jax.Array  # (H,)   hidden bias
    V: jax.Array  # (C, H) hidden -> output logits
    c: jax.Array  # (C,)   output bias


def init(key, input_size: int, hidden_size: int, output_size: int,
         dtype=jnp.float32) -> Params:
    """PyTorch's default initialisation: every entry uniform in ±1/√H.

    This is ``torch.nn.RNN``'s rule for U, W, b and ``torch.nn.Linear``'s for
    V, c (whose fan-in is H), so a model converted from PyTorch starts from the
    same distribution. The bound keeps ``W h`` of order one at the start:
    each of its H terms has variance 1/(3H).
    """
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("output_size", output_size)):
        _checks.size(name, value)
    key = _checks.key("key", key)
    bound = 1.0 / float(hidden_size) ** 0.5
    shapes = {"U": (hidden_size, input_size), "W": (hidden_size, hidden_size),
              "b": (hidden_size,), "V": (output_size, hidden_size), "c": (output_size,)}
    keys = jax.random.split(key, len(shapes))
    return Params(**{name: jax.random.uniform(k, shape, dtype, -bound, bound)
                     for k, (name, shape) in zip(keys, shapes.items())})


def _check_params(p: Params) -> None:
    if not isinstance(p, Params):
        raise TypeError(f"p: expected jrnn.elman.Params, got {type(p).__name__}")
    _checks.floating("p.W", p.W)
    _checks.rank("p.W", p.W, (2,), "(H, H)")
    H = p.W.shape[1]
    _checks.shape("p.W", p.W, (H, H), f"(H, H) = ({H}, {H})")
    _checks.rank("p.U", p.U, (2,), f"({H}, D)")
    _checks.shape("p.U", p.U, (H, p.U.shape[1]), f"({H}, D)")
    _checks.shape("p.b", p.b, (H,))
    _checks.rank("p.V", p.V, (2,), f"(C, {H})")
    C = p.V.shape[0]
    _checks.shape("p.V", p.V, (C, H), f"(C, {H})")
    _checks.shape("p.c", p.c, (C,))
    for name in ("U", "b", "V", "c"):
        _checks.same_dtype(f"p.{name}", getattr(p, name), p.W.dtype, "p.W")


def hidden(p: Params, xs, h0=None, *, mask=None, reset=None, reverse: bool = False,
           unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual"):
    """All hidden states and the final one: ``(hs (T, B, H), h_T (B, H))``.

    The layer on its own, for research code that puts its own loss on top;
    ``jax.grad`` through it runs the hand-written BPTT. Options as in
    :func:`jrnn.rnn`.
    """
    _check_params(p)
    xs, mask, reset = _checks.arrays(xs=xs, mask=mask, reset=reset)
    return recurrence.rnn(_CELL, p.U, p.W, p.b, xs, h0, mask=mask, reset=reset,
                          reverse=reverse, unroll=unroll, matmul_dtype=matmul_dtype,
                          backward=backward)


def logits(p: Params, xs, h0=None, **options):
    """Output logits o_t = c + V h_t for every step: (T, B, C)."""
    hs, _ = hidden(p, xs, h0, **options)
    return heads.logits(p.V, p.c, hs)


def loss_and_state(p: Params, xs, ys, h0=None, *, mask=None, reset=None,
                   reduction: str = "sum", unroll: Optional[int] = None, matmul_dtype=None,
                   backward: str = "manual"):
    """``(J, h_T)``: the loss and the final state, for truncated BPTT.

    ``reduction="sum"`` is the textbook J; ``"mean"`` divides by the number of
    (unmasked) steps and sequences.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    _check_params(p)
    xs, ys, mask = _checks.arrays(xs=xs, ys=ys, mask=mask)
    _checks.integer("ys", ys)
    _checks.rank("xs", xs, (2, 3), f"(T, B, {p.U.shape[1]}) or unbatched (T, {p.U.shape[1]})")
    _checks.shape("ys", ys, xs.shape[:-1], f"{tuple(xs.shape[:-1])} = xs.shape[:-1]",
                  "one integer label per step and sequence")
    hs, h_T = hidden(p, xs, h0, mask=mask, reset=reset, unroll=unroll,
                     matmul_dtype=matmul_dtype, backward=backward)
    J = heads.softmax_nll(p.V, p.c, hs, ys, mask,
                          matmul_dtype=matmul_dtype, backward=backward)
    if reduction == "mean":  # per counted step; 0 when every step is masked
        count = ys.size if mask is None else mask.sum()
        J = J / jnp.maximum(jnp.asarray(count), 1).astype(J.dtype)
    return J, h_T


def loss(p: Params, xs, ys, h0=None, **options):
    """J = Σ_t Σ_batch −log ŷ_t[y_t] for xs (T, B, D), ys (T, B) (or (T, D), (T,)).

    Keyword options: ``mask``, ``reset``, ``reduction``, ``unroll``,
    ``backward`` (see :func:`loss_and_state`).
    """
    return loss_and_state(p, xs, ys, h0, **options)[0]


def sample(p: Params, key, prompt, length: int, *, temperature: float = 1.0, h0=None):
    """Generates ``length`` tokens after ``prompt``, feeding each one back.

    Inputs are one-hot tokens, so this needs D = C (a character model).
    ``prompt`` is an integer (P,) array with P ≥ 1; ``temperature=0`` takes
    the most likely token at every step. Returns the (length,) new tokens.
    """
    _check_params(p)
    D, C = p.U.shape[1], p.V.shape[0]
    if D != C:
        raise ValueError(f"p: sample feeds outputs back as inputs, so it needs input_size "
                         f"== output_size, got U {tuple(p.U.shape)} and V {tuple(p.V.shape)}")
    view = tagger.Params(((layers.Layer(p.U, p.W, p.b, None, "elman"),),), heads.Head(p.V, p.c))
    return tagger.sample(view, key, prompt, length, temperature=temperature,
                         h0=None if h0 is None else ((h0,),))
