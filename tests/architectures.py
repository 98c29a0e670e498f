"""The descriptor table at the tests' sizes: see :mod:`jrnn.gradcheck`.

``tests/test_architectures.py`` runs every entry with every registered cell.
"""
from __future__ import annotations

import dataclasses

from jrnn.gradcheck import ARCHITECTURES, TRUNCATED, Arch, Sizes, pairs

SIZES = Sizes(T=5, B=3, D=3, H=4, C=3)
T, B, D, H, C = SIZES
LENGTHS = SIZES.lengths  # [5, 3, 1]: ragged, including a one-step sequence


def _at_test_sizes(arch: Arch) -> Arch:
    return dataclasses.replace(arch, build=lambda key, cell, dtype: arch.build(key, cell, dtype,
                                                                                SIZES))


ARCHS = {name: _at_test_sizes(a) for name, a in ARCHITECTURES.items()}
TBPTT = {name: _at_test_sizes(a) for name, a in TRUNCATED.items()}
PAIRS = pairs(list(ARCHS))          # (entry, cell): each entry with each cell it accepts
TBPTT_PAIRS = pairs(list(TBPTT))
