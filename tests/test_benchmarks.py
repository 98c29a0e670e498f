"""The benchmark scripts run (tiny sizes; nothing here measures or asserts a time)."""
import pytest

from jrnn.bench import remat_curve, suite


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_suite_measures_every_implementation(cell):
    cfg = suite.Config(B=2, T=4, D=3, H=5, C=3)
    rows = suite.measure("tiny", cell, cfg, [1, 2], reps=1, warmup=0)
    impls = {r["impl"] for r in rows}
    assert {"jrnn (unroll 1)", "autodiff (unroll 2)", "flax", "torch"} <= impls
    for r in rows:  # each row is measured, or says why it is missing
        assert ("missing" in r) or (r["median_ms"] > 0 and r["kind"] in ("train", "forward"))
    text = suite.tables(rows, [1, 2])
    assert f"### {cell}: training step" in text


def test_remat_curve_runs(tmp_path):
    assert remat_curve.main(["--T", "64", "--B", "2", "--D", "3", "--H", "4", "--C", "3",
                             "--segments", "8", "--reps", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "cpu_remat.json").exists() and (tmp_path / "cpu_remat.md").exists()
