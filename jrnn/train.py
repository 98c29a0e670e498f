"""Training with optax: a pure, jit-compiled step and truncated BPTT.

A loss function here is ``loss_fn(params, batch) -> (loss, aux)``; the step
differentiates it (through jrnn's hand-written backward, when the loss is
built from jrnn's functions), clips, and applies the optax update:

>>> import jax, jax.numpy as jnp, jrnn
>>> p = jrnn.elman.init(jax.random.key(0), 3, 8, 3)
>>> opt = jrnn.train.adam(1e-2)
>>> step = jrnn.train.make_train_step(
...     lambda p, batch: (jrnn.elman.loss(p, *batch, reduction="mean"), None), opt)
>>> xs, ys = jnp.ones((5, 2, 3)), jnp.zeros((5, 2), jnp.int32)
>>> p, opt_state, _, metrics = step(p, opt.init(p), (xs, ys))
>>> bool(metrics.finite)
True

A step whose loss or gradients hold NaN or Inf changes nothing: parameters
and optimizer state come back as they went in, and ``metrics.finite`` is
False so that the caller can stop and say at which step.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["StepMetrics", "adam", "make_train_step", "make_tbptt_step", "tbptt_value_and_grad",
           "chunks",
           "all_finite", "global_norm"]


class StepMetrics(NamedTuple):
    loss: jax.Array       # the loss of this step's batch, before the update
    grad_norm: jax.Array  # global L2 norm of the gradients, before clipping
    finite: jax.Array     # bool: loss and every gradient finite (else no update)


def adam(learning_rate: "float | optax.Schedule" = 2e-3,
         clip_norm: float = 5.0) -> optax.GradientTransformation:
    """The default optimizer: ``clip_by_global_norm(clip_norm)`` then Adam.

    ``learning_rate`` is a number or an optax schedule (a function of the step).
    """
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


def all_finite(tree) -> jax.Array:
    """True when every leaf of ``tree`` is free of NaN and Inf."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def global_norm(tree) -> jax.Array:
    """sqrt(Σ x²) over every entry of every leaf."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make_train_step(loss_fn: Callable[[Any, Any], tuple[jax.Array, Any]],
                    optimizer: optax.GradientTransformation, *, jit: bool = True):
    """Returns ``train_step(params, opt_state, batch) -> (params, opt_state, aux, metrics)``.

    The step is pure: the same inputs give the same outputs, and nothing is
    held between calls. A non-finite loss or gradient skips the update.
    """

    def train_step(params, opt_state, batch):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        finite = jnp.isfinite(loss) & all_finite(grads)
        # optax mixes int32 step counts with floats, which strict promotion refuses.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        metrics = StepMetrics(loss, global_norm(grads), finite)
        return keep(new_params, params), keep(new_opt_state, opt_state), aux, metrics

    return jax.jit(train_step) if jit else train_step


def make_tbptt_step(loss_and_state_fn: Callable[..., tuple[jax.Array, Any]],
                    optimizer: optax.GradientTransformation, *, jit: bool = True):
    """A train step for truncated BPTT over chunks of a long stream.

    ``loss_and_state_fn(params, xs, ys, h0) -> (loss, h_T)``, for instance
    ``functools.partial(jrnn.elman.loss_and_state, reduction="mean")``.
    Returns ``step(params, opt_state, h, xs, ys, key=None) -> (params, opt_state, h_T,
    metrics)``. The state ``h_T`` feeds the next chunk as a plain input, so no
    gradient crosses a chunk boundary (min-char-rnn's ``hprev``).

    A regularised model (:mod:`jrnn.dropout`) needs fresh masks for every
    chunk: pass each step its own PRNG ``key``, which goes on to
    ``loss_and_state_fn(params, xs, ys, h0, key=key)``. Derive it from the
    step number, e.g. ``jax.random.fold_in(run_key, step)``, so that a run
    resumed from a checkpoint draws exactly the masks of an uninterrupted one.
    """
    def loss_fn(p, batch):
        h, xs, ys, key = batch
        if key is None:
            return loss_and_state_fn(p, xs, ys, h)
        return loss_and_state_fn(p, xs, ys, h, key=key)

    inner = make_train_step(loss_fn, optimizer, jit=False)

    def step(params, opt_state, h, xs, ys, key=None):
        params, opt_state, h_T, metrics = inner(params, opt_state, (h, xs, ys, key))
        h_T = jax.tree.map(lambda new, old: jnp.where(metrics.finite, new, old), h_T, h)
        return params, opt_state, jax.lax.stop_gradient(h_T), metrics

    return jax.jit(step) if jit else step


def tbptt_value_and_grad(loss_and_state_fn: Callable[..., tuple[jax.Array, Any]], params,
                         xs, ys, h0, chunk: int, key=None):
    """Loss and gradient of a long stream by truncated BPTT, without updating.

    The stream (T, B, ...) runs in consecutive chunks of ``chunk`` steps; the
    final state of each chunk starts the next one, with no gradient across the
    boundary. Returns ``(Σ chunk losses, Σ chunk gradients, final state)``:
    what a per-chunk loop would accumulate, computed in one ``lax.scan`` over
    the chunks, so memory grows with ``chunk``, not with T.

    ``loss_and_state_fn(params, xs, ys, h0) -> (loss, h_T)``, e.g.
    :func:`jrnn.elman.loss_and_state`. With a PRNG ``key`` (a regularised
    model), chunk i is called as ``loss_and_state_fn(params, xs_i, ys_i, h, key=k_i)``
    with ``k_i = jax.random.fold_in(key, i)``: fresh masks for every chunk, the
    same ones as :func:`make_tbptt_step` given ``fold_in(key, i)`` at step i.
    """
    if chunk < 1:
        raise ValueError(f"chunk: expected a chunk length >= 1, got {chunk}")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"ys: expected {xs.shape[0]} steps like xs, got {ys.shape[0]}")
    if key is None:
        fn = lambda p, xs, ys, h, i: loss_and_state_fn(p, xs, ys, h)
    else:
        fn = lambda p, xs, ys, h, i: loss_and_state_fn(p, xs, ys, h,
                                                       key=jax.random.fold_in(key, i))
    grad_fn = jax.value_and_grad(fn, has_aux=True)

    def one_chunk(carry, piece):
        h, total, grads = carry
        (J, h_next), g = grad_fn(params, piece[0], piece[1], h, piece[2])
        return (jax.lax.stop_gradient(h_next), total + J, jax.tree.map(jnp.add, grads, g)), None

    T, n = xs.shape[0], xs.shape[0] // chunk
    split = lambda a: a[:n * chunk].reshape((n, chunk) + a.shape[1:])
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    loss_dtype = jax.eval_shape(fn, params, xs[:chunk], ys[:chunk], h0, 0)[0].dtype
    carry = (h0, jnp.zeros((), loss_dtype), zero_grads)
    if n:
        carry, _ = jax.lax.scan(one_chunk, carry, (split(xs), split(ys), jnp.arange(n)))
    if T > n * chunk:  # the shorter last chunk
        carry, _ = one_chunk(carry, (xs[n * chunk:], ys[n * chunk:], n))
    h, total, grads = carry
    return total, grads, h


def chunks(xs, ys, length: int) -> Iterator[tuple[Any, Any]]:
    """Consecutive (length, ...) slices of a time-major stream; the last may be shorter."""
    if length < 1:
        raise ValueError(f"length: expected a chunk length >= 1, got {length}")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"ys: expected {xs.shape[0]} steps like xs, got {ys.shape[0]}")
    for start in range(0, xs.shape[0], length):
        yield xs[start:start + length], ys[start:start + length]
