"""Character-level text: a corpus that is always present, a vocabulary, streams.

The default corpus is the Python standard library's own source, found through
``sysconfig``: every machine that runs jrnn has it, so the demo needs no
download. It is read in sorted file order, so the same Python version gives the
same text.
"""
from __future__ import annotations

import os
import sysconfig
from typing import NamedTuple

import numpy as np

__all__ = ["CharVocab", "stdlib_source", "streams", "unigram_entropy"]


def stdlib_source(max_chars: int = 2_000_000) -> str:
    """About ``max_chars`` characters of the standard library's top-level ``*.py`` files."""
    root = sysconfig.get_paths()["stdlib"]
    names = sorted(n for n in os.listdir(root) if n.endswith(".py"))
    if not names:
        raise FileNotFoundError(f"no *.py files in the standard library folder {root}")
    parts, size = [], 0
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
        size += len(parts[-1])
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]


class CharVocab(NamedTuple):
    """The sorted set of characters of a text; token i is ``chars[i]``."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        if not text:
            raise ValueError("text: expected a non-empty string")
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, name: str = "text") -> np.ndarray:
        """Token ids of ``text``; ``name`` is what an error about it calls it."""
        index = {ch: i for i, ch in enumerate(self.chars)}
        unknown = set(text) - index.keys()
        if unknown:
            raise ValueError(f"{name}: characters not in the vocabulary: "
                             f"{''.join(sorted(unknown)[:10])!r}")
        return np.fromiter((index[ch] for ch in text), np.int32, len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))


def streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cuts a token sequence into ``batch_size`` contiguous streams, time-major (N, B).

    Stream j is ``ids[j*N:(j+1)*N]``: each row of a truncated-BPTT chunk
    continues the text of the same row in the chunk before. The tail that does
    not fill a row is dropped.
    """
    ids = np.asarray(ids)
    n = len(ids) // batch_size
    if n < 2:
        raise ValueError(f"ids: expected at least {2 * batch_size} tokens for "
                         f"batch_size={batch_size}, got {len(ids)}")
    return ids[: n * batch_size].reshape(batch_size, n).T.copy()


def unigram_entropy(ids, vocab_size: int) -> float:
    """Entropy (nats per token) of the empirical token distribution: the loss of
    a model that ignores context, the baseline a language model must beat."""
    counts = np.bincount(np.asarray(ids).reshape(-1), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
