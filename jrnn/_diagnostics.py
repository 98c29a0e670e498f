"""The recording hook behind :mod:`jrnn.diagnostics` (imported by the driver, imports nothing).

While a recording is active, every manual-backward layer that is traced gets
an index (:func:`register`); its backward pass sends its per-step gradient
norms to :func:`deliver` through ``jax.debug.callback``.
"""
from __future__ import annotations

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
