"""The recording hook behind :mod:`jrnn.diagnostics` (imported by the drivers; imports no jrnn module).

While a recording is active, every manual-backward layer that is traced gets
an index (:func:`register`); its backward pass sends its per-step gradient
norms to :func:`deliver` through ``jax.debug.callback``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_ACTIVE: list = []  # a stack of recorders; the innermost receives


class Recorder:
    def __init__(self):
        self.layers: list[dict] = []       # in the order the forward traced them
        self.flows: dict[int, tuple] = {}  # index -> (dh_norm, dW_norm)


def recording() -> bool:
    return bool(_ACTIVE)


def register(cell: str, reverse: bool, shape, weight: str = "W") -> int:
    """A layer's index; ``weight`` names the matrix whose per-step gradient it reports
    (the classic driver: the recurrent W; the linear driver, which has none: U)."""
    recorder = _ACTIVE[-1]
    recorder.layers.append({"cell": cell, "reverse": reverse, "shape": tuple(shape),
                            "weight": weight})
    return len(recorder.layers) - 1


def deliver(index, dh_norm, dW_norm) -> None:
    if _ACTIVE:
        _ACTIVE[-1].flows[int(index)] = (np.asarray(dh_norm), np.asarray(dW_norm))


def product_norm_squared(left, right):
    """‖Σ_b l_b r_bᵀ‖_F², a step's share of a weight gradient, without building the
    (N, D) product: ‖Σ_b l_b r_bᵀ‖² = Σ_{b,c} (l_b·l_c)(r_b·r_c).

    ``left``: a tuple of blocks (..., B, N) whose products add (the gate blocks of dR_t
    or dP_t); ``right`` (..., B, D). Leading axes (time, heads) are kept.
    """
    gram_left = sum(jnp.einsum("...bn,...cn->...bc", block, block) for block in left)
    gram_right = jnp.einsum("...bd,...cd->...bc", right, right)
    return jnp.maximum(jnp.sum(gram_left * gram_right, axis=(-2, -1)), 0)
