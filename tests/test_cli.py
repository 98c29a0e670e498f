"""The `jrnn` command: help, train → sample, gradcheck, bench, and its errors."""
import jax
import pytest

from jrnn import checkpoint, cli

TINY = ["--max-chars", "20000", "--hidden", "12", "--seq", "8", "--batch", "4", "--quiet"]


@pytest.mark.parametrize("command,expected", [
    ("train", ["--cell", "--hidden", "--lr", "--clip", "--steps", "--checkpoint-dir",
               "--resume", "--devices"]),
    ("sample", ["--checkpoint-dir", "--temperature", "--prompt", "--length"]),
    ("gradcheck", ["--cell", "--arch", "--T", "--H", "--dtype"]),
    ("bench", ["--remat"]),
])
def test_help_lists_the_options(command, expected, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in expected:
        assert option in text


def test_train_writes_checkpoints_and_plot_then_sample_reads_them(tmp_path, capsys):
    d = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--steps", "6", "--checkpoint-every", "3",
                     "--checkpoint-dir", d, "--sample", "20"]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "--- sample" in out
    assert checkpoint.list_steps(d) == [3, 6]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    assert cli.main(["sample", "--checkpoint-dir", d, "--prompt", "def", "--length", "30"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("def") and len(text) == 33


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    d = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--steps", "2", "--checkpoint-dir", d, "--sample", "0"]) == 0
    assert cli.main(["train", *TINY, "--steps", "2", "--hidden", "16", "--checkpoint-dir", d,
                     "--resume", "--sample", "0"]) == 1
    assert "hidden=12" in capsys.readouterr().err


def test_non_finite_training_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, capsys):
    d = str(tmp_path / "run")
    # Adam moves every weight by about lr: 1e38 overflows the logits at step 2.
    assert cli.main(["train", *TINY, "--steps", "10", "--lr", "1e38", "--checkpoint-every", "1",
                     "--checkpoint-dir", d, "--sample", "0"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss or gradient at step 2" in err and "step 1, is intact" in err
    assert checkpoint.list_steps(d) == [1]
    assert checkpoint.metadata(checkpoint.path_for(d, 1))["step"] == 1  # intact


def test_sample_without_checkpoints_says_so(tmp_path, capsys):
    assert cli.main(["sample", "--checkpoint-dir", str(tmp_path)]) == 1
    assert "no checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("cell,arch", [("lstm", "deep-bidirectional"), ("gru", "encoder-decoder"),
                                       ("elman", "truncated-bptt")])
def test_gradcheck_reports_every_gradient(cell, arch, capsys):
    assert cli.main(["gradcheck", "--cell", cell, "--arch", arch, "--T", "7", "--B", "3",
                     "--D", "2", "--H", "3", "--C", "4"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "loss" in out and "params" in out


def test_gradcheck_fails_above_the_tolerance(capsys):
    assert cli.main(["gradcheck", "--T", "4", "--tolerance", "1e-300"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_bench_passes_its_arguments_on(tmp_path):
    assert cli.main(["bench", "--remat", "--", "--T", "32", "--B", "2", "--D", "3", "--H", "4",
                     "--C", "3", "--segments", "8", "--reps", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{jax.default_backend()}_remat.json").exists()
