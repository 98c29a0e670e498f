"""Pieces the architectures share: initial states, reductions, generation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import _checks, heads, layers, recurrence

REDUCTIONS = ("sum", "mean")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")


def reduce(J, count, reduction: str):
    """``"sum"``: J as is; ``"mean"``: J per counted target (0 when nothing is counted:
    a batch whose every step is masked contributes no loss and no gradient)."""
    if reduction == "sum":
        return J
    return J / jnp.maximum(jnp.asarray(count), 1).astype(J.dtype)


def check_init(key, **sizes):
    """The key of a model's ``init`` (either kind, :func:`jrnn._checks.key`) and its
    sizes (ints >= 1), each named as the caller passed it."""
    for name, value in sizes.items():
        _checks.size(name, value)
    return _checks.key("key", key)


def valid_steps(steps_shape: tuple, mask=None, lengths=None, name: str = "lengths"):
    """One (T, B) mask from an optional mask and optional lengths (None if neither).

    ``steps_shape`` is (T, B): the shape the mask and the lengths index."""
    if lengths is None:
        return mask
    lengths = recurrence.check_lengths(lengths, steps_shape[0], steps_shape[1:], name)
    by_length = recurrence.lengths_to_mask(lengths, steps_shape[0])
    return by_length if mask is None else mask & by_length


def initial_states(stack, learned, given, batch_shape):
    """The states a run starts from: given ones, else the learned ones
    broadcast over the batch (their gradient sums over it), else None (zeros)."""
    if given is not None or learned is None:
        return given
    return jax.tree.map(lambda a: jnp.broadcast_to(a, tuple(batch_shape) + a.shape), learned)


def check_tokens(name: str, tokens, shape, vocab_size: int, mask=None) -> None:
    _checks.integer(name, tokens)
    _checks.shape(name, tokens, shape)
    _checks.labels_in_range(name, tokens, vocab_size, mask)


# The most memory the sampler's noise may take at once (bytes): above it, in chunks of steps.
NOISE_BYTES = 1 << 20


SAMPLE_KERNELS = ("auto", "scan", "native")


def scan_steps(stack, head: heads.Head, embed, temperature: float, dropout=None):
    """``run(carry, noise, n) -> (carry, tokens)``: n steps of generation in one
    ``lax.scan`` from carry ``(states, x)``; ``noise`` (n, B, C) Gumbel noise added to
    o_t / temperature before the argmax, or None (the most likely token); tokens (n, B)
    int32. The interface of :func:`jrnn.native_sampler.steps`."""
    weights = layers.step_weights(stack)  # arranged once, outside the loop
    V_t = head.V.T  # likewise the head's (C, H) weight

    def step(carry, noise):
        states, x = carry
        states, h = layers.step_stack(stack, states, x, dropout, weights)
        o = recurrence.affine_t(h, V_t, head.c)  # the head's h Vᵀ + c
        token = (jnp.argmax(o, axis=-1) if noise is None else
                 jnp.argmax(o / jnp.asarray(temperature, o.dtype) + noise, axis=-1))
        token = token.astype(jnp.int32)  # the same dtype whether greedy or sampled
        return (states, embed(token)), token

    def run(carry, noise, n: int):
        return jax.lax.scan(step, carry, noise, length=n)
    return run


def autoregress(stack, head: heads.Head, states, x0, embed, key, length: int,
                temperature: float, dropout=None, kernel: str = "auto"):
    """Generates ``length`` tokens, each fed back (through ``embed``) as the next input.

    Starts from ``states`` and first input ``x0`` (B, D); at every step the
    stack advances one step, the head gives logits o_t, and a token is drawn
    (``temperature=0``: the most likely). Returns (length, B) int32 tokens.
    ``dropout``: a regularised stack's :class:`jrnn.dropout.Dropout`, applied as
    in evaluation (zoneout's expectation).

    Step t draws ``jax.random.categorical(keys[t], o_t / temperature)`` with
    ``keys = jax.random.split(key, length)``, written out as that function computes it, the
    Gumbel-max trick argmax(o_t / temperature + g_t), g_t = ``jax.random.gumbel(keys[t])``
    (Gumbel 1954; Maddison, Tarlow & Minka 2014): the same tokens, but every step's noise
    g_t is drawn before the loop in one vectorised call (in chunks of steps where
    length × B × C values would exceed :data:`NOISE_BYTES`), so the loop runs only the
    stack, the head and an argmax (1.1-1.7x faster on a CPU, benchmarks/NOTES.md).

    ``kernel``: ``"scan"`` (the loop above in ``lax.scan``; also what ``"auto"`` runs) or
    ``"native"``: each chunk of steps as one C++ call on the CPU (:mod:`jrnn.native_sampler`;
    an error naming the reason where it cannot run the model). Both draw from the same
    noise, so they give the same tokens unless two logits tie to within float32 rounding.
    """
    _checks.size("length", length)
    if not (np.ndim(temperature) == 0 and np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature: expected a finite number >= 0 (0: the most likely "
                         f"token), got {temperature}")
    if kernel not in SAMPLE_KERNELS:
        raise ValueError(f"kernel: expected one of {SAMPLE_KERNELS}, got {kernel!r}")
    if kernel == "native":
        from jrnn import native_sampler
        reason = native_sampler.unsupported(stack, head, dropout)
        if reason is not None:
            raise ValueError(f"kernel='native' cannot sample from this model: {reason}; use "
                             f"kernel='scan' or 'auto'")
        run = native_sampler.steps(stack, head, embed, temperature)
    else:
        run = scan_steps(stack, head, embed, temperature, dropout)

    carry = (states, x0)
    if temperature == 0:
        return run(carry, None, length)[1]
    keys = jax.random.split(jax.random.key(0) if key is None else _checks.key("key", key), length)
    o = jax.eval_shape(lambda states, x: recurrence.affine_t(  # the logits' shape and dtype
        layers.step_stack(stack, states, x, dropout)[1], head.V.T, head.c), states, x0)

    def steps(carry, keys):  # len(keys) steps, their noise drawn first
        noise = jax.vmap(lambda k: jax.random.gumbel(k, o.shape, o.dtype))(keys)
        return run(carry, noise, len(keys))

    chunk = max(1, min(length, NOISE_BYTES // max(1, o.size * o.dtype.itemsize)))
    whole, rest = divmod(length, chunk)
    chunks = keys[:whole * chunk].reshape(whole, chunk, *keys.shape[1:])  # either kind of key
    carry, tokens = jax.lax.scan(steps, carry, chunks)
    tokens = tokens.reshape(whole * chunk, *tokens.shape[2:])
    if rest:
        tokens = jnp.concatenate([tokens, steps(carry, keys[whole * chunk:])[1]])
    return tokens
