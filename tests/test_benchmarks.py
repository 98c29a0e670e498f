"""The benchmark scripts run (tiny sizes; nothing here measures or asserts a time)."""
import json

import jax
import jax.numpy as jnp
import pytest

import jrnn.linear
from jrnn.bench import remat_curve, suite


def test_suite_reports_why_native_is_missing():
    """A cell the native kernels do not cover is a missing column with the reason."""
    from jrnn import native
    cfg = suite.Config(B=2, T=4, D=3, H=5, C=3)
    with pytest.raises(suite.Missing) as missing:
        suite.build_jrnn_native("layernorm_lstm", cfg)
    assert str(missing.value) == native.unsupported("layernorm_lstm", cfg.H, jnp.float32)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_suite_measures_every_implementation(cell):
    cfg = suite.Config(B=2, T=4, D=3, H=5, C=3)
    rows = suite.measure("tiny", cell, cfg, [1, 2], reps=1, warmup=0)
    impls = {r["impl"] for r in rows}
    assert {"jrnn (unroll 1)", "autodiff (unroll 2)", "jrnn native", "flax", "torch"} <= impls
    from jrnn import native
    native_rows = [r for r in rows if r["impl"] == "jrnn native"]
    native_runs = native.unsupported(cell, cfg.H, jnp.float32) is None
    if native_runs:  # measured: training, forward and the sampler
        assert {r.get("kind") for r in native_rows} == {"train", "forward", "sample"}
    else:
        assert [r["missing"] for r in native_rows] == [
            native.unsupported(cell, cfg.H, jnp.float32)]
    for r in rows:  # each row is measured, or says why it is missing
        assert ("missing" in r) or (r["median_ms"] > 0 and r["kind"] in suite.KINDS)
    sampled = {r["impl"] for r in rows if r.get("kind") == "sample"}
    # no autodiff (the same program), and the sampler takes no unroll: timed once
    assert sampled == {"jrnn (unroll 1)", "flax", "torch"} | ({"jrnn native"} if native_runs
                                                             else set())
    text = suite.tables(rows, [1, 2])
    assert f"### {cell}: training step" in text and f"### {cell}: sampler" in text


@pytest.mark.parametrize("impl", ["jrnn", "flax", "torch"])
def test_each_sampler_draws_tokens_in_range(impl):
    from jrnn.bench import sampler
    cfg = suite.Config(B=2, T=5, D=3, H=4, C=3)
    tokens = sampler.tokens(getattr(sampler, f"{impl}_sampler")("gru", cfg))
    assert tokens.shape == (5, 2) and tokens.min() >= 0 and tokens.max() < 3


def test_the_sampler_needs_inputs_as_wide_as_the_classes():
    from jrnn.bench import sampler
    with pytest.raises(suite.Missing, match="D == C, got D 3, C 4"):
        sampler.jrnn_sampler("lstm", suite.Config(B=2, T=5, D=3, H=4, C=4))


def test_suite_measures_a_multi_head_recurrence():
    """Flax has no block-diagonal W: its column is its dense LSTMCell of the same H, named
    so, for the LSTM and the sLSTM, and missing for the other cells; PyTorch is missing."""
    cfg = suite.Config(B=2, T=4, D=3, H=4, C=3)
    rows = suite.measure("tiny", "lstm", cfg, [1], reps=1, warmup=0, heads=2)
    by = {r["impl"]: r for r in rows}
    assert by["jrnn (unroll 1)"]["median_ms"] > 0 and by["autodiff (unroll 1)"]["median_ms"] > 0
    assert "flax" not in by and "block-diagonal" in by["torch"]["missing"]
    pytest.importorskip("flax")
    assert by["flax (dense LSTMCell)"]["median_ms"] > 0
    gru = suite.measure("tiny", "gru", cfg, [1], reps=1, warmup=0, heads=2)
    assert "missing" in {r["impl"]: r for r in gru}["flax (dense LSTMCell)"]
    assert "flax (dense LSTMCell) temp / first" in suite.tables(rows, [1])


