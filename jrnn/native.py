r"""Native CPU kernels for the LSTM's two loops: the forward recurrence and the reverse
loop of BPTT, each as one XLA FFI custom call (C++, AVX2/FMA, ``jrnn/csrc/lstm.cc``).

The scan path runs one XLA loop iteration per step, whose recurrent product
R_t = h_{t−1} Wᵀ XLA:CPU computes on one core (docs/cpu_performance.md). Here one call
runs every step: W packed once into panels of 8 hidden units × 4 gates, each step's
product in a register-blocked micro-kernel with the gate math fused after it, the hidden
units split over ``threads`` threads (each pinned to its own CPU for the call) with one spin
barrier per step. ``jrnn.rnn(..., kernel="native")`` runs :func:`forward_inputs` (the input
projection x_t Uᵀ in the same micro-kernel, so that no (T, B, 4H) projection is written)
and :func:`gradients`: the reverse loop (:func:`backward`: the cell's step_vjp per unit,
then dh_{t−1} = dz W) writing the four gates' dz side by side, after which dW, dU (with the
bias) and dX are one product each. :func:`forward` (the projection hoisted, the interface
of :func:`jrnn.persistent.forward`) is kept for the benchmark and the tests.

The compiled library is optional. ``python -m jrnn.native build`` compiles it with the
system's C++ compiler (``$CXX``, else ``g++``) against jaxlib's FFI headers, into a file
named by a hash of the source, the flags and jaxlib's version; :func:`load` builds it on
first use unless ``JRNN_NATIVE_BUILD=0``. :func:`available` says whether it can be loaded,
:func:`why_unavailable` why not. It needs an x86-64 CPU with AVX2 and FMA.

Limits (:func:`unsupported`): the LSTM cell only, float32 parameters and products, no
mask/lengths/reset, no recurrent dropout or zoneout, no gradient-flow recording, no
projection or heads; no ``vmap`` beyond a sequential loop, no forward mode.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import _matmul, recurrence

__all__ = ["available", "why_unavailable", "load", "build", "unsupported", "forward",
           "forward_inputs", "backward", "gradients", "pack_weights", "pack_weights_backward",
           "threads"]

_SOURCE = Path(__file__).with_name("csrc") / "lstm.cc"
_TARGET = "jrnn_lstm_forward"
_TARGET_X = "jrnn_lstm_forward_inputs"
_TARGET_B = "jrnn_lstm_backward"
_state = {"loaded": False, "error": None}


def _flags() -> list:
    return ["-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-std=c++20", "-pthread",
            "-isystem", jax.ffi.include_dir()]


def _library_path() -> Path:
    """Where the library lives: a name keyed by the source, the flags and jaxlib's version
    (the FFI ABI), next to the source if writable, else in the user's cache."""
    import jaxlib
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_flags()).encode()
                         + jaxlib.__version__.encode()).hexdigest()[:16]
    name = f"_lstm-{key}.so"
    here = _SOURCE.parent
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
    cmd = [cxx, *_flags(), str(_SOURCE), "-o", str(tmp)]
    if verbose:
        print(" ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"no C++ compiler ({cxx}): {e}") from e
    if proc.returncode != 0:
        raise RuntimeError(f"building {_SOURCE.name} failed:\n{proc.stderr[-4000:]}")
    os.replace(tmp, out)
    return out


def _cpu_supported() -> Optional[str]:
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"an x86-64 CPU with AVX2 and FMA is needed, not {platform.machine()}"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None  # cannot tell: try
    if " avx2" not in flags or " fma" not in flags:
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
        jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.JrnnLstmForward),
                                    platform="cpu")
        jax.ffi.register_ffi_target(_TARGET_X, jax.ffi.pycapsule(lib.JrnnLstmForwardX),
                                    platform="cpu")
        jax.ffi.register_ffi_target(_TARGET_B, jax.ffi.pycapsule(lib.JrnnLstmBackward),
                                    platform="cpu")
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
    if cell.name != "lstm":
        return f"cell {cell.name!r}: the native kernel covers the LSTM only"
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


