r"""Persistent recurrence kernels: each of the driver's two scans as one GPU program.

The scan path (:mod:`jrnn.recurrence`) runs one XLA loop iteration per time
step: a recurrent matmul, a fused pointwise kernel and a store, each a kernel
launch on a GPU, so a small batch pays several microseconds per step in launch
and loop overhead whatever the work (Diamos et al., "Persistent RNNs:
Stashing Recurrent Weights On-Chip", ICML 2016). Here the whole loop over T runs
inside one Pallas kernel (Triton backend), one program per block of ``bb`` batch
rows, with the recurrent weights loaded on chip once:

.. math::

    \text{forward:}\quad R_{g,t} = h_{t-1} W_g^\top + b_{r,g}, \qquad
    (\text{carry}_t, \text{extra}_t) = \text{cell.step}(A_t, R_t, \text{carry}_{t-1})

    \text{backward:}\quad (dA_t, dR_t, d_{\text{in}}) =
        \text{cell.step\_vjp}(\text{carry}_{t-1}, \text{carry}_t, \text{extra}_t, \delta_t),
    \qquad \delta_{t-1} = d_{\text{in}} + \textstyle\sum_g dR_{g,t} W_g

with W_g the g-th (H, H) row block of W. The cell's own pointwise ``step`` and
``step_vjp`` run inside the kernel unchanged, so every registered cell gets the
kernel; only the two loops move. Everything outside them (the hoisted input
projection, dW, dU, db, dX after the backward loop) stays with the driver, as
for the scan. Rows of the batch are independent, so the programs never talk to
each other.

Limits (the driver falls back to the scan, or refuses when the kernel is forced,
with the reason from :func:`unsupported`): no ``mask``/``lengths``/``reset``, no
gradient-flow recording; float32 or bfloat16 parameters; H a power of two ≥ 16;
the G·H·H recurrent weights at most :data:`MAX_WEIGHT_BYTES` in the product
dtype, so that they stay on chip. On a CPU the same kernels run in Pallas's
interpret mode (slow; for tests only).

Precision: the in-kernel products follow ``matmul_dtype`` and JAX's default
matmul precision exactly as the scan's do: float32 operands run as TF32 under
the default precision on NVIDIA GPUs, as IEEE float32 under "highest".
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jrnn import cells as _cells

__all__ = ["MAX_WEIGHT_BYTES", "unsupported", "preferred", "forward", "backward",
           "poisoned_outputs"]

# One H100 SM has 228 KiB of shared memory and 256 KiB of registers; the weights
# must fit with room for the state and the step's inputs.
MAX_WEIGHT_BYTES = 128 * 1024
# Warps per program (Triton's num_warps), measured in jrnn/bench/persistent.py.
NUM_WARPS = 4


def _interpret() -> bool:
    return jax.default_backend() != "gpu"


def _precision(wdt):
    """The in-kernel dot's precision: what XLA would use for the scan's einsum."""
    if jnp.dtype(wdt) != jnp.float32:
        return None
    setting = str(jax.config.jax_default_matmul_precision or "default").lower()
    if setting in ("highest", "float32", "precision.highest"):
        return lax.Precision.HIGHEST
    return lax.Precision.DEFAULT


def unsupported(cell, H: int, dtype, matmul_dtype=None, *, mask=None, reset=None,
                record=None, noise=False) -> Optional[str]:
    """Why the persistent kernel cannot run this layer, or None if it can."""
    cell = _cells.get(cell)
    if noise:
        return "recurrent dropout and zoneout run on the scan path only"
    if cell.init_params is not None:
        return f"cell {cell.name!r} has parameters of its own: the scan path only"
    if mask is not None or reset is not None:
        return "masks, lengths and resets run on the scan path only"
    if record is not None:
        return "gradient-flow recording runs on the scan path only"
    allowed = (jnp.float32, jnp.bfloat16) + ((jnp.float64,) if _interpret() else ())
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in allowed]:
        return f"parameters of dtype {jnp.dtype(dtype).name} (float32 or bfloat16 only)"
    if H < 16 or H & (H - 1):
        return f"hidden size {H} (a power of two >= 16 only)"
    wdt = jnp.dtype(matmul_dtype or dtype)
    size = cell.gates * H * H * wdt.itemsize
    if size > MAX_WEIGHT_BYTES:
        return (f"recurrent weights of {size // 1024} KiB ({cell.gates}·{H}·{H} {wdt.name}) do "
                f"not fit on chip (at most {MAX_WEIGHT_BYTES // 1024} KiB; try "
                f"matmul_dtype=jnp.bfloat16)")
    return None


# Measured on an H100 (benchmarks/results/gpu_persistent.md, benchmarks/NOTES.md): for the
# tanh cell the kernel's training step took 0.46-0.76x the scan's (unroll 16) at every case
# measured (B 8-256, T 128-2048, H 128 float32, H 256 bfloat16 products). The gated cells'
# cases were not reached in that run: they keep the scan until measured.
_PREFERRED = {"gpu": ("elman",)}


def preferred(cell, H: int, dtype, matmul_dtype=None, backend: Optional[str] = None) -> bool:
    """Whether ``kernel="auto"`` picks the kernel for a layer it supports: where it was
    measured faster than the scan, per backend and cell (``_PREFERRED``)."""
    return _cells.get(cell).name in _PREFERRED.get(backend or jax.default_backend(), ())


def _batch_block(B: int) -> int:
    """Rows per program: 16 (the smallest tensor-core tile), more for large batches."""
    return 16 if B <= 64 else 32


def _pad_rows(a, Bp: int, axis: int):
    pad = Bp - a.shape[axis]
    if pad == 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, pad)
    return jnp.pad(a, widths)


def _extras_shape(cell, bb, H, dtype):
    zeros = (jnp.zeros((bb, H), dtype),)
    _, extras = jax.eval_shape(cell.step, zeros * cell.gates, zeros * cell.gates,
                               zeros * cell.carry_size)
    for e in extras:
        if e.shape != (bb, H):
            raise ValueError(f"cell {cell.name!r}: the persistent kernel needs (B, H) residuals, "
                             f"got {e.shape}")
    return len(extras)


@functools.lru_cache(maxsize=None)
def _own_dR(cell) -> tuple:
    """Which blocks of the cell's dR_t are arrays of their own (not dA_t's block)."""
    z = jnp.zeros((1, 1))
    n_extra = len(cell.step((z,) * cell.gates, (z,) * cell.gates, (z,) * cell.carry_size)[1])
    dA, dR, _, _ = cell.step_vjp((z,) * cell.carry_size, (z,) * cell.carry_size,
                              (z,) * n_extra, (z,) * cell.carry_size)
    if dR is None:
        return (False,) * cell.gates
    return tuple(r is not a for r, a in zip(dR, dA))


def _dot(a, b, wdt, precision):
    """a b on ``wdt`` operands, accumulated in float32 (float64 for float64)."""
    acc = jnp.float64 if jnp.dtype(wdt) == jnp.float64 else jnp.float32
    return jnp.dot(a.astype(wdt), b, preferred_element_type=acc, precision=precision)


def forward(cell, A, W, b_r, carry0, *, reverse: bool, matmul_dtype=None,
            num_warps: Optional[int] = None):
    """The forward loop: every carry and extra of every step, and the final carry.

    A: G arrays (T, B, H), the hoisted projection with its bias. W: (G·H, H).
    b_r: (G·H,) or None. carry0: the carry tuple, each (B, H). Returns
    ``(carries, extras, final)`` as the scan path's ``_forward`` computes them.
    """
    cell = _cells.get(cell)
    G, S = cell.gates, cell.carry_size
    T, B, H = A[0].shape
    dtype = W.dtype
    wdt = jnp.dtype(matmul_dtype or dtype)
    bb = _batch_block(B)
    Bp = -(-B // bb) * bb
    E = _extras_shape(cell, bb, H, dtype)
    precision = _precision(wdt)
    W_t = tuple(w.T.astype(wdt) for w in jnp.split(W, G, axis=0))       # G (H, H)
    br = None if b_r is None else b_r.reshape(G, H)
    A = tuple(_pad_rows(a, Bp, 1) for a in A)
    carry0 = tuple(_pad_rows(c, Bp, 0) for c in carry0)

    def kernel(*refs):
        a_refs, refs = refs[:G], refs[G:]
        w_refs, refs = refs[:G], refs[G:]
        if br is not None:
            br_ref, refs = refs[0], refs[1:]
        c0_refs, refs = refs[:S], refs[S:]
        carry_refs, refs = refs[:S], refs[S:]
        extra_refs, final_refs = refs[:E], refs[E:]
        Ws = tuple(w[...] for w in w_refs)
        brs = None if br is None else tuple(br_ref[g][None, :] for g in range(G))

        def body(i, carry):
            t = T - 1 - i if reverse else i
            A_t = tuple(a[t] for a in a_refs)
            R_t = tuple(_dot(carry[0], w, wdt, precision) for w in Ws)
            if brs is not None:
                R_t = tuple(r + c for r, c in zip(R_t, brs))
            R_t = tuple(r.astype(dtype) for r in R_t)
            new, extra = cell.step(A_t, R_t, carry)
            for ref, v in zip(carry_refs, new):
                ref[t] = v.astype(dtype)
            for ref, v in zip(extra_refs, extra):
                ref[t] = v.astype(dtype)
            return tuple(v.astype(dtype) for v in new)

        final = lax.fori_loop(0, T, body, tuple(c[...] for c in c0_refs))
        for ref, v in zip(final_refs, final):
            ref[...] = v

    seq = pl.BlockSpec((T, bb, H), lambda j: (0, j, 0))
    row = pl.BlockSpec((bb, H), lambda j: (j, 0))
    whole = lambda shape: pl.BlockSpec(shape, lambda j: (0,) * len(shape))
    in_specs = [seq] * G + [whole((H, H))] * G + ([whole((G, H))] if br is not None else []) \
        + [row] * S
    out_specs = [seq] * (S + E) + [row] * S
    out_shape = [jax.ShapeDtypeStruct((T, Bp, H), dtype)] * (S + E) + \
        [jax.ShapeDtypeStruct((Bp, H), dtype)] * S
    outs = _call(kernel, f"jrnn_persistent_{cell.name}_forward", Bp // bb, in_specs, out_specs,
                 out_shape, num_warps, (*A, *W_t, *(() if br is None else (br,)), *carry0))
    outs = [o[:, :B] if o.ndim == 3 else o[:B] for o in outs]
    return tuple(outs[:S]), tuple(outs[S:S + E]), tuple(outs[S + E:])


def backward(cell, W, carries, extras, carry0, d_hs, d_final, *, reverse: bool,
             matmul_dtype=None, num_warps: Optional[int] = None):
    """The reverse loop of BPTT: dA (G arrays), dR's own blocks (None where dR is
    dA's), and the cotangent of the initial carry.

    carries/extras as :func:`forward` returns them; d_hs (T, B, H) the
    cotangent of every output h_t; d_final the cotangent of the final carry.
    """
    cell = _cells.get(cell)
    G, S, E = cell.gates, cell.carry_size, len(extras)
    T, B, H = d_hs.shape
    dtype = W.dtype
    wdt = jnp.dtype(matmul_dtype or dtype)
    bb = _batch_block(B)
    Bp = -(-B // bb) * bb
    precision = _precision(wdt)
    own = _own_dR(cell)
    n_own = sum(own)
    W_g = tuple(w.astype(wdt) for w in jnp.split(W, G, axis=0))           # G (H, H)
    pad = lambda xs, axis: tuple(_pad_rows(x, Bp, axis) for x in xs)
    carries, extras, d_hs = pad(carries, 1), pad(extras, 1), _pad_rows(d_hs, Bp, 1)
    carry0, d_final = pad(carry0, 0), pad(d_final, 0)

    def kernel(*refs):
        c_refs, refs = refs[:S], refs[S:]
        e_refs, refs = refs[:E], refs[E:]
        c0_refs, refs = refs[:S], refs[S:]
        g_ref, refs = refs[0], refs[1:]
        df_refs, refs = refs[:S], refs[S:]
        w_refs, refs = refs[:G], refs[G:]
        dA_refs, refs = refs[:G], refs[G:]
        dR_refs, d0_refs = refs[:n_own], refs[n_own:]
        Ws = tuple(w[...] for w in w_refs)

        def step(t, carry_in, dcarry):
            carry_t = tuple(c[t] for c in c_refs)
            extra_t = tuple(e[t] for e in e_refs)
            dcarry = (dcarry[0] + g_ref[t],) + tuple(dcarry[1:])
            dA, dR, d_in, _ = cell.step_vjp(carry_in, carry_t, extra_t, dcarry)
            dR = dA if dR is None else dR
            k = 0
            for g in range(G):
                dA_refs[g][t] = dA[g].astype(dtype)
                if own[g]:
                    dR_refs[k][t] = dR[g].astype(dtype)
                    k += 1
            dh_prev = _dot(dR[0], Ws[0], wdt, precision)
            for g in range(1, G):
                dh_prev = dh_prev + _dot(dR[g], Ws[g], wdt, precision)
            d_in = (d_in[0] + dh_prev.astype(dtype),) + tuple(d_in[1:])
            return tuple(d.astype(dtype) for d in d_in)

        def body(i, dcarry):  # every step but the first one processed forward
            t = i if reverse else T - 1 - i
            prev = t + 1 if reverse else t - 1
            return step(t, tuple(c[prev] for c in c_refs), dcarry)

        dcarry = lax.fori_loop(0, T - 1, body, tuple(d[...] for d in df_refs))
        first = T - 1 if reverse else 0
        d0 = step(first, tuple(c[...] for c in c0_refs), dcarry)
        for ref, v in zip(d0_refs, d0):
            ref[...] = v

    seq = pl.BlockSpec((T, bb, H), lambda j: (0, j, 0))
    row = pl.BlockSpec((bb, H), lambda j: (j, 0))
    whole = pl.BlockSpec((H, H), lambda j: (0, 0))
    in_specs = [seq] * (S + E) + [row] * S + [seq] + [row] * S + [whole] * G
    out_specs = [seq] * (G + n_own) + [row] * S
    out_shape = [jax.ShapeDtypeStruct((T, Bp, H), dtype)] * (G + n_own) + \
        [jax.ShapeDtypeStruct((Bp, H), dtype)] * S
    outs = _call(kernel, f"jrnn_persistent_{cell.name}_backward", Bp // bb, in_specs, out_specs,
                 out_shape, num_warps, (*carries, *extras, *carry0, d_hs, *d_final, *W_g))
    outs = [o[:, :B] if o.ndim == 3 else o[:B] for o in outs]
    dA = tuple(outs[:G])
    it = iter(outs[G:G + n_own])
    dR_own = tuple(next(it) if o else None for o in own)
    return dA, dR_own, tuple(outs[G + n_own:])


_POISON = False


@contextlib.contextmanager
def poisoned_outputs():
    """Within this context, kernels traced fill their outputs with NaN before
    they run, so a test sees any element a kernel forgets to write."""
    global _POISON
    before, _POISON = _POISON, True
    try:
        yield
    finally:
        _POISON = before


def _call(kernel, name, programs, in_specs, out_specs, out_shape, num_warps, inputs):
    """``pl.pallas_call`` over ``programs`` batch blocks (outputs NaN-poisoned on request)."""
    n_in, n_out = len(inputs), len(out_shape)
    aliases = {}
    if _POISON:
        inputs = inputs + tuple(jnp.full(o.shape, jnp.nan, o.dtype) for o in out_shape)
        in_specs = list(in_specs) + list(out_specs)
        aliases = {n_in + i: i for i in range(n_out)}
        body = kernel
        kernel = lambda *refs: body(*refs[:n_in], *refs[n_in + n_out:])
    params = None
    if not _interpret():
        from jax.experimental.pallas import triton as plgpu
        params = plgpu.CompilerParams(num_warps=num_warps or NUM_WARPS, num_stages=1)
    return pl.pallas_call(kernel, out_shape=out_shape, grid=(programs,), in_specs=in_specs,
                          out_specs=out_specs, input_output_aliases=aliases,
                          compiler_params=params, interpret=_interpret(), name=name)(*inputs)
