"""The README and docs tell the truth: their code runs, their pointers exist."""
import importlib.util
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter: a user's default JAX config, not the tests'."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_every_code_pointer_in_the_derivation_exists():
    text = (ROOT / "docs" / "derivation.md").read_text()
    pointers = re.findall(r"^`(jrnn/[\w/]+\.py)`: `(.+)`$", text, flags=re.M)
    assert len(pointers) >= 15
    for path, code in pointers:
        assert code in (ROOT / path).read_text(), f"{path} no longer contains: {code}"


def test_readme_python_examples_run():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    if importlib.util.find_spec("torch") is None:  # optional extra: its example needs it
        blocks = [b for b in blocks if "import torch" not in b]
    result = run_python("\n".join(blocks))
    assert result.returncode == 0, result.stderr[-3000:]


def test_docstring_examples_run():
    code = """
import doctest, sys
import jrnn
from jrnn.models import classifier, generator, seq2seq, tagger
modules = (jrnn.elman, jrnn.recurrence, jrnn.train, jrnn.layers, tagger, classifier, generator,
           seq2seq)
failed = sum(doctest.testmod(m).failed for m in modules)
sys.exit(1 if failed else 0)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\n```bash\n(.+?)\n```", readme).group(1)
    assert "pytest" in command
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
