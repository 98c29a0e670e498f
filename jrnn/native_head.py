r"""The softmax head and its loss as one C++ call on the CPU (``jrnn/csrc/head.cc``, built and
loaded with :mod:`jrnn.native`): ``jrnn.heads.softmax_nll(..., kernel="native")``, which the
models use when their ``kernel`` is ``"native"``.

For the N = ∏ hs.shape[:-1] rows of hs with labels y,

    o_n = h_n Vᵀ + c,    J = Σ_n (log Σ_v exp o_n,v − o_n,y_n),
    ∂J/∂o_n = softmax(o_n) − onehot(y_n)      (the backward's one residual),

the logits of a tile of rows computed by the kernels' panel product and reduced while they
are in the cache, where XLA writes the (N, C) logits and reads them back for each reduction.
The terms are summed in double (per tile of rows, then the tiles in order, so that J does not
depend on the thread count); XLA sums them in float32. A label outside [0, C) gives NaN, a
masked row 0, as on the XLA path; a row with a NaN or an infinite largest logit follows
``jax.nn.logsumexp``.

The backward (:func:`backward`) scales by the cotangent g of J the small operands, not the
(N, C) residual: dV = g d_oᵀ H and dJ/dhs = d_o (g V), two native calls
(:func:`jrnn.native.transposed_products`, :func:`jrnn.native.rows_times_weights`) where
XLA:CPU runs both products, their contraction over N rows or C classes, below its square
matmul's speed; dc = g Σ_n d_o,n.

Limits (:func:`unsupported`): float32 V, c and hs, no ``matmul_dtype`` other than float32,
the CPU backend.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["unsupported", "softmax_nll", "backward"]


def unsupported(V, hs, matmul_dtype=None) -> Optional[str]:
    """Why the native head cannot run, or None if it can."""
    from jrnn import native
    if jax.default_backend() != "cpu":
        return "the native head runs on the CPU backend only"
    dtypes = {jnp.dtype(V.dtype), jnp.dtype(hs.dtype)}
    if matmul_dtype is not None:
        dtypes.add(jnp.dtype(matmul_dtype))
    if dtypes != {jnp.dtype(jnp.float32)}:
        names = ", ".join(sorted(d.name for d in dtypes))
        return f"parameters/products of dtype {names} (float32 only)"
    if not native.available():
        return f"the native library is unavailable ({native.why_unavailable()})"
    return None


def softmax_nll(V, c, hs, ys, mask=None, *, keep_gradient: bool,
                num_threads: Optional[int] = None):
    """``(J, d_o)``: the summed NLL of ys under softmax(hs Vᵀ + c), and ∂J/∂o with the shape
    hs.shape[:-1] + (C,) (None without ``keep_gradient``). V (C, H), c (C,), hs (..., H),
    ys integer labels of shape hs.shape[:-1], mask None or boolean of that shape. The
    arguments are not checked here: :func:`jrnn.heads.softmax_nll` checks them."""
    from jrnn import native  # imported here, so that `python -m jrnn.native` finds it unloaded
    if not native.load():
        raise RuntimeError(f"jrnn.native is unavailable: {native.why_unavailable()}")
    C, H = V.shape
    rows = hs.shape[:-1]
    N = int(np.prod(rows, dtype=np.int64))
    dt = jnp.float32
    labels = ys.reshape(N)
    # a label beyond int32 must not wrap into [0, C)
    labels = jnp.where((labels >= 0) & (labels < C), labels, -1).astype(jnp.int32)
    has_mask = mask is not None
    outs = [jax.ShapeDtypeStruct((), dt),
            jax.ShapeDtypeStruct((N, C) if keep_gradient else (0,), dt)]
    call = jax.ffi.ffi_call("jrnn_softmax_nll", outs, vmap_method="sequential")
    J, d_o = call(hs.reshape(N, H).astype(dt), native.pack_weights_backward(V.astype(dt).T),
                  c.astype(dt), labels,
                  mask.reshape(N) if has_mask else jnp.zeros((0,), jnp.bool_),
                  has_mask=has_mask, keep=bool(keep_gradient),
                  threads=np.int64(num_threads or native.threads()))
    return J, (d_o.reshape(*rows, C) if keep_gradient else None)


def backward(d_o, hs, V, g):
    """``(dV, dc, dJ/dhs)`` for the cotangent g of J, from the forward's ``d_o`` (..., C),
    hs (..., H) and V (C, H), all float32."""
    from jrnn import native
    C, H = V.shape
    rows_d, rows_h = d_o.reshape(-1, C), hs.reshape(-1, H)
    scale = jnp.asarray(g, jnp.float32)  # g may be a Python float (vjp_fn(1.0))
    (dVt,), _ = native.transposed_products([(rows_h, rows_d)])  # H wide, C narrow: faster
    d_hs = native.rows_times_weights(rows_d, V * scale)
    return dVt.T * scale, rows_d.sum(0) * scale, d_hs.reshape(hs.shape)
