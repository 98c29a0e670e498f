"""The corpus helpers and the char-LM demo end to end (tiny sizes)."""
import math
import pathlib
import runpy

import numpy as np
import pytest

from jrnn.data import CharVocab, stdlib_source, streams, unigram_entropy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_vocab_round_trip():
    vocab = CharVocab.from_text("hello world")
    assert vocab.size == 8
    assert vocab.decode(vocab.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("z")


def test_streams_are_contiguous_and_time_major():
    ids = np.arange(103)
    s = streams(ids, 4)
    assert s.shape == (25, 4)
    np.testing.assert_array_equal(s[:, 1], np.arange(25, 50))


def test_unigram_entropy():
    assert math.isclose(unigram_entropy(np.arange(8), 8), math.log(8))
    assert unigram_entropy(np.zeros(5, np.int64), 3) == 0.0


def test_stdlib_corpus_is_there():
    text = stdlib_source(10_000)
    assert len(text) == 10_000 and "import" in text


def test_char_lm_demo_runs_and_beats_nothing_silly(capsys):
    module = runpy.run_path(str(ROOT / "scripts" / "char_lm.py"))
    code = module["main"](["--max-chars", "20000", "--steps", "30", "--hidden", "16",
                           "--seq", "16", "--batch", "4", "--sample", "20"])
    out = capsys.readouterr().out
    assert code == 0
    assert "validation loss" in out and "unigram baseline" in out
