r"""Native CPU kernels for the two loops of the LSTM, the GRU and the tanh cell: the forward
recurrence and the reverse loop of BPTT, each as one XLA FFI custom call (C++, AVX2 and FMA,
or AVX-512 where the CPU has it; ``jrnn/csrc/lstm.cc``, ``gru.cc``, ``elman.cc``, their shared
parts in ``common.h``). The same library holds the sampler's loop (:mod:`jrnn.native_sampler`)
and the softmax head (:mod:`jrnn.native_head`).

The scan path runs one XLA loop iteration per step, whose recurrent product
R_t = h_{t−1} Wᵀ XLA:CPU computes on one core (docs/cpu_performance.md). Here one call
runs every step: W packed once into panels of 8 hidden units × G gates (the GRU's: one
vector of units, 16 with AVX-512; :func:`gru_units`), each step's product in a
register-blocked micro-kernel with the gate math fused after it, the hidden
units split over ``threads`` threads (each pinned to its own CPU; the helper threads are
started once and sleep between calls) with one spin barrier per step.
``jrnn.rnn(..., kernel="native")`` runs :func:`forward_inputs` (the input projection
x_t Uᵀ in the same micro-kernel, so that no (T, B, G·H) projection is written) and
:func:`gradients`: the reverse loop (the cell's step_vjp per unit, then
dh_{t−1} = dR W) writing the gates' dz side by side, after which dW, dU (with the biases)
and dX are one product each. For the LSTM and the tanh cell dA = dR; the GRU's differ in
the n-block (dR_n = dA_n ⊙ r), so its reverse loop writes both. dW, dU and the biases'
gradients, whose contraction runs over all T·B rows, are :func:`transposed_products`
(``products.cc``). :func:`forward` and :func:`backward`
(the LSTM's loops alone, the projection hoisted: the interface of
:func:`jrnn.persistent.forward`) are kept for the benchmark and the tests.

The compiled library is optional. ``python -m jrnn.native build`` compiles it with the
system's C++ compiler (``$CXX``, else ``g++``) against jaxlib's FFI headers, into a file
named by a hash of the sources, the flags and jaxlib's version; :func:`load` builds it on
first use unless ``JRNN_NATIVE_BUILD=0``. :func:`available` says whether it can be loaded,
:func:`why_unavailable` why not. It needs an x86-64 CPU with AVX2 and FMA, and uses AVX-512
where the CPU has it (:func:`isa`).

Limits (:func:`unsupported`): the LSTM, GRU and tanh cells; float32 parameters and
products; no mask/lengths/reset, no recurrent dropout or zoneout, no gradient-flow
recording, no projection or heads; no ``vmap`` beyond a sequential loop, no forward mode.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["available", "why_unavailable", "load", "build", "unsupported", "forward",
           "forward_inputs", "backward", "gradients", "pack_weights", "pack_weights_backward",
           "transposed_products", "StatesRead", "rows_times_weights", "threads", "isa",
           "gru_units"]

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = (_CSRC / "lstm.cc", _CSRC / "gru.cc", _CSRC / "elman.cc", _CSRC / "head.cc",
            _CSRC / "products.cc")
_HEADERS = (_CSRC / "common.h", _CSRC / "sampler.h")
# FFI target name -> the library's handler symbol
_TARGETS = {"jrnn_lstm_forward": "JrnnLstmForward",
            "jrnn_lstm_forward_inputs": "JrnnLstmForwardX",
            "jrnn_lstm_backward": "JrnnLstmBackward",
            "jrnn_gru_forward_inputs": "JrnnGruForward",
            "jrnn_gru_backward": "JrnnGruBackward",
            "jrnn_elman_forward_inputs": "JrnnElmanForward",
            "jrnn_elman_backward": "JrnnElmanBackward",
            "jrnn_lstm_sample": "JrnnLstmSample",
            "jrnn_gru_sample": "JrnnGruSample",
            "jrnn_elman_sample": "JrnnElmanSample",
            "jrnn_softmax_nll": "JrnnSoftmaxNll",
            "jrnn_transposed_products": "JrnnTransposedProducts",
            "jrnn_rows_times_weights": "JrnnRowsTimesWeights"}
_CELLS = ("lstm", "gru", "elman")
_state = {"loaded": False, "error": None}


_ISAS = {"avx2": ["-mavx2", "-mfma"],
         "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512vl"]}


def _cpu_flags() -> Optional[set]:
    """The CPU's feature flags from /proc/cpuinfo, or None where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def isa() -> str:
    """The instruction set the library is built for: ``"avx512"`` where the CPU has AVX-512
    F, DQ and VL (the products' micro-kernel then holds 16 lanes per register and 8 rows per
    panel pass), else ``"avx2"``. ``JRNN_NATIVE_ISA=avx2`` (or ``avx512``) chooses."""
    flags = _cpu_flags() or set()
    has_avx512 = {"avx512f", "avx512dq", "avx512vl"} <= flags
    wanted = os.environ.get("JRNN_NATIVE_ISA")
    if wanted is None or wanted == "":
        return "avx512" if has_avx512 else "avx2"
    if wanted not in _ISAS:
        raise ValueError(f"JRNN_NATIVE_ISA must be one of {sorted(_ISAS)}, got {wanted!r}")
    if wanted == "avx512" and not has_avx512:
        raise ValueError("JRNN_NATIVE_ISA=avx512, but this CPU lacks AVX-512 F, DQ or VL")
    return wanted


