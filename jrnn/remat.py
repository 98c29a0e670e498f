r"""Memory-bounded BPTT: keep every k-th state, recompute each segment backward.

Full BPTT stores, for every one of T steps, what the backward reads: the
states, the cells' residuals, the outputs and the head's ŷ − y. For very long
sequences that is the memory limit (T = 65,536, B = 8, H = 256 holds
gigabytes). :func:`segmented` cuts the sequence into segments of k steps and
stores only the state at each segment's start. Its backward walks the
segments in reverse: it recomputes a segment's forward from its stored start
state, then runs that segment's backward (jrnn's hand-written one) with the
cotangent of the segment's final state, which the later segment handed back:

.. math::

    (J_s, h_{\text{end}(s)}) &= f(\theta, x_s, y_s, h_{\text{start}(s)}) \\
    (d\theta_s, dx_s, dh_{\text{start}(s)}) &= \mathrm{vjp}_f(dJ, dh_{\text{end}(s)})
    \qquad s = S, \ldots, 1

so the gradient is full BPTT's, not a truncation: the state cotangent crosses
every boundary. Memory is O(T/k) states plus one segment's residuals, O(k);
k ≈ √T (the default) makes both O(√T) (Chen et al. 2016, "Training deep nets
with sublinear memory cost"). The price is one more forward pass.

>>> import jax, jax.numpy as jnp, jrnn
>>> p = jrnn.elman.init(jax.random.key(0), 4, 8, 4)
>>> xs, ys = jnp.ones((100, 2, 4)), jnp.zeros((100, 2), jnp.int32)
>>> loss = jrnn.remat.segmented(jrnn.elman.loss_and_state, segment=10)
>>> J, h_T = loss(p, xs, ys, jnp.zeros((2, 8)))
>>> grads = jax.grad(lambda p: loss(p, xs, ys, jnp.zeros((2, 8)))[0])(p)
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jrnn import _diagnostics

__all__ = ["segmented", "default_segment"]


def default_segment(num_steps: int) -> int:
    """⌈√T⌉: O(√T) stored states and O(√T) steps of residuals at a time."""
    return max(1, math.ceil(math.sqrt(num_steps)))


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _split(stream, k: int):
    """Leaves (T, ...) -> whole segments (n, k, ...) and the remainder (T − n·k, ...)."""
    T = jax.tree.leaves(stream)[0].shape[0]
    n = T // k
    whole = jax.tree.map(lambda a: a[:n * k].reshape((n, k) + a.shape[1:]), stream)
    rest = jax.tree.map(lambda a: a[n * k:], stream) if T > n * k else None
    return n, whole, rest


def _call(fn, params, stream, h, keys=None, index=None):
    """One segment's loss and final state; with ``keys`` (a :class:`_Keys`), the
    segment's masks come from ``fold_in(key, index)``."""
    xs, ys = stream
    if keys is None:
        return fn(params, xs, ys, h)
    return fn(params, xs, ys, h, key=jax.random.fold_in(keys.key(), index))


class _Keys(NamedTuple):
    """A PRNG key as plain data, so that it can cross the custom_vjp boundary (its
    cotangent is float0): typed keys are unwrapped, legacy uint32 keys pass as is."""

    data: jax.Array
    impl: Any = None  # static: the key's implementation, None for a legacy key

    @classmethod
    def of(cls, key):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return cls(jax.random.key_data(key), jax.random.key_impl(key))
        return cls(key)

    def key(self):
        return self.data if self.impl is None else jax.random.wrap_key_data(self.data,
                                                                            impl=self.impl)


def _forward(fn, k, params, stream, h0, keys=None, first=0):
    n, whole, rest = _split(stream, k)
    loss_dtype = jax.eval_shape(lambda p, s, h: _call(fn, p, s, h, keys, first), params,
                                jax.tree.map(lambda a: a[:k], stream), h0)[0].dtype

    def segment(carry, inputs):
        piece, index = inputs
        h, total = carry
        J, h_next = _call(fn, params, piece, h, keys, index)
        return (h_next, total + J), h  # keep the state this segment started from

    carry = (h0, jnp.zeros((), loss_dtype))
    starts = None
    if n:
        carry, starts = lax.scan(segment, carry, (whole, first + jnp.arange(n)))
    rest_start = carry[0]
    if rest is not None:
        carry, _ = segment(carry, (rest, first + n))
    h_T, total = carry
    return (total, h_T), (starts, rest_start)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 6, 7))
