"""The `jrnn` command: help, train → sample, gradcheck, bench, and its errors."""
import dataclasses

import jax
import numpy as np
import pytest

from jrnn import checkpoint, cli

TINY = ["--max-chars", "20000", "--hidden", "12", "--seq", "8", "--batch", "4", "--quiet"]


@pytest.mark.parametrize("command,expected", [
    ("train", ["--cell", "--hidden", "--lr", "--clip", "--steps", "--checkpoint-dir",
               "--resume", "--devices", "--dropout", "--input-dropout",
               "--recurrent-dropout", "--weight-drop", "--zoneout", "--zoneout-cell",
               "--time-limit", "--kernel"]),
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


def test_regularisation_is_saved_a_resume_must_repeat_it_and_sample_applies_it(tmp_path,
                                                                                capsys):
    from jrnn import charlm
    from jrnn.dropout import Dropout
    d = str(tmp_path / "run")
    options = ["--cell", "lstm", "--layers", "2", "--dropout", "0.3", "--zoneout", "0.1",
               "--checkpoint-dir", d, "--sample", "0"]
    assert cli.main(["train", *TINY, "--steps", "2", *options]) == 0
    _, _, meta = charlm.load(d)
    assert charlm.saved_config(meta).regularisation() == Dropout(between=0.3, zoneout=0.1)
    capsys.readouterr()
    assert cli.main(["train", *TINY, "--steps", "2", *options[:-4], "--zoneout", "0.2",
                     "--checkpoint-dir", d, "--resume", "--sample", "0"]) == 1
    assert "zoneout=0.1" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint-dir", d, "--length", "20", "--temperature", "0"]
                    ) == 0
    greedy = capsys.readouterr().out
    params, vocab, _ = charlm.load(d)
    expected = charlm.generate(params, vocab, None, "def ", 20, 0.0,
                               Dropout(between=0.3, zoneout=0.1))
    assert greedy.strip() == ("def " + expected).strip()


@pytest.mark.parametrize("heads", ["1", "2"])
def test_zoneout_trains_and_samples_with_a_projection(heads, tmp_path, capsys):
    """--zoneout with --proj-size (and --heads: W block-diagonal over P/heads slices of h):
    h's mask is P wide, c's H wide; sampling (evaluation) uses each one's expectation."""
    d = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--steps", "2", "--cell", "lstm", "--proj-size", "4",
                     "--heads", heads, "--zoneout", "0.1", "--zoneout-cell", "0.05",
                     "--checkpoint-dir", d, "--sample", "0"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", "--checkpoint-dir", d, "--length", "10", "--temperature", "0"]
                    ) == 0
    assert len(capsys.readouterr().out.strip()) >= 10


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
                                       ("elman", "truncated-bptt"),
                                       ("minlstm", "layer-reverse-lengths-parallel-associative"),
                                       ("slstm", "deep-bidirectional-heads"),
                                       ("lstm", "deep-bidirectional-projection"),
                                       ("lstm", "deep-bidirectional-dropout-heads-projection")])
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


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_linear_cells_train_with_input_and_between_layer_dropout(cell, capsys, tmp_path):
    """Into a run folder too: the loss plot, the gradient-flow plot (read from the linear
    driver's adjoint scan) and the checkpoints are written."""
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--steps", "2", "--cell", cell, "--layers", "2",
                     "--input-dropout", "0.2", "--dropout", "0.3", "--sample", "10",
                     "--checkpoint-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "input_dropout=0.2" in out
    assert "gradient flow not drawn" not in out and (run / "loss.png").exists()
    assert (run / "gradient_flow.png").stat().st_size > 1000
    assert checkpoint.list_steps(str(run))


def test_a_time_limited_run_stops_saves_and_resumes_exactly(tmp_path, capsys):
    """A limit shorter than any step stops a new run after its first step (with a
    checkpoint); resumed under the same limit it trains nothing; resumed without one it
    ends bit for bit where a run never limited ends."""
    from jrnn import charlm
    d = str(tmp_path / "limited")
    common = ["train", *TINY, "--steps", "4", "--sample", "0"]
    assert cli.main([*common, "--time-limit", "1e-9", "--checkpoint-dir", d]) == 0
    assert "stopped by the time limit" in capsys.readouterr().out
    assert checkpoint.list_steps(d) == [1]
    _, _, meta = charlm.load(d)
    assert meta["train_seconds"] > 0 and len(meta["losses"]) == 1
    assert cli.main([*common, "--time-limit", "1e-9", "--checkpoint-dir", d, "--resume"]) == 0
    assert checkpoint.list_steps(d) == [1]
    assert cli.main([*common, "--checkpoint-dir", d, "--resume"]) == 0
    assert cli.main([*common, "--checkpoint-dir", str(tmp_path / "whole")]) == 0
    resumed, whole = charlm.load(d), charlm.load(str(tmp_path / "whole"))
    assert resumed[2]["losses"] == whole[2]["losses"] and len(whole[2]["losses"]) == 4
    for a, b in zip(jax.tree.leaves(resumed[0]), jax.tree.leaves(whole[0])):
        assert (a == b).all()


