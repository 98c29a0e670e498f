"""Corpora and tasks, and every script end to end at tiny sizes."""
import json
import math
import pathlib
import runpy

import numpy as np
import pytest

from jrnn.data import (DIGIT_VOCAB, CharVocab, adding_problem, digit_strings, load_digits,
                       stdlib_source, streams, unigram_entropy)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_vocab_round_trip():
    vocab = CharVocab.from_text("hello world")
    assert vocab.size == 8
    assert vocab.decode(vocab.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("z")


def test_streams_are_contiguous_and_time_major():
    s = streams(np.arange(103), 4)
    assert s.shape == (25, 4)
    np.testing.assert_array_equal(s[:, 1], np.arange(25, 50))


def test_unigram_entropy():
    assert math.isclose(unigram_entropy(np.arange(8), 8), math.log(8))
    assert unigram_entropy(np.zeros(5, np.int64), 3) == 0.0


def test_stdlib_corpus_is_there():
    text = stdlib_source(10_000)
    assert len(text) == 10_000 and "import" in text


def test_adding_problem_targets_are_the_marked_sums():
    xs, targets = adding_problem(np.random.default_rng(0), 50, 20)
    assert xs.shape == (20, 50, 2) and targets.shape == (50, 1)
    markers = xs[..., 1]
    np.testing.assert_array_equal(markers.sum(0), 2)
    assert np.all(markers[:10].sum(0) == 1)  # one marker in each half
    np.testing.assert_allclose(targets[:, 0], (xs[..., 0] * markers).sum(0), rtol=1e-6)


@pytest.mark.parametrize("task", ["reverse", "add"])
def test_digit_strings(task):
    xs, x_lengths, ys, y_lengths = digit_strings(np.random.default_rng(1), 30, 3, task)
    for i in range(30):
        source = "".join(DIGIT_VOCAB[t] for t in xs[: x_lengths[i], i])
        target = "".join(DIGIT_VOCAB[t] for t in ys[: y_lengths[i], i])
        expected = source[::-1] if task == "reverse" else str(eval(source))
        assert target == expected


def test_digits_dataset():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert 0.0 <= images.min() and images.max() == 1.0 and set(labels) == set(range(10))


def run_script(name, argv, capsys):
    code = runpy.run_path(str(ROOT / "scripts" / name))["main"](argv)
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_char_lm_demo(capsys):
    out = run_script("char_lm.py", ["--max-chars", "20000", "--steps", "30", "--hidden", "16",
                                    "--seq", "16", "--batch", "4", "--sample", "20"], capsys)
    assert "validation loss" in out and "unigram baseline" in out


def test_digits_script(capsys):
    out = run_script("digits.py", ["--epochs", "1", "--hidden", "8"], capsys)
    assert "test accuracy" in out


def test_adding_script(capsys, tmp_path):
    out = run_script("adding.py", ["--lengths", "6", "--steps", "5", "--hidden", "8",
                                   "--out", str(tmp_path / "adding.md")], capsys)
    assert "| elman | 6 |" in out and (tmp_path / "adding.json").exists()


def test_seq2seq_script(capsys):
    out = run_script("seq2seq.py", ["--steps", "5", "--hidden", "8", "--max-digits", "2"], capsys)
    assert "exact-match accuracy" in out


def test_regularisation_script(capsys, tmp_path):
    """The worked example at a tiny budget: both models train and are scored, the table
    and its JSON are written."""
    out = run_script("regularisation.py", ["--max-chars", "20000", "--steps", "3", "--hidden",
                                           "12", "--seq", "8", "--batch", "4", "--zoneout",
                                           "0.1", "--quiet", "--out", str(tmp_path / "r.md")],
                     capsys)
    assert "| none |" in out and "zoneout 0.1" in out and "the validation loss by" in out
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["dropout"] for r in rows] == [0.0, 0.3] and rows[1]["zoneout"] == 0.1
    assert rows[0]["validation"] != rows[1]["validation"]


def test_modern_cells_script(capsys, tmp_path):
    """The equal-time comparison at a tiny budget: every cell is probed, trained under
    the time limit and scored; the table and its JSON are written."""
    out = run_script("modern_cells.py", ["--max-chars", "20000", "--seconds", "0.5",
                                         "--probe-steps", "2", "--hidden", "8", "--seq", "8",
                                         "--batch", "4", "--quiet",
                                         "--out", str(tmp_path / "m.md")], capsys)
    rows = json.loads((tmp_path / "m.json").read_text())
    assert [r["cell"] for r in rows] == ["lstm", "mingru", "minlstm", "slstm"]
    for r in rows:
        assert 1 <= r["steps"] <= r["schedule"] and math.isfinite(r["validation"])
        assert r["steps"] == round(r["steps_per_second"] * r["seconds"])  # done, not planned
        assert r["time_limit"] == 0.5
    assert "| minlstm |" in out and (tmp_path / "m.md").read_text().count("\n| ") == 5
