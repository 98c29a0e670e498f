"""The API reference builds from the docstrings (pdoc), with no import or render error."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_api_reference_builds(tmp_path):
    for name in ("pdoc", "flax", "equinox"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: pip install -e '.[test]' installs it")
    result = subprocess.run([sys.executable, "scripts/api_reference.py", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("jrnn.html", "jrnn/nnx.html", "jrnn/linen.html", "jrnn/equinox.html",
                 "jrnn/layers.html"):
        assert (tmp_path / page).stat().st_size > 1000, page
    assert "from_flax" in (tmp_path / "jrnn" / "nnx.html").read_text()


def test_adapter_docstring_examples_run():
    """In a fresh interpreter: a user's default JAX config (float32), not the tests'."""
    for name in ("flax", "equinox"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: pip install jrnn[{name}]")
    code = ("import doctest, sys, jrnn.nnx, jrnn.linen, jrnn.equinox\n"
            "sys.exit(sum(doctest.testmod(m).failed for m in "
            "(jrnn.nnx, jrnn.linen, jrnn.equinox)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_digits_trains_through_every_adapter():
    """scripts/digits_adapters.py runs end to end (one epoch, small: a smoke test)."""
    for name in ("flax", "equinox", "sklearn"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: pip install -e '.[test]' installs it")
    result = subprocess.run([sys.executable, "scripts/digits_adapters.py", "--epochs", "1",
                             "--hidden", "8", "--cell", "gru"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("nnx", "linen", "equinox"):
        assert f"{name:8s} test accuracy" in result.stdout