# --- The front door: every user mistake is one or two lines on stderr, never a traceback ---

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained run, and the kinds of bad files a user points the CLI at."""
    root = tmp_path_factory.mktemp("front_door")
    run = str(root / "run")
    assert cli.main(["train", *TINY, "--steps", "2", "--checkpoint-dir", run, "--sample", "0"]) == 0
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "nul.txt").write_bytes(b"abc\0def" * 100)
    (root / "empty.txt").write_text("")
    (root / "short.txt").write_text("hello world\n" * 10)
    (root / "folder").mkdir()
    (root / "garbage").mkdir()
    (root / "garbage" / "step_000000001.npz").write_bytes(b"not a checkpoint at all")
    return root


BAD = [  # (argv, exit status, what stderr must name); {r} is the files fixture's folder
    (["train", "--hidden", "0"], 2, "--hidden: expected an integer >= 1, got 0"),
    (["train", "--sample", "-5"], 2, "--sample"),
    (["train", "--temperature", "-1"], 2, "--temperature"),
    (["train", "--temperature", "nan"], 2, "--temperature"),
    (["train", "--lr", "0"], 2, "--lr"),
    (["train", "--steps", "many"], 2, "expected an integer, got 'many'"),
    (["train", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["train", "--resume"], 2, "--resume needs --checkpoint-dir"),
    (["train", "--dropout", "1"], 2, "--dropout: expected a probability in [0, 1), got 1"),
    (["train", "--zoneout", "-0.1"], 2, "--zoneout: expected a probability in [0, 1)"),
    (["train", "--recurrent-dropout", "nan"], 2, "--recurrent-dropout: expected a probability"),
    (["train", "--weight-drop", "half"], 2, "--weight-drop: expected a probability, got 'half'"),
    (["train", "--input-dropout", "1.5"], 2, "--input-dropout: expected a probability"),
    (["train", "--dropout", "0.2", "--layers", "1"], 2, "--dropout: acts between stacked"),
    (["train", "--cell", "gru", "--zoneout-cell", "0.1"], 2, "--zoneout-cell: zones out the "
     "LSTM's cell state c, and cell 'gru' has none"),
    (["train", "--text", "{r}/missing.txt"], 1, "missing.txt: no such file"),
    (["train", "--text", "{r}/folder"], 1, "folder is a folder"),
    (["train", "--text", "{r}/binary.bin"], 1, "binary.bin is not UTF-8 text"),
    (["train", "--text", "{r}/nul.txt"], 1, "nul.txt looks binary"),
    (["train", "--text", "{r}/empty.txt"], 1, "empty.txt is empty"),
    (["train", "--text", "{r}/short.txt", *TINY], 1, "validation share"),
    (["train", *TINY, "--seq", "100000"], 1, "validation share"),
    (["train", *TINY, "--prompt", "\u2603"], 1, "prompt: characters not in the vocabulary"),
    (["train", *TINY, "--prompt", ""], 1, "prompt: expected at least one character"),
    (["train", *TINY, "--devices", "4096"], 1, "devices: asked for 4096"),
    (["train", *TINY, "--steps", "2", "--checkpoint-dir", "{r}/run"], 1, "already holds a run"),
    (["train", *TINY, "--checkpoint-dir", "{r}/empty.txt"], 1, "empty.txt is a file"),
    (["train", *TINY, "--heads", "5"], 1, "heads: expected a divisor of hidden_size = 12, got 5"),
    (["train", *TINY, "--cell", "gru", "--proj-size", "4"], 1, "proj_size: a projection needs"),
    (["train", *TINY, "--proj-size", "12", "--cell", "lstm"], 1,
     "proj_size: expected 0 < proj_size < hidden_size = 12"),
    (["train", *TINY, "--cell", "lstm", "--proj-size", "4", "--heads", "3"], 1,
     "heads: with a projection each head reads its own proj_size/heads units of h, so heads "
     "must divide proj_size = 4; got 3"),
    (["train", "--heads", "0"], 2, "--heads"),
    (["train", "--cell", "mingru", "--recurrent-dropout", "0.1"], 2, "--recurrent-dropout: "
     "the linear cell 'mingru' takes input and between-layer dropout only"),
    (["train", "--cell", "minlstm", "--weight-drop", "0.1"], 2, "--weight-drop: the linear "
     "cell 'minlstm' takes input and between-layer dropout only"),
    (["train", "--cell", "mingru", "--zoneout", "0.1"], 2, "--zoneout: the linear cell "
     "'mingru' takes input and between-layer dropout only: zoneout is not implemented"),
    (["train", *TINY, "--kernel", "native", "--cell", "layernorm_lstm"], 2,
     "--kernel: 'native' cannot run this layer: cell 'layernorm_lstm': the native kernels "
     "cover lstm, gru, elman only; use 'auto'"),
    (["train", *TINY, "--kernel", "native", "--devices", "2"], 2,
     "--kernel: 'native' runs on one device, this run has devices=2; use 'auto'"),
    (["train", "--kernel", "fast"], 2, "--kernel: invalid choice: 'fast'"),
    (["train", "--time-limit", "0"], 2, "--time-limit: expected a finite number > 0, got 0"),
    (["train", "--time-limit", "inf"], 2, "--time-limit: expected a finite number > 0"),
    (["train", "--time-limit", "2min"], 2, "--time-limit: expected a number, got '2min'"),
    (["sample"], 2, "--checkpoint-dir"),
    (["sample", "--checkpoint-dir", "{r}/missing"], 1, "missing: no such folder"),
    (["sample", "--checkpoint-dir", "{r}/folder"], 1, "no checkpoints"),
    (["sample", "--checkpoint-dir", "{r}/garbage"], 1, "not a jrnn checkpoint"),
    (["sample", "--checkpoint-dir", "{r}/run", "--prompt", "\u2603"], 1, "prompt: characters"),
    (["sample", "--checkpoint-dir", "{r}/run", "--temperature", "-1"], 2, "--temperature"),
    (["sample", "--checkpoint-dir", "{r}/run", "--length", "0"], 2, "--length"),
    (["gradcheck", "--H", "0"], 2, "--H"),
    (["gradcheck", "--B", "-1"], 2, "--B"),
    (["gradcheck", "--tolerance", "-1"], 2, "--tolerance"),
    (["gradcheck", "--arch", "nope"], 2, "--arch"),
    (["gradcheck", "--cell", "lru"], 2, "--cell"),
    (["gradcheck", "--cell", "elman", "--arch", "layer-parallel-blocked"], 1, "arch"),
    (["gradcheck", "--cell", "mingru", "--arch", "tagger-dropout"], 1, "arch"),
    (["gradcheck", "--arch", "layer-projection", "--cell", "gru"], 1,
     "does not run cell 'gru'"),
    (["bench", "--configs", "Q"], 2, "--configs"),
    (["bench", "--reps", "0"], 2, "--reps"),
    (["bench", "--remat", "--T", "-3"], 2, "--T"),
    (["bench", "--remat", "--precision"], 2, "choose one"),
    ([], 2, "command"),
    (["nope"], 2, "invalid choice: 'nope'"),
]


@pytest.mark.parametrize("argv,status,named", BAD, ids=[" ".join(a[:4]) for a, _, _ in BAD])
def test_a_mistake_is_one_or_two_lines_and_a_nonzero_exit(files, argv, status, named, capsys):
    argv = [a.replace("{r}", str(files)) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's exit, as the console script would see it
        code = e.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == status, err
    assert 1 <= len(lines) <= 2 and named in err, err
    assert "Traceback" not in err + out
    assert not (files / "run" / "step_000000004.npz").exists()  # nothing was trained


def test_the_console_script_prints_no_traceback(tmp_path):
    """The same through a fresh interpreter, as a shell user runs it."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "jrnn.cli", "train", "--text",
                             str(tmp_path / "nope.txt")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: text: {tmp_path / 'nope.txt'}: "
                                                  f"no such file"]