def test_roofline_counts_every_product_of_a_small_lstm_step():
    from jrnn.bench.roofline import flops
    cfg = dict(B=2, T=3, D=5, H=7, C=11)  # N = T·B = 6 rows, G·H = 28
    projection, recurrent, head = 2 * 6 * 28 * 5, 2 * 6 * 28 * 7, 2 * 6 * 7 * 11
    forward = projection + recurrent + head
    # backward: dV and do·V (the head), dR_t·W in the loop and dW after it, dU
    backward = head + head + recurrent + recurrent + projection
    assert flops(gates=4, **cfg, kind="forward") == forward
    assert flops(gates=4, **cfg, kind="train") == forward + backward
    # a block-diagonal W with 7 heads: each recurrent product is 1/7 of the dense one
    assert flops(gates=4, **{**cfg, "H": 7}, kind="train", heads=7) == \
        forward + backward - 3 * recurrent + 3 * recurrent // 7
    with pytest.raises(ValueError, match="kind: expected one of"):
        flops(gates=1, **cfg, kind="backward")


def test_suite_reports_the_fraction_of_roofline():
    cfg = suite.Config(B=2, T=4, D=3, H=5, C=3)
    rows = suite.measure("tiny", "gru", cfg, [1], reps=1, warmup=0, peak=1e9)
    row = next(r for r in rows if r["impl"] == "jrnn (unroll 1)" and r["kind"] == "train")
    assert row["flops"] == 2 * 8 * (2 * 15 * 3 + 3 * 15 * 5 + 3 * 5 * 3)
    assert row["roofline_ms"] == 1e3 * row["flops"] / 1e9
    assert row["roofline_fraction"] == row["roofline_ms"] / row["median_ms"]
    assert "| tiny | gru | train | 0.00 | 1.0 | " in suite.roofline_table(rows)


def test_suite_measures_the_peak_in_each_kinds_rounds(tmp_path):
    """With peak_size the peak is an (n, n) matmul timed in the same rounds as each kind's
    implementations: every row divides by its own kind's measurement, the product is no row
    of its own, and the report gives the range of the peaks."""
    cfg = suite.Config(B=2, T=4, D=3, H=5, C=3)
    rows = suite.measure("tiny", "elman", cfg, [1], reps=2, warmup=0, peak_size=64)
    timed = [r for r in rows if "missing" not in r]
    assert timed and all(r["impl"] != suite.PEAK for r in rows)
    by_kind = {}
    for r in timed:
        assert r["peak_gflops"] > 0
        assert r["roofline_ms"] == pytest.approx(r["flops"] / (r["peak_gflops"] * 1e6))
        by_kind.setdefault(r["kind"], set()).add(r["peak_gflops"])
    assert all(len(peaks) == 1 for peaks in by_kind.values())  # one measurement a kind
    env = {"backend": "test", "device": "d", "cpu_count": 1, "jax": "j", "flax": None,
           "torch": None, "date": "today", "unrolls": [1], "reps": 2, "heads": 1}
    text = suite.write_suite(str(tmp_path), env, rows, {}, "python x", 64)
    low, high = min(r["peak_gflops"] for r in timed), max(r["peak_gflops"] for r in timed)
    assert "a 64² matmul timed in each config's rounds" in text
    assert f"{low:.1f}–{high:.1f} GFLOP/s" in text