def pack_weights(W, H: Optional[int] = None):
    """A gate-stacked weight (4H, K) -> (⌈H/8⌉, K, 4, 8): for each block of 8 hidden units,
    row k holds the four gates' 8 weights on input k side by side (units past H zero).
    W (4H, H) and U (4H, D) are packed alike."""
    K = W.shape[1]
    H = W.shape[0] // 4 if H is None else H
    nb = -(-H // 8)
    Wg = W.reshape(4, H, K)
    Wg = jnp.pad(Wg, ((0, 0), (0, nb * 8 - H), (0, 0)))
    return Wg.reshape(4, nb, 8, K).transpose(1, 3, 0, 2)


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
    T, B, _ = xs.shape
    H = W.shape[1]
    dt = jnp.float32
    bias = None if b is None else b.astype(dt)
    if b_r is not None:
        bias = b_r.astype(dt) if bias is None else bias + b_r.astype(dt)
    has_bias = bias is not None
    call = jax.ffi.ffi_call(_TARGET_X, _out_types(T, B, H, keep_residuals),
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
    call = jax.ffi.ffi_call(_TARGET, _out_types(T, B, H, keep_residuals),
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
    call = jax.ffi.ffi_call(_TARGET_B, [jax.ShapeDtypeStruct((T, B, 4 * H), dt), row, row],
                            vmap_method="sequential")
    dA, dh0, dc0 = call(cs.astype(dt), *(e.astype(dt) for e in extras), carry0[1].astype(dt),
                        d_hs.astype(dt), d_final[0].astype(dt), d_final[1].astype(dt),
                        pack_weights_backward(W.astype(dt)),
                        reverse=bool(reverse), threads=np.int64(num_threads or threads()))
    return dA, (dh0, dc0)


def gradients(xs, U, W, b, b_r, carries, extras, carry0, d_hs, d_final, *, reverse: bool):
    """A layer's gradients from its forward's residuals: the reverse loop (:func:`backward`),
    then, over all N = T·B rows of dA (N, 4H),

        dW = dAᵀ H_in,  dU = dAᵀ X,  db = db_r = Σ_n dA_n,  dX = dA U,

    H_in the state each step read (h_{t−1}; h_{t+1} right to left). Each is one product:
    the gates side by side in dA make dW, dU and dX one product each instead of four, and
    dW and dU multiply transposed copies of the narrow operands (:func:`jrnn._matmul.
    transposed_products`). Returns ``(dU, dW, db, db_r, dxs, d_carry0)`` (None for an absent
    bias)."""
    dA, d_carry0 = backward("lstm", W, carries, extras, carry0, d_hs, d_final, reverse=reverse)
    T, B, D = xs.shape
    rows = dA.reshape(T * B, dA.shape[-1])
    h_in = recurrence.states_read(carries[0], carry0[0], reverse).reshape(T * B, -1)
    x_rows = xs.reshape(T * B, D)
    with_bias = b is not None or b_r is not None
    if with_bias:  # the bias's gradient from the same product: a column of ones
        x_rows = jnp.concatenate([x_rows, jnp.ones((T * B, 1), x_rows.dtype)], axis=1)
    (dW,) = _matmul.transposed_products([rows], h_in)
    (dU,) = _matmul.transposed_products([rows], x_rows)
    d_bias = dU[:, -1] if with_bias else None
    dU = dU[:, :D] if with_bias else dU
    dxs = (rows @ U).reshape(T, B, U.shape[1])
    return (dU, dW, None if b is None else d_bias, None if b_r is None else d_bias, dxs,
            d_carry0)


def _main(argv) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m jrnn.native build", file=sys.stderr)
        return 2
    path = build(verbose=True)
    print(path)
    ok = load(build_if_missing=False)
    print("loaded" if ok else f"not loadable: {_state['error']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
