"""Shared test utilities: random problems and gradient comparisons."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jrnn

# Tolerances of the issue: hand-written against autodiff, relative error.
TOL = {jnp.float64: 1e-10, jnp.float32: 1e-5}


def rel_error(actual, expected) -> float:
    """Largest norm-wise relative error over matching leaves of two pytrees."""
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, a.dtype, e.shape, e.dtype)
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        scale = max(np.linalg.norm(e), 1e-300)
        worst = max(worst, float(np.linalg.norm(a - e) / scale))
    return worst


def elman_problem(seed=0, T=6, B=3, D=4, H=5, C=3, dtype=jnp.float64, batched=True):
    """Random parameters, inputs, labels and a nonzero h0 for the seeds' model."""
    k = jax.random.split(jax.random.key(seed), 4)
    p = jrnn.elman.init(k[0], D, H, C, dtype=dtype)
    # Scale W up so that gradients flow through many steps (not only the last).
    p = p._replace(W=p.W * 2.0)
    lead = (T, B) if batched else (T,)
    xs = jax.random.normal(k[1], lead + (D,), dtype)
    ys = jax.random.randint(k[2], lead, 0, C)
    h0 = 0.5 * jax.random.normal(k[3], lead[1:] + (H,), dtype)
    return p, xs, ys, h0


def numpy_seed_loss(p, xs, ys, h0):
    """The seeds' forward equations, one step at a time in numpy (an independent oracle).

    a_t = b + W h_{t-1} + U x_t; h_t = tanh(a_t); o_t = c + V h_t;
    J = Σ_t −log softmax(o_t)[y_t]. Unbatched: xs (T, D), ys (T,), h0 (H,).
    """
    U, W, b, V, c = (np.asarray(x, np.float64) for x in p)
    h, J = np.asarray(h0, np.float64), 0.0
    for x, y in zip(np.asarray(xs, np.float64), np.asarray(ys)):
        h = np.tanh(b + W @ h + U @ x)
        o = c + V @ h
        o = o - o.max()
        J -= o[y] - np.log(np.exp(o).sum())
    return J