def _segmented(fn, k, params, stream, h0, key_data=None, impl=None, first=0):
    keys = None if key_data is None else _Keys(key_data, impl)
    return _forward(fn, k, params, stream, h0, keys, first)[0]


def _segmented_fwd(fn, k, params, stream, h0, key_data, impl, first):
    keys = None if key_data is None else _Keys(key_data, impl)
    out, (starts, rest_start) = _forward(fn, k, params, stream, h0, keys, first)
    return out, (params, stream, starts, rest_start, key_data)


def _segmented_bwd(fn, k, impl, first, residuals, cotangents):
    params, stream, starts, rest_start, key_data = residuals
    keys = None if key_data is None else _Keys(key_data, impl)
    dJ, dh = cotangents
    n, whole, rest = _split(stream, k)
    leaves, treedef = jax.tree.flatten(stream)
    floats = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]

    def segment_vjp(piece, h_start, dh_end, index):
        """Recompute one segment's forward (with the forward's masks), then run its backward."""
        piece_leaves = jax.tree.leaves(piece)

        def f(p, float_leaves, h):
            merged = list(piece_leaves)
            for i, leaf in zip(floats, float_leaves):
                merged[i] = leaf
            return _call(fn, p, jax.tree.unflatten(treedef, merged), h, keys, index)
        _, vjp = jax.vjp(f, params, [piece_leaves[i] for i in floats], h_start)
        return vjp((dJ, dh_end))

    grads = jax.tree.map(jnp.zeros_like, params)
    d_rest = None
    if rest is not None:
        grads, d_rest, dh = segment_vjp(rest, rest_start, dh, first + n)

    def back(carry, inputs):
        dh, grads = carry
        piece, h_start, index = inputs
        dp, d_floats, dh_start = segment_vjp(piece, h_start, dh, index)
        return (dh_start, jax.tree.map(jnp.add, grads, dp)), d_floats

    d_whole = None
    if n:
        (dh, grads), d_whole = lax.scan(back, (dh, grads),
                                        (whole, starts, first + jnp.arange(n)), reverse=True)

    d_leaves = [None] * len(leaves)
    for j, i in enumerate(floats):
        parts = []
        if n:
            parts.append(d_whole[j].reshape((n * k,) + d_whole[j].shape[2:]))
        if rest is not None:
            parts.append(d_rest[j])
        d_leaves[i] = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    d_key = None if key_data is None else np.zeros(key_data.shape, jax.dtypes.float0)
    return grads, jax.tree.unflatten(treedef, d_leaves), dh, d_key


_segmented.defvjp(_segmented_fwd, _segmented_bwd)


def _unwrap(fn):
    """The function under any ``functools.partial`` layers, and their keywords merged."""
    keywords = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    return fn, keywords


# Per-sequence or per-step arguments bound with functools.partial: the same
# (B,) lengths or (T, B) mask would reach every segment, which is wrong.
_UNCUTTABLE = ("mask", "lengths", "reset", "x_lengths", "y_lengths")


def _check_cuttable(loss_and_state, params) -> bool:
    """Refuses what segments cannot compute exactly; returns True for ``reduction="mean"``."""
    from jrnn import layers  # a stack's layers are only recognised here, never imported eagerly
    _, keywords = _unwrap(loss_and_state)
    bound = [name for name in _UNCUTTABLE if keywords.get(name) is not None]
    if bound:
        raise ValueError(f"loss_and_state: {bound[0]}= is bound with functools.partial, so every "
                         "segment would read the whole sequence's value; segmented BPTT "
                         "cuts only xs and ys. Run without it (pad nothing), or use full BPTT")
    if keywords.get("reverse"):
        raise ValueError("loss_and_state: reverse=True reads the sequence right to left, but "
                         "segments run left to right; segmented BPTT cannot run it")
    is_directions = lambda x: (isinstance(x, tuple) and len(x) > 0
                               and all(isinstance(d, layers.Layer) for d in x))
    for node in jax.tree.leaves(params, is_leaf=is_directions):
        if is_directions(node) and len(node) == 2:
            raise ValueError("params: a bidirectional stack's backward direction reads every "
                             "later step, so a segment cannot be computed from its start "
                             "state alone; segmented BPTT needs a unidirectional model (use "
                             "full BPTT for bidirectional ones)")
    return keywords.get("reduction") == "mean"


