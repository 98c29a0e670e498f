r"""Many-to-many with T_x = T_y (Deep Learning §10.2), deep and/or bidirectional.

.. math::

    o_t = c + V [h^{(L)}_{f,t}; h^{(L)}_{b,t}], \qquad
    J = \sum_t \sum_{\text{batch}} -\log \mathrm{softmax}(o_t)[y_t]

over the valid steps. With two directions this is (in Vardhan's notation)
z_t = W_yaf a_f(t) + W_yab a_b(t) + b_y, with V = [W_yaf | W_yab]; with
``num_layers`` > 1 it is the deep RNN of Deep Learning §10.5. One layer, one
direction, and ``cell="elman"`` is the textbook model of :mod:`jrnn.elman`.

>>> import jax, jax.numpy as jnp
>>> from jrnn.models import tagger
>>> p = tagger.init(jax.random.key(0), "elman", input_size=3, hidden_size=8,
...                 output_size=4, num_layers=2, bidirectional=True)
>>> xs, ys = jnp.ones((5, 2, 3)), jnp.zeros((5, 2), jnp.int32)
>>> g = jax.grad(tagger.loss)(p, xs, ys, lengths=jnp.array([5, 3]))
>>> g.rnn[1][1].W.shape
(8, 8)
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, heads, layers
from jrnn.models import _common

__all__ = ["Params", "init", "hidden", "logits", "loss", "loss_and_state", "sample"]


class Params(NamedTuple):
    rnn: layers.Stack     # layers, each a tuple of 1 or 2 directions
    head: heads.Head      # V (C, directions·H), c (C,)
    h0: Any = None        # learned initial states nested like rnn, each (H,); or None


def init(key, cell: str, input_size: int, hidden_size: int, output_size: int, *,
         num_layers: int = 1, bidirectional: bool = False, learn_h0: bool = False,
         dtype=jnp.float32, **layer_options) -> Params:
    key = _common.check_init(key, input_size=input_size, hidden_size=hidden_size,
                             output_size=output_size)
    k_rnn, k_head = jax.random.split(key)
    stack = layers.init_stack(k_rnn, cell, input_size, hidden_size, num_layers=num_layers,
                              bidirectional=bidirectional, dtype=dtype,
                              **layer_options)
    return Params(stack, heads.init_head(k_head, layers.output_size(stack), output_size, dtype),
                  layers.zero_states(stack) if learn_h0 else None)


def hidden(params: Params, xs, h0=None, *, mask=None, lengths=None, reset=None,
           unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
           kernel: str = "auto", dropout=None, key=None, training: bool = False):
    """Top-layer outputs (T, B, directions·H) and every final state (see run_stack).

    ``dropout``, ``key``, ``training``: regularisation, see :mod:`jrnn.dropout`.
    """
    xs, mask, reset = _checks.arrays(xs=xs, mask=mask, reset=reset)
    h0 = _common.initial_states(params.rnn, params.h0, h0, xs.shape[1:-1])
    return layers.run_stack(params.rnn, xs, h0, mask=mask, lengths=lengths, reset=reset,
                            unroll=unroll, matmul_dtype=matmul_dtype, backward=backward,
                            kernel=kernel, dropout=dropout, key=key, training=training)


def logits(params: Params, xs, h0=None, **options):
    outputs, _ = hidden(params, xs, h0, **options)
    return heads.logits(params.head.V, params.head.c, outputs)


def loss_and_state(params: Params, xs, ys, h0=None, *, mask=None, lengths=None, reset=None,
                   reduction: str = "sum", unroll: Optional[int] = None, matmul_dtype=None,
                   backward: str = "manual", kernel: str = "auto", dropout=None, key=None,
                   training: bool = False):
    """``(J, finals)``: the loss and every final state, nested like ``params.rnn``.

    ``finals`` has the structure of ``h0``, so it can start the next chunk of
    a stream (truncated BPTT, :func:`jrnn.train.make_tbptt_step`).
    """
    _common.check_reduction(reduction)
    xs, ys, mask, reset = _checks.arrays(xs=xs, ys=ys, mask=mask, reset=reset)
    _checks.rank("xs", xs, (2, 3), "(T, B, D) or unbatched (T, D)")
    _checks.integer("ys", ys)
    _checks.shape("ys", ys, xs.shape[:-1], f"{tuple(xs.shape[:-1])} = xs.shape[:-1]")
    valid = _common.valid_steps(xs.shape[:-1], mask, lengths)
    outputs, finals = hidden(params, xs, h0, mask=valid, reset=reset, unroll=unroll,
                             matmul_dtype=matmul_dtype, backward=backward, kernel=kernel,
                             dropout=dropout, key=key, training=training)
    J = heads.softmax_nll(params.head.V, params.head.c, outputs, ys, valid,
                          matmul_dtype=matmul_dtype, backward=backward,
                          kernel="native" if kernel == "native" else "auto")
    return _common.reduce(J, ys.size if valid is None else valid.sum(), reduction), finals


def loss(params: Params, xs, ys, h0=None, **options):
    """Summed (or mean) NLL of ys (T, B) over the valid steps of xs (T, B, D).

    Keyword options: ``mask``, ``lengths``, ``reset``, ``reduction``
    (``"sum"`` or ``"mean"`` per valid step), ``unroll``, ``backward``, ``kernel``
    (``"native"``: the layers' loops and the softmax head each as a C++ call on the CPU,
    :mod:`jrnn.native` and :mod:`jrnn.native_head`).
    """
    return loss_and_state(params, xs, ys, h0, **options)[0]


def sample(params: Params, key, prompt, length: int, *, temperature: float = 1.0, h0=None,
           dropout=None, kernel: str = "auto"):
    """Generates ``length`` tokens after ``prompt``, each fed back as a one-hot input.

    For a unidirectional model whose inputs are its own outputs (a character
    model: input size = output size). ``prompt`` is an integer (P,) array,
    P ≥ 1; ``temperature=0`` takes the most likely token. Returns (length,)
    int32 tokens. ``dropout``: the model's regularisation, applied as in
    evaluation (zoneout's expectation; the rest is off). ``kernel``: ``"auto"`` or
    ``"scan"`` (a jitted ``lax.scan``), or ``"native"`` (one C++ call on the CPU,
    :mod:`jrnn.native_sampler`; one-layer models of the LSTM, GRU or tanh cell).
    """
    D, C = params.rnn[0][0].input_size, params.head.V.shape[0]
    if D != C:
        raise ValueError(f"params: sample feeds outputs back as inputs, so it needs input size "
                         f"== output size, got {D} and {C}")
    (prompt,) = _checks.arrays(prompt=prompt)
    _checks.integer("prompt", prompt)
    _checks.rank("prompt", prompt, (1,), "(P,) with P >= 1")
    if prompt.shape[0] < 1:
        _checks.fail_shape("prompt", "(P,) with P >= 1", prompt.shape)
    _checks.labels_in_range("prompt", prompt, C)
    dtype = params.head.V.dtype
    embed = lambda token: jax.nn.one_hot(token, D, dtype=dtype)
    states = h0 if h0 is not None else layers.zero_states(params.rnn)
    if prompt.shape[0] > 1:  # read all but the last token; the last is the first input
        _, states = hidden(params, embed(prompt[:-1]), states, dropout=dropout)
    batched = tuple(jax.tree.map(lambda a: a[None], state) for (state,) in states)
    tokens = _common.autoregress(params.rnn, params.head, batched, embed(prompt[-1:]), embed,
                                 key, length, temperature, dropout, kernel)
    return tokens[:, 0]
