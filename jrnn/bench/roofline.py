r"""The matmul roofline of a benchmark: its products' FLOPs over the machine's measured peak.

A recurrent layer's time is bounded below by its matrix products. For the suite's model
(one layer with G gates, a linear head to C classes; xs (T, B, D), N = T·B rows), the
products and their FLOPs (2 per multiply-add; Goodfellow et al., *Deep Learning*, §10.2.2
for the backward's terms) are

.. math::

    \text{forward} &= 2N\,\big(\underbrace{GH\,D}_{A = XU^\top}
        + \underbrace{GH\,H/N_h}_{R_t = h_{t-1}W^\top}
        + \underbrace{H\,C}_{o = hV^\top}\big) \\
    \text{backward} &= 2N\,\big(\underbrace{2\,HC}_{dV,\ dh = d o\,V}
        + \underbrace{2\,GH\,H/N_h}_{dR_t W,\ dW}
        + \underbrace{GH\,D}_{dU}\big) \\
    \text{training step} &= \text{forward} + \text{backward}
        = 2N\,\big(2\,GHD + 3\,GH\,H/N_h + 3\,HC\big)

with N_h the heads of a block-diagonal W (1: dense). The input's cotangent dX = dA U
is not counted: a training step differentiates the parameters only, and XLA drops it.
Pointwise work (the gates' nonlinearities, the softmax) is not counted either, so the
roofline is a floor the step cannot beat, reached only when the pointwise work and the
loop cost nothing beside the products.

The peak is measured, not taken from a data sheet: the median throughput of a large
square float32 matmul in JAX (:func:`peak_flops`, or :func:`peak_call` timed in the same
interleaved rounds as the implementations, which the benchmark suite does, so that a
machine whose speed drifts during a run is measured at the speed it had for each config).
``time_roofline = FLOPs / peak``; a run's *fraction of roofline* is ``time_roofline /
time`` (1: at the machine's limit).

>>> from jrnn.bench.roofline import flops
>>> flops(gates=1, B=1, T=1, D=1, H=1, C=1, kind="train")  # 2·(2 + 3 + 3)
16
"""
from __future__ import annotations

import statistics
import time

KINDS = ("train", "forward")


def flops(*, gates: int, B: int, T: int, D: int, H: int, C: int, kind: str,
          heads: int = 1) -> int:
    """The FLOPs of the matrix products of one training step or one forward (module doc)."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    N, GH = T * B, gates * H
    recurrent = GH * H // heads
    forward = 2 * N * (GH * D + recurrent + H * C)
    if kind == "forward":
        return forward
    return forward + 2 * N * (2 * H * C + 2 * recurrent + GH * D)


def peak_call(n: int = 2048):
    """``(call, flops)``: a call that runs one jitted (n, n) × (n, n) float32 product on the
    default device and waits for it, compiled and run once, and its 2n³ FLOPs."""
    import jax
    import jax.numpy as jnp
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), jnp.float32)
    b = jax.random.normal(k2, (n, n), jnp.float32)
    product = jax.jit(jnp.matmul)

    def call():
        jax.block_until_ready(product(a, b))
    call()
    return call, 2 * n ** 3


def peak_flops(n: int = 2048, reps: int = 10) -> float:
    """This machine's float32 matmul throughput, FLOP/s: the median over ``reps`` calls of
    :func:`peak_call`'s product."""
    call, n_flops = peak_call(n)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return n_flops / statistics.median(times)
