"""Every product in jrnn goes through :func:`einsum`, so one option sets their precision.

``matmul_dtype=None`` multiplies in the arrays' own dtype. ``jnp.bfloat16``
casts both operands to bfloat16 and accumulates in the first operand's dtype
(float32 for float32 parameters): the parameters, the state, the pointwise
math and every gradient stay in float32, while the matmuls run on bfloat16
inputs, as GPU tensor cores and TPUs like them.

On a GPU, float32 matmuls with ``matmul_dtype=None`` already run as TF32
unless ``jax.default_matmul_precision("highest")`` is set: see docs/precision.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MATMUL_DTYPES = (None, "bfloat16", "float16", "float32", "float64")


def check(matmul_dtype):
    """None, or the dtype as a ``jnp.dtype`` (hashable, for static arguments)."""
    if matmul_dtype is None:
        return None
    dtype = jnp.dtype(matmul_dtype)
    if dtype.name not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype: expected one of {MATMUL_DTYPES}, got {dtype.name!r}")
    return dtype


def einsum(spec: str, a, b, matmul_dtype=None):
    """``jnp.einsum(spec, a, b)``, on ``matmul_dtype`` inputs when one is given."""
    if matmul_dtype is None:
        return jnp.einsum(spec, a, b)
    return jnp.einsum(spec, a.astype(matmul_dtype), b.astype(matmul_dtype),
                      preferred_element_type=jnp.result_type(a))


def transposed_products(ds, x) -> tuple:
    """dᵀ x for each d (N, G) of ``ds`` and x (N, P), narrow (P ≪ G).

    XLA:CPU multiplies two row-major operands that share their leading (row) axis up to
    2.3× slower than the plain product of a transposed copy, so on the CPU xᵀ is copied
    once (N·P numbers), shared by every d, and each product is xᵀ d, transposed back (P·G
    numbers); the optimisation barriers keep XLA's simplifier from folding either transpose
    back into the product (the linear recurrences' whole sequential training step
    1.14–1.22× faster, benchmarks/NOTES.md). Elsewhere one product each: GPU libraries read
    transposed operands at full speed."""
    if jax.default_backend() != "cpu":
        return tuple(d.T @ x for d in ds)
    x_t = lax.optimization_barrier(x.T)
    return tuple(lax.optimization_barrier(x_t @ d).T for d in ds)
