r"""Many-to-many with T_x ≠ T_y (Deep Learning §10.4): an encoder-decoder.

The encoder reads xs (T_x, B, D); its final states (per layer, the two
directions summed if it is bidirectional) are the decoder's initial states.
The decoder reads the previous target token, starting from a start symbol
(index ``vocab_size`` of a one-hot of size vocab_size + 1):

.. math::

    s_0^{(l)} = h^{(l)}_{f,\text{last}} (+ h^{(l)}_{b,\text{first}}), \quad
    s_t = \mathrm{cell}(s_{t-1}, \mathrm{onehot}(y_{t-1})), \quad
    J = \sum_t -\log \mathrm{softmax}(c + V s_t)[y_t]

Both run with the hand-written BPTT; the decoder's initial-state cotangent
flows back into the encoder through the final-state output of its layers.

>>> import jax, jax.numpy as jnp
>>> from jrnn.models import seq2seq
>>> p = seq2seq.init(jax.random.key(0), "elman", input_size=10, hidden_size=16, vocab_size=10)
>>> xs = jax.nn.one_hot(jnp.array([[1, 2], [3, 4], [5, 6]]), 10)   # T_x = 3, B = 2
>>> seq2seq.decode(p, xs, length=4).shape
(4, 2)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, heads, layers, recurrence
from jrnn.models import _common

__all__ = ["Params", "init", "encode", "decoder_inputs", "loss", "decode"]


class Params(NamedTuple):
    encoder: layers.Stack   # 1 or 2 directions
    decoder: layers.Stack   # unidirectional, same depth and H; input size vocab + 1
    head: heads.Head        # V (vocab, H), c (vocab,)


def init(key, cell: str, input_size: int, hidden_size: int, vocab_size: int, *,
         num_layers: int = 1, bidirectional_encoder: bool = False,
         dtype=jnp.float32, **layer_options) -> Params:
    key = _common.check_init(key, input_size=input_size, hidden_size=hidden_size,
                             vocab_size=vocab_size)
    k_enc, k_dec, k_head = jax.random.split(key, 3)
    options = dict(num_layers=num_layers, dtype=dtype, **layer_options)
    decoder = layers.init_stack(k_dec, cell, vocab_size + 1, hidden_size, **options)
    return Params(
        layers.init_stack(k_enc, cell, input_size, hidden_size,
                          bidirectional=bidirectional_encoder, **options),
        decoder, heads.init_head(k_head, layers.output_size(decoder), vocab_size, dtype))


def encode(params: Params, xs, *, lengths=None, unroll: Optional[int] = None,
           matmul_dtype=None, backward: str = "manual", kernel: str = "auto", dropout=None,
           key=None, training: bool = False):
    """The decoder's initial states: per layer, the encoder's final states summed
    over directions. ``kernel``, ``dropout``, ``key``, ``training``: see :func:`loss`."""
    if len(params.encoder) != len(params.decoder):
        raise ValueError(f"params: encoder and decoder need the same number of layers, got "
                         f"{len(params.encoder)} and {len(params.decoder)}")
    (xs,) = _checks.arrays(xs=xs)
    _checks.rank("xs", xs, (3,), "(T_x, B, D)")
    if lengths is not None:  # named as the caller knows it
        lengths = recurrence.check_lengths(lengths, xs.shape[0], xs.shape[1:2], "x_lengths")
    _, finals = layers.run_stack(params.encoder, xs, lengths=lengths, unroll=unroll,
                                 matmul_dtype=matmul_dtype, backward=backward, kernel=kernel,
                                 dropout=dropout, key=key, training=training)
    summed = [jax.tree.map(lambda *parts: sum(parts), *directions) for directions in finals]
    return tuple((state,) for state in summed)


def decoder_inputs(ys, vocab_size: int, dtype):
    """One-hot of [start, y_0, ..., y_{T−2}], size vocab_size + 1: teacher forcing."""
    start = jnp.full(ys.shape[1:], vocab_size, ys.dtype)
    previous = jnp.concatenate([start[None], ys[:-1]], axis=0)
    return jax.nn.one_hot(previous, vocab_size + 1, dtype=dtype)


def loss(params: Params, xs, ys, *, x_lengths=None, y_lengths=None, reduction: str = "sum",
         unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
         kernel: str = "auto", dropout=None, key=None, training: bool = False):
    """Teacher-forced NLL of targets ys (T_y, B) given inputs xs (T_x, B, D).

    ``kernel``: the stacks' loops (:func:`jrnn.layers.run_stack`); ``"native"`` runs both
    stacks' loops and the softmax head each as a C++ call on the CPU (:mod:`jrnn.native`,
    :mod:`jrnn.native_head`), and refuses lengths, as the native loops take no mask.

    ``dropout``, ``key``, ``training``: regularisation of both stacks (see
    :mod:`jrnn.dropout`); the encoder draws its masks from ``fold_in(key, 0)``,
    the decoder from ``fold_in(key, 1)``.
    """
    _common.check_reduction(reduction)
    xs, ys = _checks.arrays(xs=xs, ys=ys)
    _checks.rank("xs", xs, (3,), "(T_x, B, D)")
    _checks.rank("ys", ys, (2,), "(T_y, B)")
    if ys.shape[0] == 0:
        _checks.fail_shape("ys", f"(T_y, {xs.shape[1]}) with T_y >= 1", ys.shape)
    vocab = params.head.V.shape[0]
    valid = _common.valid_steps(ys.shape, None, y_lengths, "y_lengths")
    _common.check_tokens("ys", ys, (ys.shape[0], xs.shape[1]), vocab, valid)
    keys = (None, None) if key is None else (jax.random.fold_in(key, 0),
                                             jax.random.fold_in(key, 1))
    states = encode(params, xs, lengths=x_lengths, unroll=unroll, matmul_dtype=matmul_dtype,
                    backward=backward, kernel=kernel, dropout=dropout, key=keys[0],
                    training=training)
    outputs, _ = layers.run_stack(params.decoder, decoder_inputs(ys, vocab, xs.dtype), states,
                                  mask=valid, unroll=unroll, matmul_dtype=matmul_dtype,
                                  backward=backward, kernel=kernel, dropout=dropout,
                                  key=keys[1], training=training)
    J = heads.softmax_nll(params.head.V, params.head.c, outputs, ys, valid,
                          matmul_dtype=matmul_dtype, backward=backward,
                          kernel="native" if kernel == "native" else "auto")
    return _common.reduce(J, ys.size if valid is None else valid.sum(), reduction)


def decode(params: Params, xs, length: int, *, x_lengths=None, key=None,
           temperature: float = 0.0, dropout=None, kernel: str = "auto"):
    """(length, B) output tokens, each fed back; greedy unless ``temperature`` > 0.

    ``dropout``: the model's regularisation, applied as in evaluation. ``kernel``: the
    decoder loop's implementation (:func:`jrnn.models.tagger.sample`)."""
    vocab = params.head.V.shape[0]
    (xs,) = _checks.arrays(xs=xs)
    states = encode(params, xs, lengths=x_lengths, dropout=dropout)
    start = jnp.full(xs.shape[1:2], vocab)
    embed = lambda token: jax.nn.one_hot(token, vocab + 1, dtype=xs.dtype)
    states = tuple(s for (s,) in states)
    return _common.autoregress(params.decoder, params.head, states, embed(start), embed, key,
                               length, temperature, dropout, kernel)