def _flags() -> list:
    return ["-O3", *_ISAS[isa()], "-fPIC", "-shared", "-std=c++20", "-pthread",
            "-isystem", jax.ffi.include_dir()]


def _library_path() -> Path:
    """Where the library lives: a name keyed by the sources, the flags and jaxlib's version
    (the FFI ABI), next to the source if writable, else in the user's cache."""
    import jaxlib
    key = hashlib.sha256(b"".join(f.read_bytes() for f in _SOURCES + _HEADERS)
                         + " ".join(_flags()).encode()
                         + jaxlib.__version__.encode()).hexdigest()[:16]
    name = f"_native-{key}.so"
    here = _CSRC
    if os.access(here, os.W_OK):
        return here / name
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jrnn"
    return cache / name


def build(verbose: bool = False) -> Path:
    """Compiles the kernel (if not built yet) and returns the library's path."""
    out = _library_path()
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cxx = os.environ.get("CXX", "g++")
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cxx, *_flags(), *map(str, _SOURCES), "-o", str(tmp)]
    if verbose:
        print(" ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"no C++ compiler ({cxx}): {e}") from e
    if proc.returncode != 0:
        raise RuntimeError(f"building {', '.join(f.name for f in _SOURCES)} failed:\n"
                           f"{proc.stderr[-4000:]}")
    os.replace(tmp, out)
    return out


def _cpu_supported() -> Optional[str]:
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"an x86-64 CPU with AVX2 and FMA is needed, not {platform.machine()}"
    flags = _cpu_flags()
    if flags is not None and not {"avx2", "fma"} <= flags:
        return "this CPU lacks AVX2 or FMA"
    return None


def load(build_if_missing: Optional[bool] = None) -> bool:
    """Loads the library and registers its FFI target; True on success (see
    :func:`why_unavailable`). Builds it first if missing unless ``JRNN_NATIVE_BUILD=0``."""
    if _state["loaded"] or _state["error"] is not None:
        return _state["loaded"]
    if build_if_missing is None:
        build_if_missing = os.environ.get("JRNN_NATIVE_BUILD", "1") != "0"
    try:
        reason = _cpu_supported()
        if reason:
            raise RuntimeError(reason)
        path = _library_path()
        if not path.exists():
            if not build_if_missing:
                raise RuntimeError("not built (run: python -m jrnn.native build)")
            path = build()
        import ctypes
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
        _state["gru_units"] = int(lib.JrnnGruUnits())
        _state["loaded"] = True
    except Exception as e:  # noqa: BLE001 - any failure means: not available, and why
        _state["error"] = f"{type(e).__name__}: {e}"
    return _state["loaded"]


def available() -> bool:
    """Whether the native kernel can run here (loading, and building, it if needed)."""
    return load()


def why_unavailable() -> Optional[str]:
    """None if :func:`available`, else the reason."""
    return None if load() else _state["error"]


def threads() -> int:
    """Threads per call: ``JRNN_NATIVE_THREADS``, else the CPUs this process may use."""
    env = os.environ.get("JRNN_NATIVE_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def unsupported(cell, H: int, dtype, matmul_dtype=None, *, mask=None, reset=None,
                record=None, noise=False, projected=False, heads=1) -> Optional[str]:
    """Why the native kernel cannot run this layer, or None if it can."""
    from jrnn import cells as _cells
    cell = _cells.get(cell)
    if jax.default_backend() != "cpu":
        return "the native kernel runs on the CPU backend only"
    if cell.name not in _CELLS:
        return f"cell {cell.name!r}: the native kernels cover {', '.join(_CELLS)} only"
    if noise:
        return "recurrent dropout and zoneout run on the scan path only"
    if mask is not None or reset is not None:
        return "masks, lengths and resets run on the scan path only"
    if record is not None:
        return "gradient-flow recording runs on the scan path only"
    if projected:
        return "a projection W_hr (proj_size) runs on the scan path only"
    if heads > 1:
        return "a block-diagonal W (heads > 1) runs on the scan path only"
    if jnp.dtype(dtype) != jnp.float32 or (matmul_dtype is not None
                                            and jnp.dtype(matmul_dtype) != jnp.float32):
        return f"parameters/products of dtype {jnp.dtype(matmul_dtype or dtype).name} " \
               f"(float32 only)"
    if not available():
        return f"the native library is unavailable ({why_unavailable()})"
    return None


def _cell_name(cell) -> str:
    from jrnn import cells as _cells
    return _cells.get(cell).name


def _summed_bias(b, b_r):
    """b + b_r in float32 (the cells where both only add to the pre-activation), or None."""
    present = [v.astype(jnp.float32) for v in (b, b_r) if v is not None]
    return sum(present[1:], present[0]) if present else None


def pack_weights(W, H: Optional[int] = None, gates: int = 4, units: int = 8):
    """A gate-stacked weight (G·H, K) -> (⌈H/units⌉, K, G, units): for each block of
    ``units`` hidden units, row k holds the G gates' weights on input k side by side (units
    past H zero). W (G·H, H) and U (G·H, D) are packed alike."""
    K = W.shape[1]
    H = W.shape[0] // gates if H is None else H
    nb = -(-H // units)
    Wg = W.reshape(gates, H, K)
    Wg = jnp.pad(Wg, ((0, 0), (0, nb * units - H), (0, 0)))
    return Wg.reshape(gates, nb, units, K).transpose(1, 3, 0, 2)


def gru_units() -> int:
    """The GRU kernels' unit block in the loaded library: one vector of its build (8 hidden
    units, 16 with AVX-512), so that each gate of a block is one register; U and W are packed
    (``pack_weights(..., gates=3, units=gru_units())``) to match."""
    if not load():
        raise RuntimeError(f"jrnn.native is unavailable: {why_unavailable()}")
    return _state["gru_units"]


def _out_types(T, B, H, keep_residuals):
    dt = jnp.float32
    seq = jax.ShapeDtypeStruct((T, B, H), dt)
    row = jax.ShapeDtypeStruct((B, H), dt)
    kept = seq if keep_residuals else jax.ShapeDtypeStruct((0,), dt)
    return [seq, kept, kept, kept, kept, kept, row, row]


def _results(outs, keep_residuals):
    hs, cs, i, f, g, o, hT, cT = outs
    if not keep_residuals:
        return (hs, None), None, (hT, cT)
    return (hs, cs), (i, f, g, o), (hT, cT)


def forward_inputs(cell, xs, U, b, W, b_r, carry0, *, reverse: bool, matmul_dtype=None,
                   keep_residuals: bool = True, num_threads: Optional[int] = None):
    """:func:`forward` with the input projection inside the kernel's step: z_t = x_t Uᵀ +
    h_{t−1} Wᵀ + b + b_r from xs (T, B, D) and U (4H, D), so that no hoisted (T, B, 4H)
    array is written. Same returns as :func:`forward`."""
    if not load():
        raise RuntimeError(f"jrnn.native is unavailable: {why_unavailable()}")
    forward_of = {"gru": _gru_forward, "elman": _elman_forward}.get(_cell_name(cell))
    if forward_of is not None:
        return forward_of(xs, U, b, W, b_r, carry0, reverse=reverse,
                          keep_residuals=keep_residuals, num_threads=num_threads)
    T, B, _ = xs.shape
    H = W.shape[1]
    dt = jnp.float32
    bias = _summed_bias(b, b_r)
    has_bias = bias is not None
    call = jax.ffi.ffi_call("jrnn_lstm_forward_inputs", _out_types(T, B, H, keep_residuals),
                            vmap_method="sequential")
    outs = call(xs.astype(dt), pack_weights(U.astype(dt), H), pack_weights(W.astype(dt)),
                bias if has_bias else jnp.zeros((1,), dt),
                carry0[0].astype(dt), carry0[1].astype(dt),
                reverse=bool(reverse), has_bias=has_bias, keep=bool(keep_residuals),
                threads=np.int64(num_threads or threads()))
    return _results(outs, keep_residuals)


def forward(cell, A, W, b_r, carry0, *, reverse: bool, matmul_dtype=None,
            keep_residuals: bool = True, num_threads: Optional[int] = None):
    """The forward loop: every carry and extra of every step, and the final carry.

    As :func:`jrnn.persistent.forward`: A, the four gates' (T, B, H) hoisted projections
    with their bias; W (4H, H); b_r (4H,) or None; carry0 (h0, c0), each (B, H). Returns
    ``((hs, cs), (i, f, g, o), (h_T, c_T))``. Without ``keep_residuals`` cs and the gates
    are not written (returned as None).
    """
    if not load():
        raise RuntimeError(f"jrnn.native is unavailable: {why_unavailable()}")
    T, B, H = A[0].shape
    dt = jnp.float32
    has_bias = b_r is not None
    br = b_r.astype(dt) if has_bias else jnp.zeros((1,), dt)
    call = jax.ffi.ffi_call("jrnn_lstm_forward", _out_types(T, B, H, keep_residuals),
                            vmap_method="sequential")
    outs = call(*(a.astype(dt) for a in A), pack_weights(W.astype(dt)), br,
                carry0[0].astype(dt), carry0[1].astype(dt),
                reverse=bool(reverse), has_bias=bool(has_bias), keep=bool(keep_residuals),
                threads=np.int64(num_threads or threads()))
    return _results(outs, keep_residuals)


def pack_weights_backward(W):
    """W (4H, H) -> (⌈H/32⌉, 4H, 32): for each block of 32 units of h, row j holds W[j, ·]'s
    32 entries (units past H zero), the right operand of dh_{t−1} = dz W."""
    H = W.shape[1]
    nkb = -(-H // 32)
    Wp = jnp.pad(W, ((0, 0), (0, nkb * 32 - H)))
    return Wp.reshape(W.shape[0], nkb, 32).transpose(1, 0, 2)


def backward(cell, W, carries, extras, carry0, d_hs, d_final, *, reverse: bool,
             matmul_dtype=None, num_threads: Optional[int] = None):
    """The reverse loop of BPTT: ``(dA, d_carry0)``, dA (T, B, 4H) the cotangents of the
    four gates' pre-activations z side by side ([dz_i | dz_f | dz_g | dz_o], the LSTM's dR
    is dA) and d_carry0 = (d h0, d c0). From the forward's residuals: ``carries`` (hs, cs),
    ``extras`` (i, f, g, o), each (T, B, H); ``d_hs`` (T, B, H) and ``d_final`` (d h_T,
    d c_T) the cotangents of the outputs."""
    if not load():
        raise RuntimeError(f"jrnn.native is unavailable: {why_unavailable()}")
    dt = jnp.float32
    _, cs = carries
    T, B, H = cs.shape
    row = jax.ShapeDtypeStruct((B, H), dt)
    call = jax.ffi.ffi_call("jrnn_lstm_backward", [jax.ShapeDtypeStruct((T, B, 4 * H), dt), row, row],
                            vmap_method="sequential")
    dA, dh0, dc0 = call(cs.astype(dt), *(e.astype(dt) for e in extras), carry0[1].astype(dt),
                        d_hs.astype(dt), d_final[0].astype(dt), d_final[1].astype(dt),
                        pack_weights_backward(W.astype(dt)),
                        reverse=bool(reverse), threads=np.int64(num_threads or threads()))
    return dA, (dh0, dc0)


def gradients(cell, xs, U, W, b, b_r, carries, extras, carry0, d_hs, d_final, *,
              reverse: bool):
    """A layer's gradients from its forward's residuals: the cell's reverse loop, then,
    over all N = T·B rows of dA and dR (N, G·H),

        dW = dRᵀ H_in,  dU = dAᵀ X,  db = Σ_n dA_n,  db_r = Σ_n dR_n,  dX = dA U,

    H_in the state each step read (h_{t−1}; h_{t+1} right to left). dR is dA for the LSTM
    and the tanh cell (then db = db_r); the GRU's differ in the n-block. Each is one product:
    the gates side by side make dW, dU and dX one product each instead of G, and dW, dU and
    the biases' gradients (column sums) come from :func:`transposed_products`, one pass
    over dA where dR is dA, and dX from :func:`rows_times_weights`.
    Returns ``(dU, dW, db, db_r, dxs, d_carry0)`` (None for an absent bias)."""
    name = _cell_name(cell)
    h0 = carry0[0]
    hs = carries[0]
    if name == "gru":
        dA, dR, dh0 = _gru_backward(W, hs, extras, h0, d_hs, d_final[0], reverse=reverse)
        d_carry0 = (dh0,)
    elif name == "elman":
        dA, dh0 = _elman_backward(W, hs, d_hs, d_final[0], reverse=reverse)
        dR, d_carry0 = dA, (dh0,)
    else:
        dA, d_carry0 = backward(name, W, carries, extras, carry0, d_hs, d_final,
                                reverse=reverse)
        dR = dA
    T, B, D = xs.shape
    N = T * B
    rows_A = dA.reshape(N, -1)
    rows_R = rows_A if dR is dA else dR.reshape(N, -1)
    h_in = StatesRead(hs, h0, reverse)
    x_in = xs.reshape(N, D)
    # dR is dA for the LSTM and the tanh cell: then read once, and db = db_r its sums
    (dW, dU), (db_h, db_x) = transposed_products(((rows_R, h_in), (rows_A, x_in)),
                                                 sums=(b_r is not None, b is not None))
    db = None if b is None else db_x
    db_r = None if b_r is None else db_h
    dxs = rows_times_weights(rows_A, U).reshape(T, B, U.shape[1])
    return dU, dW, db, db_r, dxs, d_carry0


class StatesRead(NamedTuple):
    """The (T·B, H) rows of :func:`jrnn.recurrence.states_read` (hs, h0, reverse), the state
    each step read, as an operand of :func:`transposed_products` that is never built: the
    call reads h0's rows and hs's rows, shifted by one step, where it copies its panels."""
    hs: jax.Array  # (T, B, H)
    h0: jax.Array  # (B, H)
    reverse: bool


def transposed_products(pairs, *, sums=None, num_threads: Optional[int] = None):
    """``(products, column_sums)`` in float32 for one or two pairs (d, x), d (N, G) and
    x (N, P) or a :class:`StatesRead` of N rows: the products dᵀ x (G, P), and where
    ``sums[i]`` (one flag per pair; default none) the column sums Σ_n d_n (G,) of pair i's
    d (a bias's gradient), else None.

    N is long and G, P narrow: the weight gradients' shape (dW = dRᵀ H_in, dU = dAᵀ X over
    all T·B rows), which XLA:CPU multiplies below its square matmul's speed. One native
    call (``products.cc``): chunks of 256 rows of N, each chunk's x copied into panels of
    32 columns that stay in the cache while d's columns, 32 at a time, run through them in
    the kernels' micro-kernel. Where both pairs have the same d (the same array object), it
    is read once. The threads split d's columns, so every sum runs in the same order for
    any thread count."""
    if not load():
        raise RuntimeError(f"jrnn.native is unavailable: {why_unavailable()}")
    if len(pairs) not in (1, 2):
        raise ValueError(f"pairs: expected one or two (d, x) pairs, got {len(pairs)}")
    sums = (False,) * len(pairs) if sums is None else sums
    if len(sums) != len(pairs):
        raise ValueError(f"sums: expected one flag per pair ({len(pairs)}), got {len(sums)}")
    sums = tuple(bool(w) for w in sums) + (False,) * (2 - len(pairs))
    dt = jnp.float32
    N, G = pairs[0][0].shape
    shared = len(pairs) == 2 and pairs[1][0] is pairs[0][0]
    wanted = [sums[0] or (shared and sums[1]), sums[1] and not shared]
    empty = jnp.zeros((0,), dt)
    rows = [_rows_and_edge(x, N) for _, x in pairs] + [(empty, empty, False)] * (2 - len(pairs))
    d2 = empty if len(pairs) == 1 or shared else pairs[1][0].astype(dt)
    outs = [jax.ShapeDtypeStruct((G, x.shape[1]), dt) for x, _, _ in rows[:len(pairs)]]
    outs += [jax.ShapeDtypeStruct((0,), dt)] * (2 - len(pairs))
    outs += [jax.ShapeDtypeStruct((G,) if w else (0,), dt) for w in wanted]
    call = jax.ffi.ffi_call("jrnn_transposed_products", outs, vmap_method="sequential")
    (x1, edge1, first1), (x2, edge2, first2) = rows
    out1, out2, s1, s2 = call(pairs[0][0].astype(dt), x1, edge1, d2, x2, edge2,
                              pairs=np.int64(len(pairs)), d_shared=shared,
                              with_sums1=wanted[0], with_sums2=wanted[1],
                              edge1_first=first1, edge2_first=first2,
                              threads=np.int64(num_threads or threads()))
    column_sums = (s1 if sums[0] else None, (s1 if shared else s2) if sums[1] else None)
    return (out1, out2)[:len(pairs)], column_sums[:len(pairs)]


def _rows_and_edge(x, N: int):
    """A products' operand as the call takes it: ``(rows (N, P), edge, edge_first)``, the
    edge (E, P) rows (empty for a plain x) that the call puts first, or last, around the
    rows it reads from ``rows`` (shifted by E)."""
    dt = jnp.float32
    if not isinstance(x, StatesRead):
        return x.astype(dt), jnp.zeros((0,), dt), False
    T, B, H = x.hs.shape
    if x.h0.shape != (B, H) or T * B != N:
        raise ValueError(f"StatesRead: expected hs (T, B, H) with T·B = {N} rows and h0 "
                         f"(B, H), got hs {tuple(x.hs.shape)} and h0 {tuple(x.h0.shape)}")
    edge = x.h0.astype(dt) if N else jnp.zeros((0,), dt)
    return x.hs.reshape(N, H).astype(dt), edge, not x.reverse


def rows_times_weights(a, W, *, num_threads: Optional[int] = None):
    """``a W`` in float32 for a (N, K) and W (K, M): N long (all T·B rows), K short, the
    softmax head's dJ/dhs = dJ/do V (K the C classes), which XLA:CPU multiplies at a quarter
    to a half of its square matmul's speed. One native call (``products.cc``): blocks of 64
    rows of a, split over the threads, each through every 32-column panel of the packed W in
    the kernels' micro-kernel; each output row is summed in one order for any thread
    count."""
    if not load():
        raise RuntimeError(f"jrnn.native is unavailable: {why_unavailable()}")
    if a.ndim != 2 or W.ndim != 2 or a.shape[1] != W.shape[0]:
        raise ValueError(f"a, W: expected (N, K) and (K, M), got {tuple(a.shape)} and "
                         f"{tuple(W.shape)}")
    dt = jnp.float32
    call = jax.ffi.ffi_call("jrnn_rows_times_weights",
                            jax.ShapeDtypeStruct((a.shape[0], W.shape[1]), dt),
                            vmap_method="sequential")
    return call(a.astype(dt), pack_weights_backward(W.astype(dt)),
                threads=np.int64(num_threads or threads()))


# ---- the GRU (jrnn/csrc/gru.cc) ----

def _gru_forward(xs, U, b, W, b_r, carry0, *, reverse, keep_residuals=True, num_threads=None):
    """The GRU's forward loop, both products in the kernel's step: ``((hs,), (r, z, n, R_n),
    (h_T,))``, the extras None without ``keep_residuals``."""
    T, B, _ = xs.shape
    H = W.shape[1]
    dt = jnp.float32
    seq = jax.ShapeDtypeStruct((T, B, H), dt)
    kept = seq if keep_residuals else jax.ShapeDtypeStruct((0,), dt)
    call = jax.ffi.ffi_call("jrnn_gru_forward_inputs",
                            [seq, kept, kept, kept, kept, jax.ShapeDtypeStruct((B, H), dt)],
                            vmap_method="sequential")
    none = jnp.zeros((1,), dt)
    hs, r, z, n, R_n, hT = call(
        xs.astype(dt), pack_weights(U.astype(dt), H, gates=3, units=gru_units()),
        pack_weights(W.astype(dt), gates=3, units=gru_units()),
        none if b is None else b.astype(dt), none if b_r is None else b_r.astype(dt),
        carry0[0].astype(dt), reverse=bool(reverse), has_b=b is not None,
        has_br=b_r is not None, keep=bool(keep_residuals),
        threads=np.int64(num_threads or threads()))
    return (hs,), ((r, z, n, R_n) if keep_residuals else None), (hT,)


def _gru_backward(W, hs, extras, h0, d_hs, dh_final, *, reverse, num_threads=None):
    """The GRU's reverse loop: ``(dA, dR, d h0)``, dA = [dz_r | dz_z | da_n] and dR =
    [dz_r | dz_z | da_n ⊙ r], each (T, B, 3H) (the cell's step_vjp, jrnn.cells.gru)."""
    dt = jnp.float32
    T, B, H = hs.shape
    seq = jax.ShapeDtypeStruct((T, B, 3 * H), dt)
    call = jax.ffi.ffi_call("jrnn_gru_backward", [seq, seq, jax.ShapeDtypeStruct((B, H), dt)],
                            vmap_method="sequential")
    return call(hs.astype(dt), *(e.astype(dt) for e in extras), h0.astype(dt),
                d_hs.astype(dt), dh_final.astype(dt), pack_weights_backward(W.astype(dt)),
                reverse=bool(reverse), threads=np.int64(num_threads or threads()))


# ---- the tanh cell (jrnn/csrc/elman.cc) ----

def _elman_forward(xs, U, b, W, b_r, carry0, *, reverse, keep_residuals=True,
                   num_threads=None):
    """The tanh cell's forward loop, both products in the kernel's step: ``((hs,), (),
    (h_T,))`` (the cell keeps no extras; None without ``keep_residuals``)."""
    T, B, _ = xs.shape
    H = W.shape[1]
    dt = jnp.float32
    bias = _summed_bias(b, b_r)
    call = jax.ffi.ffi_call("jrnn_elman_forward_inputs",
                            [jax.ShapeDtypeStruct((T, B, H), dt),
                             jax.ShapeDtypeStruct((B, H), dt)], vmap_method="sequential")
    hs, hT = call(xs.astype(dt), pack_weights_backward(U.astype(dt).T),
                  pack_weights_backward(W.astype(dt).T),
                  jnp.zeros((1,), dt) if bias is None else bias, carry0[0].astype(dt),
                  reverse=bool(reverse), has_bias=bias is not None,
                  threads=np.int64(num_threads or threads()))
    return (hs,), (() if keep_residuals else None), (hT,)


def _elman_backward(W, hs, d_hs, dh_final, *, reverse, num_threads=None):
    """The tanh cell's reverse loop: ``(dA, d h0)``, dA = (d_hs + dh_next) ⊙ (1 − h²)
    (T, B, H) (jrnn.cells.elman's step_vjp)."""
    dt = jnp.float32
    T, B, H = hs.shape
    call = jax.ffi.ffi_call("jrnn_elman_backward", [jax.ShapeDtypeStruct((T, B, H), dt),
                                                     jax.ShapeDtypeStruct((B, H), dt)],
                            vmap_method="sequential")
    return call(hs.astype(dt), d_hs.astype(dt), dh_final.astype(dt),
                pack_weights_backward(W.astype(dt)), reverse=bool(reverse),
                threads=np.int64(num_threads or threads()))


def _main(argv) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m jrnn.native build", file=sys.stderr)
        return 2
    path = build(verbose=True)
    print(f"{path} ({isa()})")
    ok = load(build_if_missing=False)
    print("loaded" if ok else f"not loadable: {_state['error']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
