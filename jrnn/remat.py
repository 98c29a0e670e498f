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
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
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


def _call(fn, params, stream, h):
    xs, ys = stream
    return fn(params, xs, ys, h)


def _forward(fn, k, params, stream, h0):
    n, whole, rest = _split(stream, k)
    loss_dtype = jax.eval_shape(functools.partial(_call, fn), params,
                                jax.tree.map(lambda a: a[:k], stream), h0)[0].dtype

    def segment(carry, piece):
        h, total = carry
        J, h_next = _call(fn, params, piece, h)
        return (h_next, total + J), h  # keep the state this segment started from

    carry = (h0, jnp.zeros((), loss_dtype))
    starts = None
    if n:
        carry, starts = lax.scan(segment, carry, whole)
    rest_start = carry[0]
    if rest is not None:
        carry, _ = segment(carry, rest)
    h_T, total = carry
    return (total, h_T), (starts, rest_start)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _segmented(fn, k, params, stream, h0):
    return _forward(fn, k, params, stream, h0)[0]


def _segmented_fwd(fn, k, params, stream, h0):
    out, (starts, rest_start) = _forward(fn, k, params, stream, h0)
    return out, (params, stream, starts, rest_start)


def _segmented_bwd(fn, k, residuals, cotangents):
    params, stream, starts, rest_start = residuals
    dJ, dh = cotangents
    n, whole, rest = _split(stream, k)
    leaves, treedef = jax.tree.flatten(stream)
    floats = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]

    def segment_vjp(piece, h_start, dh_end):
        """Recompute one segment's forward, then run its backward."""
        piece_leaves = jax.tree.leaves(piece)

        def f(p, float_leaves, h):
            merged = list(piece_leaves)
            for i, leaf in zip(floats, float_leaves):
                merged[i] = leaf
            return _call(fn, p, jax.tree.unflatten(treedef, merged), h)
        _, vjp = jax.vjp(f, params, [piece_leaves[i] for i in floats], h_start)
        return vjp((dJ, dh_end))

    grads = jax.tree.map(jnp.zeros_like, params)
    d_rest = None
    if rest is not None:
        grads, d_rest, dh = segment_vjp(rest, rest_start, dh)

    def back(carry, inputs):
        dh, grads = carry
        piece, h_start = inputs
        dp, d_floats, dh_start = segment_vjp(piece, h_start, dh)
        return (dh_start, jax.tree.map(jnp.add, grads, dp)), d_floats

    d_whole = None
    if n:
        (dh, grads), d_whole = lax.scan(back, (dh, grads), (whole, starts), reverse=True)

    d_leaves = [None] * len(leaves)
    for j, i in enumerate(floats):
        parts = []
        if n:
            parts.append(d_whole[j].reshape((n * k,) + d_whole[j].shape[2:]))
        if rest is not None:
            parts.append(d_rest[j])
        d_leaves[i] = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return grads, jax.tree.unflatten(treedef, d_leaves), dh


_segmented.defvjp(_segmented_fwd, _segmented_bwd)


def segmented(loss_and_state: Callable[..., tuple[jax.Array, Any]],
              segment: Optional[int] = None) -> Callable[..., tuple[jax.Array, Any]]:
    """Wraps ``loss_and_state(params, xs, ys, h0) -> (J, h_T)`` for memory-bounded BPTT.

    The wrapped function has the same signature and values, and gradients equal
    to full BPTT's (for params, every floating leaf of xs and ys, and h0), but
    its backward keeps only one state per ``segment`` steps (default ⌈√T⌉) and
    recomputes each segment. ``xs`` and ``ys`` are time-major (pytrees of such
    arrays work too: every leaf is cut along its first axis). Works for any
    jrnn loss of this shape: :func:`jrnn.elman.loss_and_state`,
    :func:`jrnn.models.tagger.loss_and_state` (use ``functools.partial`` for
    options such as ``reduction="sum"``; a ``"mean"`` reduction would average
    per segment).
    """
    def wrapped(params, xs, ys, h0):
        lengths = {a.shape[0] for a in jax.tree.leaves((xs, ys))}
        if len(lengths) != 1:
            raise ValueError(f"xs, ys: expected one time axis length for every leaf, got "
                             f"{sorted(lengths)}")
        (T,) = lengths
        k = default_segment(T) if segment is None else int(segment)
        if k < 1:
            raise ValueError(f"segment: expected >= 1, got {segment}")
        if _diagnostics.recording():
            raise ValueError("jrnn.diagnostics.gradient_flow: memory-bounded BPTT recomputes "
                             "each segment in its backward pass, so there is no single "
                             "backward scan to read; run gradient_flow on the same loss "
                             "without jrnn.remat.segmented")
        return _segmented(loss_and_state, min(k, T), params, (xs, ys), h0)

    return wrapped