def test_a_bad_prompt_is_refused_before_the_first_step(tmp_path, capsys):
    d = tmp_path / "run"
    assert cli.main(["train", *TINY, "--prompt", "caf\u00e9 \u2603", "--checkpoint-dir",
                     str(d)]) == 1
    err = capsys.readouterr().err
    assert "prompt: characters not in the vocabulary" in err and "\u2603" in err
    assert not d.exists()  # refused before anything was written, let alone trained


def test_gradcheck_tolerance_zero_is_honoured(capsys):
    code = cli.main(["gradcheck", "--T", "4", "--tolerance", "0"])
    out = capsys.readouterr().out
    assert "tolerance 0e+00" in out
    worst = float(out.split("largest ")[1].split()[0])
    assert code == (0 if worst == 0 else 1)


# --- Run folders: never mixed, never overwritten ---

def test_a_new_run_into_a_used_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    d = tmp_path / "run"
    assert cli.main(["train", *TINY, "--steps", "2", "--checkpoint-dir", str(d),
                     "--sample", "0"]) == 0
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    capsys.readouterr()
    # Another model, same folder, no --resume: refused with what is there and what to do.
    assert cli.main(["train", *TINY, "--hidden", "16", "--steps", "3", "--checkpoint-dir",
                     str(d), "--sample", "0"]) == 1
    err = capsys.readouterr().err
    assert "checkpoints of steps 2" in err and "--resume" in err and "another --checkpoint-dir" in err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    # A folder left with only a log (a run killed before its first checkpoint) is a run too.
    (d / "step_000000002.npz").unlink()
    assert cli.main(["train", *TINY, "--steps", "2", "--checkpoint-dir", str(d),
                     "--sample", "0"]) == 1
    assert "train_log.jsonl" in capsys.readouterr().err


