r"""The native step-by-step sampler: a chunk of generated tokens as one C++ call on the CPU
(``jrnn/csrc/sampler.h``, over each cell's own forward step in ``lstm.cc``, ``gru.cc``,
``elman.cc``; built and loaded with :mod:`jrnn.native`).

:func:`jrnn.models._common.autoregress` with ``kernel="native"`` runs it (the loop behind
:func:`jrnn.models.tagger.sample`, :func:`jrnn.models.generator.sample` and
:func:`jrnn.models.seq2seq.decode`). Per step s, for B sequences,

    h_s = the cell's step from a_s = x_s Uᵀ and the previous state,
    o_s = h_s Vᵀ + c,
    token_s = argmax_v (o_s,v / τ + g_s,v)        (τ = 0: argmax_v o_s,v),
    a_{s+1} = P[token_s],   P = E Uᵀ,

g_s the Gumbel noise that the scan path draws too, before the loop (Gumbel 1954; Maddison,
Tarlow & Minka 2014): the same keys give the same noise, so both paths draw the same tokens
up to the order of float32 sums in the two products (a token can differ only where two
logits tie to within that rounding). The scan path runs one XLA loop iteration per step, its
products on one core at small B; here the threads split the batch's rows from 16 rows a
thread, each running its own rows' steps, head and argmax with no barrier, and below that the
hidden units and the head's outputs, two barriers per step. Every input after the first is a row of the embedding
table E (C, D) (so embed must act row by row: embed(tokens)[b] depends on tokens[b] only),
so its input projection is a row of P = E Uᵀ (C, G·H), one product per call: a step reads
B rows of P where it would multiply B inputs by U (a third of the LSTM's step at D = H/2).

Limits (:func:`unsupported`): one-layer stacks of the cells :mod:`jrnn.native` runs, without
a projection, heads or evaluation-mode zoneout; float32.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import cells, native
from jrnn import dropout as _dropout

__all__ = ["unsupported", "steps"]


def unsupported(stack, head, dropout=None) -> Optional[str]:
    """Why the native sampler cannot run this stack and head, or None if it can."""
    if len(stack) != 1:
        return f"the native sampler runs one-layer stacks, this one has {len(stack)} layers"
    (part,) = stack[0]
    spec = cells.get(part.cell)
    if spec.driver == "linear":
        return f"cell {spec.name!r}: the native kernels cover {', '.join(native._CELLS)} only"
    rates = () if dropout is None else _dropout.zoneout_rates(dropout, spec)
    reason = native.unsupported(part.cell, part.W.shape[1], part.W.dtype,
                                noise=any(rates), projected=part.W_hr is not None,
                                heads=part.heads)
    if reason is not None:
        return reason
    if jnp.dtype(head.V.dtype) != jnp.float32:
        return f"a head of dtype {jnp.dtype(head.V.dtype).name} (float32 only)"
    return None


def steps(stack, head, embed: Callable, temperature: float,
          num_threads: Optional[int] = None) -> Callable:
    """``run(carry, noise, n) -> (carry, tokens)``: n steps of generation from carry
    ``(states, x)`` (the stack's per-layer states, x (B, D) the next input), ``noise``
    (n, B, C) Gumbel noise or None (the most likely token); tokens (n, B) int32. The
    weights are packed here, once, for every call of ``run``; each ``run`` projects the
    embedding table and x once. Check :func:`unsupported` first."""
    if not native.load():
        raise RuntimeError(f"jrnn.native is unavailable: {native.why_unavailable()}")
    (part,) = stack[0]
    spec = cells.get(part.cell)
    name, dt = spec.name, jnp.float32
    C = head.V.shape[0]
    H = part.W.shape[1]
    U, W = part.U.astype(dt), part.W.astype(dt)
    none = jnp.zeros((1,), dt)
    if name == "gru":
        target = "jrnn_gru_sample"
        weights = (native.pack_weights(W, gates=3, units=native.gru_units()),
                   none if part.b is None else part.b.astype(dt),
                   none if part.b_r is None else part.b_r.astype(dt))
        flags = {"has_b": part.b is not None, "has_br": part.b_r is not None}
    else:
        bias = native._summed_bias(part.b, part.b_r)
        target = f"jrnn_{name}_sample"
        weights = ((native.pack_weights(W) if name == "lstm" else
                    native.pack_weights_backward(W.T)), none if bias is None else bias)
        flags = {"has_bias": bias is not None}
    project = lambda rows: rows @ U.T  # (·, G·H), the gates' H-blocks side by side
    V_packed = native.pack_weights_backward(head.V.astype(dt).T)
    c = head.c.astype(dt)
    threads = np.int64(num_threads or native.threads())

    def run(carry, noise, n: int):
        (state,), x = carry
        B = x.shape[0]
        grid = jnp.broadcast_to(jnp.arange(C, dtype=jnp.int32)[:, None], (C, B))
        table = jax.vmap(embed)(grid)[:, 0].astype(dt)  # (C, D): token v's input row
        carry0 = tuple(a.astype(dt) for a in spec.to_carry(state))
        row = jax.ShapeDtypeStruct((B, H), dt)
        call = jax.ffi.ffi_call(target, [jax.ShapeDtypeStruct((n, B), jnp.int32)]
                                + [row] * len(carry0), vmap_method="sequential")
        tokens, *final = call(
            project(table), project(x.astype(dt)), *weights, *carry0, V_packed, c,
            none if noise is None else noise.astype(dt), greedy=noise is None,
            temperature=np.float32(1.0 if noise is None else temperature), threads=threads,
            **flags)
        return ((spec.from_carry(tuple(final)),), embed(tokens[-1])), tokens
    return run
