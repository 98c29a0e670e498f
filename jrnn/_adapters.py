"""What the Flax NNX, Flax Linen and Equinox modules share: one call of a stack.

Those modules hold parameters in their framework's way and hand them to
:func:`call` as a :data:`jrnn.layers.Stack`; everything else (input layout,
argument checks, the carry's nesting) is here, once, with no framework import.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jrnn import _checks, cells, layers, recurrence

__all__ = ["call", "RUN_OPTIONS"]

# Options of jrnn.layers.run_stack that the modules pass through unchanged.
RUN_OPTIONS = ("unroll", "matmul_dtype", "backward", "kernel")


def _layout(time_major: bool, D: int) -> str:
    return f"(T, B, {D}) (time-major)" if time_major else f"(B, T, {D}) (batch-first)"


def _check_inputs(stack, inputs, time_major: bool):
    first = stack[0][0]
    D, dtype = first.input_size, first.W.dtype
    expected = f"{_layout(time_major, D)} or an unbatched (T, {D})"
    _checks.floating("inputs", inputs)
    _checks.rank("inputs", inputs, (2, 3), expected)
    if inputs.shape[-1] != D:
        _checks.fail_shape("inputs", f"(..., {D}): the last axis is in_features = {D}",
                           inputs.shape)
    if 0 in inputs.shape[:-1]:
        _checks.fail_shape("inputs", expected + " with T >= 1 and B >= 1", inputs.shape)
    _checks.same_dtype("inputs", inputs, dtype, "the module's parameters")


def _nest(stack, initial_carry, batch: tuple):
    """The module's carry (one state, or states nested [layer][direction]) checked
    and nested the way :func:`jrnn.layers.run_stack` takes it."""
    single = len(stack) == 1 and len(stack[0]) == 1
    nested = ((initial_carry,),) if single else initial_carry
    if (not isinstance(nested, tuple) or len(nested) != len(stack)
            or any(not isinstance(s, tuple) or len(s) != len(stack[0]) for s in nested)):
        raise ValueError(f"initial_carry: expected states nested (layers, directions) = "
                         f"({len(stack)}, {len(stack[0])}), got {jax.tree.structure(initial_carry)}")
    for l, layer in enumerate(stack):
        for d, part in enumerate(layer):
            spec = cells.get(part.cell)
            name = "initial_carry" if single else f"initial_carry[{l}][{d}]"
            if spec.driver == "linear":  # the state is h alone
                _checks.shape(name, nested[l][d], batch + (part.hidden_size,),
                              str(batch + (part.hidden_size,)))
                _checks.same_dtype(name, nested[l][d], part.W.dtype, "the module's parameters")
                continue
            if spec.carry_size == 2 and not isinstance(nested[l][d], cells.LSTMState):
                raise TypeError(f"{name}: expected jrnn.cells.LSTMState(h, c), got "
                                f"{type(nested[l][d]).__name__}; a Flax LSTM carry is the "
                                "tuple (c, h): pass LSTMState(h=carry[1], c=carry[0])")
            try:
                leaves = spec.to_carry(nested[l][d])
            except (TypeError, IndexError):
                raise TypeError(f"{name}: expected the {spec.name} state "
                                f"({'LSTMState(h, c)' if spec.carry_size == 2 else 'h'}), "
                                f"got {type(nested[l][d]).__name__}") from None
            for i, leaf in enumerate(leaves):
                width = part.output_size if i == 0 else part.hidden_size  # h: P with W_hr
                _checks.shape(name, leaf, batch + (width,), str(batch + (width,)))
                _checks.same_dtype(name, leaf, part.W.dtype, "the module's parameters")
    return nested


def call(stack, inputs, *, time_major: bool, initial_carry=None, seq_lengths=None,
         options: Optional[dict] = None) -> tuple[Any, jax.Array]:
    """Runs ``stack`` on batch-first (B, T, D) or time-major (T, B, D) inputs.

    Returns ``(carry, outputs)``: outputs in the input's layout with
    directions·H features (zeros past each sequence's length), and the final
    state: one state for a single layer of one direction, else states nested
    ``[layer][direction]`` as :func:`jrnn.layers.run_stack` returns them.
    """
    _check_inputs(stack, inputs, time_major)
    batch_first = inputs.ndim == 3 and not time_major
    xs = jnp.swapaxes(inputs, 0, 1) if batch_first else inputs
    batch = tuple(xs.shape[1:-1])
    if seq_lengths is not None:
        recurrence.check_lengths(seq_lengths, xs.shape[0], batch, name="seq_lengths")
    h0 = None if initial_carry is None else _nest(stack, initial_carry, batch)
    outputs, finals = layers.run_stack(stack, xs, h0, lengths=seq_lengths, **(options or {}))
    if batch_first:
        outputs = jnp.swapaxes(outputs, 0, 1)
    single = len(stack) == 1 and len(stack[0]) == 1
    return (finals[0][0] if single else finals), outputs