def _damage(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_with_every_checkpoint_damaged_stops_and_touches_nothing(tmp_path, capsys):
    d = tmp_path / "run"
    assert cli.main(["train", *TINY, "--steps", "4", "--checkpoint-every", "2",
                     "--checkpoint-dir", str(d), "--sample", "0"]) == 0
    for name in ("step_000000002.npz", "step_000000004.npz"):
        _damage(d / name)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    capsys.readouterr()
    assert cli.main(["train", *TINY, "--steps", "4", "--checkpoint-every", "2",
                     "--checkpoint-dir", str(d), "--resume", "--sample", "0"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "step_000000002.npz" in err and "step_000000004.npz" in err and "nothing was changed" in err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_resume_past_a_damaged_checkpoint_keeps_it_aside(tmp_path, capsys):
    d = tmp_path / "run"
    args = ["train", *TINY, "--steps", "4", "--checkpoint-every", "2", "--checkpoint-dir",
            str(d), "--sample", "0"]
    assert cli.main(args) == 0
    _damage(d / "step_000000004.npz")
    damaged = (d / "step_000000004.npz").read_bytes()
    capsys.readouterr()
    assert cli.main([*args, "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "resumed from" in out and "step_000000002.npz" in out
    # The warning is the command's own line, without Python's file:line prefix.
    (warning,) = [line for line in err.splitlines() if "step_000000004.npz" in line]
    assert warning.startswith("warning: ") and ".py:" not in warning
    assert (d / "step_000000004.npz.damaged").read_bytes() == damaged  # kept, not overwritten
    assert checkpoint.list_steps(str(d)) == [2, 4]  # the new step 4 written beside it


# --- What a run tells its user, and writes for later ---

def test_a_resumed_run_logs_every_step_once_and_plots_its_first_and_last_step(tmp_path,
                                                                               monkeypatch):
    import json
    from jrnn import charlm, plots
    d = tmp_path / "run"
    config = charlm.Config(max_chars=20000, hidden=12, seq=8, batch=4, steps=4,
                           checkpoint_every=2, checkpoint_dir=str(d))

    class Killed(Exception):
        pass

    def kill_at_3(step, state):
        if step == 3:
            raise Killed
    with pytest.raises(Killed):
        charlm.run(config, progress=False, log=lambda s: None, on_chunk=kill_at_3)
    assert [json.loads(l)["step"] for l in open(d / charlm.LOG_NAME)] == [1, 2, 3]

    drawn, lines = {}, []
    monkeypatch.setattr(plots, "gradient_flow",
                        lambda flows, path, **kw: drawn.setdefault("labels", kw["labels"]) and path)
    charlm.run(config, resume=True, progress=False, log=lines.append)
    records = [json.loads(l) for l in open(d / charlm.LOG_NAME)]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # step 3 ran again; logged once
    assert all(r["loss"] > 0 and r["chars_per_second"] > 0 and r["seconds"] >= 0
               for r in records)
    assert any(label.startswith("step 0") for label in drawn["labels"])
    assert any(label.startswith("step 4") for label in drawn["labels"])
    text = "\n".join(lines)
    assert f"resumed from {checkpoint.path_for(str(d), 2)}" in text
    assert f"writing to {d}" in text and "checkpoints: " in text and charlm.LOG_NAME in text


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_the_native_kernel_trains_like_the_scan_and_a_resume_must_repeat_it(cell, tmp_path,
                                                                            monkeypatch):
    """``--kernel native`` runs the training and validation losses on jrnn.native's loops:
    every step's loss and the validation loss equal the scan path's to float32 rounding
    (two layers: the stack's dX between them); the kernel is saved with the run, and a
    resume with the other one is refused."""
    from jrnn import charlm, native, native_head
    if not native.available():
        pytest.skip(f"jrnn.native unavailable: {native.why_unavailable()}")
    traced = []  # the native head and loops as jit traces them
    for module, name in ((native_head, "softmax_nll"), (native, "gradients")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: (
            traced.append(name), real(*a, **k))[1])
    results = {}
    for kernel in ("auto", "native"):
        traced.clear()
        config = charlm.Config(max_chars=20000, cell=cell, hidden=12, layers=2, seq=8,
                               batch=4, steps=3, kernel=kernel,
                               checkpoint_dir=str(tmp_path / kernel))
        results[kernel] = charlm.run(config, progress=False, log=lambda s: None)
        # the training step (head, both layers' gradients) and the validation loss's head
        assert sorted(set(traced)) == ([] if kernel == "auto" else ["gradients", "softmax_nll"])
        assert traced.count("gradients") == (2 if kernel == "native" else 0)
    scan, fast = results["auto"], results["native"]
    assert len(fast.losses) == len(scan.losses) == 3
    np.testing.assert_allclose(fast.losses, scan.losses, rtol=1e-5)
    assert fast.losses[-1] != fast.losses[0]  # the parameters moved
    assert fast.val_loss == pytest.approx(scan.val_loss, rel=1e-5)
    _, _, meta = charlm.load(str(tmp_path / "native"))
    assert charlm.saved_config(meta).kernel == "native"
    with pytest.raises(checkpoint.CheckpointError, match="saved with kernel='native'"):
        charlm.run(dataclasses.replace(config, kernel="auto"), resume=True,
                   progress=False, log=lambda s: None)
    # where the native path cannot run, the run still loads and samples (on the scan path),
    # and only training it refuses
    monkeypatch.setattr(native, "available", lambda: False)
    assert cli.main(["sample", "--checkpoint-dir", str(tmp_path / "native"), "--length",
                     "5"]) == 0
    with pytest.raises(ValueError, match="kernel: 'native' cannot run this layer: the native "
                                         "library is unavailable"):
        charlm.run(config, resume=True, progress=False, log=lambda s: None)


def test_sample_refuses_bad_temperature_and_out_of_vocabulary_prompt_tokens():
    import jax.numpy as jnp
    from jrnn.models import tagger
    p = tagger.init(jax.random.key(0), "elman", 5, 4, 5)
    for temperature in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            tagger.sample(p, jax.random.key(1), jnp.array([1, 2]), 3, temperature=temperature)
    with pytest.raises(ValueError, match=r"prompt: expected class indices in \[0, 5\)"):
        tagger.sample(p, jax.random.key(1), jnp.array([1, 5]), 3)
    assert tagger.sample(p, jax.random.key(1), jnp.array([1, 4]), 3, temperature=0).shape == (3,)


# --- jrnn bench ---

def test_bench_takes_the_readme_form_and_writes_outside_the_repository(tmp_path, monkeypatch):
    """`jrnn bench --remat --T 32 ...` without `--`, in a folder like a clone's root: the
    results go to runs/bench (gitignored), never over benchmarks/results."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--remat", "--T", "32", "--B", "2", "--D", "3", "--H", "4",
                     "--C", "3", "--segments", "8", "--reps", "1"]) == 0
    assert (tmp_path / "runs" / "bench" / f"{jax.default_backend()}_remat.json").exists()
    assert not (tmp_path / "benchmarks").exists()


def test_bench_help_is_the_benchmarks_own_under_its_name(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: jrnn bench ") and "--configs" in text and "runs/bench" in text
    assert cli.parse(["bench"]).options.out == "runs/bench"
    from jrnn.bench import suite
    assert suite.arguments().parse_args([]).out == "benchmarks/results"  # the scripts' default
