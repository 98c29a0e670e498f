r"""One-to-many (Deep Learning §10.2.4): one input, then each output fed back.

The single input x (a context: a class, a latent, an image feature) is read
at the first step; at every later step the input is the previous output
token. Inputs are ``[x; 0]`` at t = 0 and ``[0; onehot(y_{t−1})]`` after it:

.. math::

    h_t = \mathrm{cell}(h_{t-1}, x_t), \qquad
    o_t = c + V h_t, \qquad J = \sum_t -\log \mathrm{softmax}(o_t)[y_t]

Training uses teacher forcing (the true y_{t−1} is fed back, so the whole
sequence runs as one scan with the hand-written BPTT); :func:`sample` feeds
back its own draws, one step at a time, through the same pointwise cell.

>>> import jax, jax.numpy as jnp
>>> from jrnn.models import generator
>>> p = generator.init(jax.random.key(0), "elman", context_size=3, hidden_size=8, vocab_size=5)
>>> context = jnp.ones((2, 3))
>>> generator.sample(p, jax.random.key(1), context, length=4).shape
(4, 2)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, heads, layers
from jrnn.models import _common

__all__ = ["Params", "init", "teacher_inputs", "loss", "sample"]


class Params(NamedTuple):
    rnn: layers.Stack   # unidirectional; input size context_size + vocab_size
    head: heads.Head    # V (vocab, H), c (vocab,)


def init(key, cell: str, context_size: int, hidden_size: int, vocab_size: int, *,
         num_layers: int = 1, dtype=jnp.float32, **layer_options) -> Params:
    key = _common.check_init(key, context_size=context_size, hidden_size=hidden_size,
                             vocab_size=vocab_size)
    k_rnn, k_head = jax.random.split(key)
    stack = layers.init_stack(k_rnn, cell, context_size + vocab_size, hidden_size,
                              num_layers=num_layers, dtype=dtype, **layer_options)
    return Params(stack, heads.init_head(k_head, layers.output_size(stack), vocab_size, dtype))


def _sizes(params: Params):
    vocab = params.head.V.shape[0]
    return params.rnn[0][0].input_size - vocab, vocab


def _check_context(params: Params, context):
    context = _checks.array("context", context)
    _checks.floating("context", context)
    context_size, _ = _sizes(params)
    _checks.rank("context", context, (2,), f"(B, {context_size})")
    _checks.shape("context", context, context.shape[:1] + (context_size,), f"(B, {context_size})")
    if context.shape[0] == 0:
        _checks.fail_shape("context", f"(B, {context_size}) with B >= 1", context.shape)
    _checks.same_dtype("context", context, params.head.V.dtype, "the parameters")
    return context


def teacher_inputs(context, ys, vocab_size: int):
    """(T, B, context_size + vocab): [x; 0] at t = 0, then [0; onehot(y_{t−1})]."""
    T, B = ys.shape
    first = jnp.concatenate([context, jnp.zeros((B, vocab_size), context.dtype)], -1)[None]
    rest = jnp.concatenate([jnp.zeros((T - 1, B, context.shape[-1]), context.dtype),
                            jax.nn.one_hot(ys[:-1], vocab_size, dtype=context.dtype)], -1)
    return jnp.concatenate([first, rest], axis=0)


def loss(params: Params, context, ys, *, lengths=None, reduction: str = "sum",
         unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
         kernel: str = "auto", dropout=None, key=None, training: bool = False):
    """Teacher-forced NLL of the sequences ys (T, B) given one context each (B, D).

    ``kernel``: the stack's loops (:func:`jrnn.layers.run_stack`); ``"native"`` runs them
    and the softmax head each as a C++ call on the CPU (:mod:`jrnn.native`,
    :mod:`jrnn.native_head`), and refuses lengths, as the native loops take no mask.
    ``dropout``, ``key``, ``training``: regularisation, see :mod:`jrnn.dropout`.
    """
    _common.check_reduction(reduction)
    context = _check_context(params, context)
    _, vocab = _sizes(params)
    (ys,) = _checks.arrays(ys=ys)
    _checks.rank("ys", ys, (2,), "(T, B)")
    if ys.shape[0] == 0:
        _checks.fail_shape("ys", "(T, B) with T >= 1", ys.shape)
    valid = _common.valid_steps(ys.shape, None, lengths)
    _common.check_tokens("ys", ys, (ys.shape[0], context.shape[0]), vocab, valid)
    xs = teacher_inputs(context, ys, vocab)
    outputs, _ = layers.run_stack(params.rnn, xs, mask=valid, unroll=unroll,
                                  matmul_dtype=matmul_dtype, backward=backward, kernel=kernel,
                                  dropout=dropout, key=key, training=training)
    J = heads.softmax_nll(params.head.V, params.head.c, outputs, ys, valid,
                          matmul_dtype=matmul_dtype, backward=backward,
                          kernel="native" if kernel == "native" else "auto")
    return _common.reduce(J, ys.size if valid is None else valid.sum(), reduction)


def sample(params: Params, key, context, length: int, *, temperature: float = 1.0,
           dropout=None, kernel: str = "auto"):
    """Draws (length, B) tokens, feeding each draw back as the next input.

    ``dropout``: the model's regularisation, applied as in evaluation. ``kernel``: the
    loop's implementation (:func:`jrnn.models.tagger.sample`)."""
    context = _check_context(params, context)
    context_size, vocab = _sizes(params)
    B, dtype = context.shape[0], context.dtype
    x0 = jnp.concatenate([context, jnp.zeros((B, vocab), dtype)], -1)
    embed = lambda token: jnp.concatenate(
        [jnp.zeros((B, context_size), dtype), jax.nn.one_hot(token, vocab, dtype=dtype)], -1)
    states = tuple(state for (state,) in layers.zero_states(params.rnn, (B,)))
    return _common.autoregress(params.rnn, params.head, states, x0, embed, key, length,
                               temperature, dropout, kernel)