def segmented(loss_and_state: Callable[..., tuple[jax.Array, Any]],
              segment: Optional[int] = None) -> Callable[..., tuple[jax.Array, Any]]:
    """Wraps ``loss_and_state(params, xs, ys, h0) -> (J, h_T)`` for memory-bounded BPTT.

    The wrapped function has the same signature and values, and gradients equal
    to full BPTT's (for params, every floating leaf of xs and ys, and h0), but
    its backward keeps only one state per ``segment`` steps (default ⌈√T⌉) and
    recomputes each segment. ``xs`` and ys are time-major (pytrees of such
    arrays work too: every leaf is cut along its first axis). Works for any
    jrnn loss of this shape: :func:`jrnn.elman.loss_and_state`,
    :func:`jrnn.models.tagger.loss_and_state` (``functools.partial`` for
    options).

    * ``h0=None`` means what it means to ``loss_and_state`` (zeros, or the
      model's learned initial state): the first segment receives None.
    * ``reduction="mean"`` (bound with ``functools.partial``) gives the true
      mean over all T·B steps: the segments are summed and the sum divided by
      the number of labels, ``ys.size``.
    * ``key`` (a regularised loss, :mod:`jrnn.dropout`): segment s is called
      as ``loss_and_state(params, xs_s, ys_s, h, key=fold_in(key, s))``, so
      each segment draws its own masks, as the chunks of truncated BPTT do
      (:func:`jrnn.train.tbptt_value_and_grad`), and its backward replays
      exactly the masks of its forward. The gradient is that of this forward,
      the state cotangent crossing every boundary.
    * Refused with an error, because a segment cannot compute them from its
      start state: bidirectional stacks (the backward direction reads the
      future), ``reverse=True``, and per-sequence or per-step arguments bound
      with ``functools.partial`` (``mask``, ``lengths``, ``reset``).
    """
    def wrapped(params, xs, ys, h0, key=None):
        mean = _check_cuttable(loss_and_state, params)
        fn = functools.partial(loss_and_state, reduction="sum") if mean else loss_and_state
        lengths = {a.shape[0] for a in jax.tree.leaves((xs, ys))}
        if len(lengths) != 1:
            raise ValueError(f"xs, ys: expected one time axis length for every leaf, got "
                             f"{sorted(lengths)}")
        (T,) = lengths
        if T == 0:
            raise ValueError("xs: expected shape (T, ...) with T >= 1, got T = 0")
        k = default_segment(T) if segment is None else int(segment)
        if k < 1:
            raise ValueError(f"segment: expected >= 1, got {segment}")
        if _diagnostics.recording():
            raise ValueError("jrnn.diagnostics.gradient_flow: memory-bounded BPTT recomputes "
                             "each segment in its backward pass, so there is no single "
                             "backward scan to read; run gradient_flow on the same loss "
                             "without jrnn.remat.segmented")
        # The loss's own checks on the whole sequence (an abstract trace, no
        # computation), so that an error names the shapes the caller passed.
        keys = None if key is None else _Keys.of(key)
        jax.eval_shape(lambda p, x, y, h: _call(fn, p, (x, y), h, keys, 0), params, xs, ys, h0)
        k, count = min(k, T), jax.tree.leaves(ys)[0].size
        data, impl = (None, None) if keys is None else keys
        if h0 is None:  # the first segment starts from fn's own default state
            J, h_T = _call(fn, params, jax.tree.map(lambda a: a[:k], (xs, ys)), None, keys, 0)
            if T > k:
                J_rest, h_T = _segmented(fn, k, params,
                                         jax.tree.map(lambda a: a[k:], (xs, ys)), h_T,
                                         data, impl, 1)
                J = J + J_rest
        else:
            J, h_T = _segmented(fn, k, params, (xs, ys), h0, data, impl, 0)
        if mean:
            J = J / jnp.asarray(count, J.dtype)
        return J, h_T

    return wrapped