def test_remat_curve_runs(tmp_path):
    assert remat_curve.main(["--T", "64", "--B", "2", "--D", "3", "--H", "4", "--C", "3",
                             "--segments", "8", "--reps", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{jax.default_backend()}_remat.json").exists() and (tmp_path / f"{jax.default_backend()}_remat.md").exists()


def test_precision_benchmark_runs(tmp_path):
    from jrnn.bench import precision
    assert precision.main(["--configs", "S", "--cells", "gru", "--reps", "1",
                           "--out", str(tmp_path)]) == 0
    rows = __import__("json").loads((tmp_path / f"{jax.default_backend()}_precision.json").read_text())["rows"]
    (row,) = rows
    # float32 is far closer to float64 than bfloat16 products, which beat bfloat16 parameters.
    assert row["error float32"] < 1e-4 < row["error bf16 products"] < row["error bf16 parameters"]


def test_adapters_benchmark_measures_both_sides(tmp_path):
    pytest.importorskip("flax")
    pytest.importorskip("equinox")
    from jrnn.bench import adapters
    rows = adapters.measure("tiny", "gru", suite.Config(B=2, T=4, D=3, H=5, C=3), reps=1,
                            warmup=0)
    assert {r["impl"] for r in rows} == {"nnx: jrnn", "nnx: flax nnx.RNN", "equinox: jrnn",
                                         "equinox: eqx cell + lax.scan"}
    assert all(r["median_ms"] > 0 for r in rows)
    assert "| tiny (2, 4, 3, 5, 3) | gru | nnx vs flax nnx.RNN |" in adapters.table(rows)


def test_unroll_and_regularisation_benchmarks_write_their_results(tmp_path):
    from jrnn.bench import regularisation, unroll
    assert unroll.main(["--configs", "S", "--cells", "elman", "--unroll", "1", "2", "--reps", "1",
                        "--out", str(tmp_path)]) == 0
    assert regularisation.main(["--configs", "S", "--cells", "elman", "--reps", "1",
                                "--out", str(tmp_path)]) == 0
    for name in ("unroll", "regularisation"):
        rows = __import__("json").loads(
            (tmp_path / f"{jax.default_backend()}_{name}.json").read_text())["rows"]
        assert rows and all(r["median_ms"] > 0 for r in rows)
        assert (tmp_path / f"{jax.default_backend()}_{name}.md").read_text().startswith("# ")


def test_temp_buffer_benchmark_reports_bytes_faults_and_times(tmp_path):
    from jrnn.bench import temp_buffer
    assert temp_buffer.main(["--shapes", "S:2:3", "--cells", "elman", "--reps", "1",
                             "--out", str(tmp_path)]) == 0
    rows = __import__("json").loads(
        (tmp_path / f"{jax.default_backend()}_temp_buffer.json").read_text())["rows"]
    assert [r["option"] for r in rows] == ["plain", "zoneout 0.1"]
    assert all(r["temp_MiB"] > 0 and r["faults_per_call"] >= 0 and r["median_ms"] > 0
               for r in rows)
    with pytest.raises(SystemExit):
        temp_buffer.arguments().parse_args(["--shapes", "S:0:3"])


def test_linear_benchmark_writes_its_results(tmp_path):
    """benchmarks/linear.py at tiny sizes: every table row, the sweep and the agreement."""
    from jrnn.bench import linear
    assert linear.main(["--cells", "mingru", "lru", "--T", "16", "--sweep", "8", "16",
                        "--sweep-cells", "mingru", "--agreement-T", "64", "--B", "2", "--D", "3",
                        "--H", "4", "--reps", "1", "--adjoints", "blocked", "associative",
                        "--out", str(tmp_path)]) == 0
    data = __import__("json").loads((tmp_path / f"{jax.default_backend()}_linear.json")
                                    .read_text())["rows"]
    assert {(r["cell"], r["mode"], r["adjoint"]) for r in data["targets"]} == {
        (c, *m) for c in ("mingru", "lru") for m in (
            ("parallel", "blocked"), ("parallel", "associative"),
            ("sequential", jrnn.linear.default_adjoint(mode="sequential", cell=c)))}
    assert all(r["manual_ms"] > 0 and r["autodiff_ms"] > 0 for r in data["targets"])
    assert [r["T"] for r in data["sweep"]] == [8, 16]
    # float64 agreement of the two modes is exact to rounding (the x64 switch is restored)
    assert all(r["parallel_vs_sequential_f64"] < 1e-12 for r in data["agreement"])
    assert (tmp_path / f"{jax.default_backend()}_linear.md").read_text().startswith("# ")


def test_results_record_the_variables_that_change_speed(monkeypatch, tmp_path):
    """Allocator, XLA and thread variables go into every result's environment and the
    suite's report names them; other variables do not."""
    from jrnn import bench
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    monkeypatch.setenv("JRNN_NATIVE_THREADS", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # logging only
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    env = bench.environment(reps=1)
    assert env["tuning"]["MALLOC_MMAP_MAX_"] == "0"
    assert env["tuning"]["JRNN_NATIVE_THREADS"] == "1"
    assert not {"XLA_FLAGS", "PATH", "TF_CPP_MIN_LOG_LEVEL"} & set(env["tuning"])
    env.update(flax=None, torch=None, unrolls=[1], heads=1)
    text = suite.write_suite(str(tmp_path), env, [], {}, "python x", 2048)
    assert "`MALLOC_MMAP_MAX_=0`" in text and "`JRNN_NATIVE_THREADS=1`" in text
    monkeypatch.delenv("MALLOC_MMAP_MAX_")
    assert "MALLOC_MMAP_MAX_" not in bench.environment()["tuning"]


def test_results_record_the_cpu_and_the_native_instruction_set(monkeypatch, tmp_path):
    """Sessions run on machines of different CPUs (AVX-512 doubles the native kernels'
    speed): every result names the CPU's model and the native kernels' instruction set,
    and the suite's report says both."""
    from jrnn import bench, native
    monkeypatch.setattr(bench, "cpu_model", lambda: "Test CPU 9000")
    monkeypatch.setattr(native, "isa", lambda: "avx512")
    monkeypatch.setattr(native, "_cpu_supported", lambda: None)
    env = bench.environment(reps=1)
    assert env["cpu_model"] == "Test CPU 9000" and env["native_isa"] == "avx512"
    env.update(flax=None, torch=None, unrolls=[1], heads=1)
    text = suite.write_suite(str(tmp_path), env, [], {}, "python x", 2048)
    assert "CPU: Test CPU 9000; jrnn's native kernels built for avx512." in text
    monkeypatch.setattr(native, "_cpu_supported", lambda: "not x86-64")
    assert bench.environment()["native_isa"] is None


def test_suite_results_are_written_from_the_rows_measured_so_far(tmp_path):
    """The suite writes its files after every config: a run stopped at a time limit keeps
    what it measured (JSON, markdown with the tables)."""
    cfg = suite.Config(B=2, T=4, D=3, H=5, C=3)
    rows = suite.measure("tiny", "elman", cfg, [1], reps=1, warmup=0, peak=1e9)
    env = {"backend": "test", "device": "d", "cpu_count": 1, "jax": "j", "flax": None,
           "torch": None, "date": "today", "unrolls": [1], "reps": 1, "heads": 1}
    text = suite.write_suite(str(tmp_path), env, rows, {"T": []}, "python x", 2048)
    assert "| tiny (2, 4, 3, 5, 3) |" in text
    assert (tmp_path / "test_suite.md").read_text().rstrip("\n") == text.rstrip("\n")
    saved = json.loads((tmp_path / "test_suite.json").read_text())
    assert saved["configs"] == json.loads(json.dumps(rows)) and saved["sweeps"] == {"T": []}


def test_the_gpu_script_runs_every_stage_the_docs_name(tmp_path):
    """`bash benchmarks/gpu.sh STAGE ...` as the README and NOTES show it names stages the
    script has; an unknown stage is refused with exit code 2; `pack` archives $OUT."""
    import pathlib
    import re
    import subprocess
    import tarfile
    root = pathlib.Path(__file__).resolve().parent.parent
    script = root / "benchmarks" / "gpu.sh"
    stages = set(re.findall(r"^    (\w+)\) ", script.read_text(), flags=re.M))
    shown = [m for doc in ("README.md", "benchmarks/NOTES.md")
             for m in re.findall(r"bash benchmarks/gpu\.sh ([a-z ]+)", (root / doc).read_text())]
    assert shown and all(set(m.split()) <= stages for m in shown), (shown, stages)
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.md").write_text("measured")
    env = {"PATH": "/usr/bin:/bin", "OUT": str(out), "PACK": str(tmp_path / "all.tgz")}
    run = lambda *stages: subprocess.run(["bash", str(script), *stages], env=env,
                                         capture_output=True, text=True)
    refused = run("pack", "nonsense")
    assert refused.returncode == 2 and "unknown stage: nonsense" in refused.stderr
    with tarfile.open(tmp_path / "all.tgz") as archive:
        assert "./result.md" in archive.getnames()
