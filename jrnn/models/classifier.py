r"""Many-to-one (Deep Learning §10.2): a sequence classifier on the last valid state.

.. math::

    o = c + V [h^{(L)}_{f,\text{last}}; h^{(L)}_{b,\text{first}}], \qquad
    J = \sum_{\text{batch}} -\log \mathrm{softmax}(o)[y]

The forward direction's final state is its state at each sequence's last
valid step (``lengths``); the backward direction's is its state after reading
the sequence back to t = 0. The gradient enters the hand-written BPTT through
the cotangent of the final state.

>>> import jax, jax.numpy as jnp
>>> from jrnn.models import classifier
>>> p = classifier.init(jax.random.key(0), "elman", input_size=8, hidden_size=16,
...                     num_classes=10, bidirectional=True)
>>> xs = jnp.ones((8, 4, 8))
>>> classifier.predict(p, xs, lengths=jnp.array([8, 8, 5, 2])).shape
(4,)
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, heads, layers
from jrnn.models import _common

__all__ = ["Params", "init", "features", "logits", "loss", "predict", "regression_loss"]


class Params(NamedTuple):
    rnn: layers.Stack
    head: heads.Head      # V (C, directions·H), c (C,)
    h0: Any = None        # learned initial states, or None


def init(key, cell: str, input_size: int, hidden_size: int, num_classes: int, *,
         num_layers: int = 1, bidirectional: bool = False, learn_h0: bool = False,
         dtype=jnp.float32, **layer_options) -> Params:
    key = _common.check_init(key, input_size=input_size, hidden_size=hidden_size,
                             num_classes=num_classes)
    k_rnn, k_head = jax.random.split(key)
    stack = layers.init_stack(k_rnn, cell, input_size, hidden_size, num_layers=num_layers,
                              bidirectional=bidirectional, dtype=dtype,
                              **layer_options)
    return Params(stack, heads.init_head(k_head, layers.output_size(stack), num_classes, dtype),
                  layers.zero_states(stack) if learn_h0 else None)


def features(params: Params, xs, h0=None, *, mask=None, lengths=None,
             unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
             kernel: str = "auto", dropout=None, key=None, training: bool = False):
    """(B, directions·H): the top layer's final hidden state of each direction.

    ``dropout``, ``key``, ``training``: regularisation, see :mod:`jrnn.dropout`.
    ``kernel``: the layers' loop, see :func:`jrnn.rnn` (``"native"``: each layer's loops
    as C++ calls on the CPU, :mod:`jrnn.native`).
    """
    xs, mask = _checks.arrays(xs=xs, mask=mask)
    _checks.rank("xs", xs, (2, 3), "(T, B, D) or unbatched (T, D)")
    h0 = _common.initial_states(params.rnn, params.h0, h0, xs.shape[1:-1])
    _, finals = layers.run_stack(params.rnn, xs, h0, mask=mask, lengths=lengths,
                                 unroll=unroll, matmul_dtype=matmul_dtype, backward=backward,
                                 kernel=kernel, dropout=dropout, key=key, training=training)
    top = [layers.hidden_of(part.cell, state) for part, state in zip(params.rnn[-1], finals[-1])]
    return top[0] if len(top) == 1 else jnp.concatenate(top, axis=-1)


def logits(params: Params, xs, h0=None, **options):
    return heads.logits(params.head.V, params.head.c, features(params, xs, h0, **options))


def loss(params: Params, xs, ys, h0=None, *, mask=None, lengths=None, reduction: str = "sum",
         unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
         kernel: str = "auto", dropout=None, key=None, training: bool = False):
    """NLL of one label per sequence, ys (B,), for xs (T, B, D).

    ``dropout``, ``key``, ``training``: regularisation, see :mod:`jrnn.dropout`.
    ``kernel``: the layers' loop (see :func:`features`); the head over B rows stays XLA's.
    """
    _common.check_reduction(reduction)
    xs, ys = _checks.arrays(xs=xs, ys=ys)
    _checks.rank("xs", xs, (2, 3), "(T, B, D) or unbatched (T, D)")
    _checks.integer("ys", ys)
    _checks.shape("ys", ys, xs.shape[1:-1], f"{tuple(xs.shape[1:-1])}: one label per sequence")
    feats = features(params, xs, h0, mask=mask, lengths=lengths, unroll=unroll,
                     matmul_dtype=matmul_dtype, backward=backward, kernel=kernel,
                     dropout=dropout, key=key, training=training)
    J = heads.softmax_nll(params.head.V, params.head.c, feats, ys,
                          matmul_dtype=matmul_dtype, backward=backward)
    return _common.reduce(J, ys.size, reduction)


def predict(params: Params, xs, h0=None, **options):
    """The most likely class of every sequence: (B,)."""
    return jnp.argmax(logits(params, xs, h0, **options), axis=-1)


def regression_loss(params: Params, xs, targets, h0=None, *, mask=None, lengths=None,
                    reduction: str = "sum", unroll: Optional[int] = None, matmul_dtype=None,
                    backward: str = "manual", kernel: str = "auto", dropout=None, key=None,
                    training: bool = False):
    """Many-to-one regression: Σ ‖c + V h_last − y‖² for targets (B, C).

    The same model as the classifier with a squared-error head
    (:func:`jrnn.heads.squared_error`); ``"mean"`` divides by B·C.
    """
    _common.check_reduction(reduction)
    xs, targets = _checks.arrays(xs=xs, targets=targets)
    _checks.rank("xs", xs, (2, 3), "(T, B, D) or unbatched (T, D)")
    feats = features(params, xs, h0, mask=mask, lengths=lengths, unroll=unroll,
                     matmul_dtype=matmul_dtype, backward=backward, kernel=kernel,
                     dropout=dropout, key=key, training=training)
    J = heads.squared_error(params.head.V, params.head.c, feats, targets,
                          matmul_dtype=matmul_dtype, backward=backward)
    return _common.reduce(J, targets.size, reduction)
