"""Sequence tasks that need no download: synthetic ones, and scikit-learn's digits.

Generators take a ``numpy.random.Generator`` and return time-major arrays.
"""
from __future__ import annotations

import numpy as np

__all__ = ["adding_problem", "digit_strings", "DIGIT_VOCAB", "load_digits"]


def adding_problem(rng: np.random.Generator, num: int, length: int):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

    Each of the ``length`` steps carries a value drawn uniformly from [0, 1) and
    a marker; exactly two markers are 1, one in each half of the sequence. The
    target is the sum of the two marked values. Predicting the mean (1.0) gives
    a mean squared error of 1/6 ≈ 0.167, the baseline a model must beat.

    Returns xs (length, num, 2) float32 and targets (num, 1) float32.
    """
    if length < 2:
        raise ValueError(f"length: expected >= 2, got {length}")
    values = rng.random((length, num), dtype=np.float32)
    first = rng.integers(0, length // 2, num)
    second = rng.integers(length // 2, length, num)
    markers = np.zeros((length, num), np.float32)
    markers[first, np.arange(num)] = 1.0
    markers[second, np.arange(num)] = 1.0
    targets = values[first, np.arange(num)] + values[second, np.arange(num)]
    return np.stack([values, markers], axis=-1), targets[:, None]


DIGIT_VOCAB = "0123456789+"


def digit_strings(rng: np.random.Generator, num: int, max_digits: int, task: str = "reverse"):
    """Character tasks on digit strings, for an encoder-decoder.

    ``"reverse"``: a string of 1..max_digits digits -> the same digits reversed.
    ``"add"``: "a+b" with a, b of 1..max_digits digits -> the digits of a + b.

    Tokens index :data:`DIGIT_VOCAB`. Returns ``(xs, x_lengths, ys, y_lengths)``:
    xs (T_x, num) and ys (T_y, num) int32, right-padded with 0, and their lengths.
    """
    if task == "reverse":
        lengths = rng.integers(1, max_digits + 1, num)
        sources = ["".join(rng.choice(list("0123456789"), n)) for n in lengths]
        targets = [s[::-1] for s in sources]
    elif task == "add":
        def number():
            return int(rng.integers(0, 10 ** int(rng.integers(1, max_digits + 1))))
        pairs = [(number(), number()) for _ in range(num)]
        sources = [f"{a}+{b}" for a, b in pairs]
        targets = [str(a + b) for a, b in pairs]
    else:
        raise ValueError(f"task: expected 'reverse' or 'add', got {task!r}")

    def pack(strings):
        lengths = np.array([len(s) for s in strings], np.int32)
        tokens = np.zeros((lengths.max(), len(strings)), np.int32)
        for i, s in enumerate(strings):
            tokens[: len(s), i] = [DIGIT_VOCAB.index(ch) for ch in s]
        return tokens, lengths

    return (*pack(sources), *pack(targets))


def load_digits():
    """scikit-learn's bundled 8×8 handwritten digits (1797 images; no download).

    Returns images (N, 8, 8) float32 scaled to [0, 1] and labels (N,) int32.
    Read row by row they are sequences of 8 steps with 8 features.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:
        raise ImportError("load_digits needs scikit-learn: pip install 'jrnn[examples]'") from e
    data = sklearn_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int32)
