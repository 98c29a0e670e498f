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
           seq2seq, jrnn.linear, jrnn.lru)
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


# --- Every command the README and docs show runs as written ---

DOCUMENTED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TINY_BUDGET = ["--max-chars", "20000", "--hidden", "12", "--seq", "8", "--batch", "4",
               "--steps", "3", "--quiet", "--sample", "0"]


def _is_command(tokens) -> bool:
    return bool(tokens) and (tokens[0] == "jrnn" or (
        tokens[0] in ("python", "python3") and len(tokens) > 1
        and re.match(r"(scripts|benchmarks)/\w+\.py$", tokens[1]) is not None) or (
        tokens[0] in ("python", "python3") and tokens[1:2] == ["-m"] and len(tokens) > 2
        and re.match(r"jrnn\.bench\.\w+$", tokens[2]) is not None))


def documented_commands():
    """(source, tokens) of every `jrnn ...`, `python scripts/*.py ...`,
    `python benchmarks/*.py ...` and `python -m jrnn.bench.* ...` command shown in the README, docs/*.md and the
    docstring of jrnn/cli.py: each line of a ```bash block (split at `&&`, comments
    dropped) and each inline code span that starts so."""
    import shlex
    found = []
    for path in DOCUMENTED:
        text = path.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                tokens, part = [], []
                for token in shlex.split(line, comments=True) + ["&&"]:
                    if token == "&&":
                        tokens.append(part)
                        part = []
                    else:
                        part.append(token)
                found += [(f"{path.name} (bash block)", t) for t in tokens if _is_command(t)]
        for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
            if not re.match(r"(jrnn|python3?) ", span):
                continue
            tokens = shlex.split(" ".join(span.split()))
            if _is_command(tokens):
                found.append((f"{path.name} (inline)", tokens))
    import jrnn.cli
    for line in jrnn.cli.__doc__.splitlines():
        tokens = shlex.split(line, comments=True)
        if _is_command(tokens):
            found.append(("jrnn/cli.py docstring", tokens))
    return found


def _parse(tokens):
    """What the command's own parser makes of the line, running nothing."""
    import importlib
    import runpy
    from jrnn import cli
    if tokens[0] == "jrnn":
        return cli.parse(tokens[1:])
    if tokens[1] == "-m":  # python -m jrnn.bench.<name>
        return importlib.import_module(tokens[2]).arguments().parse_args(tokens[3:])
    script, rest = tokens[1], tokens[2:]
    if script == "scripts/char_lm.py":
        return cli.parse(["train", *rest])
    if script.startswith("scripts/"):
        return runpy.run_path(str(ROOT / script))["parse_args"](rest)
    module = importlib.import_module("jrnn.bench." + pathlib.Path(script).stem)
    return module.arguments().parse_args(rest)


def test_every_documented_command_parses_as_written(capsys):
    """Every command in the README and docs is accepted, exactly as written, by the
    parser of the program it names (`--help` ones print their help and exit 0). This
    runs nothing else: the next test runs the README's commands."""
    commands = documented_commands()
    shown = {" ".join(t) for _, t in commands}
    assert len(commands) >= 15
    assert {"jrnn bench --configs S X", "jrnn bench --configs S M X --sweeps T B"} <= shown
    for source, tokens in commands:
        try:
            _parse(tokens)
        except SystemExit as e:
            assert e.code == 0 and "--help" in tokens, (
                f"{source}: `{' '.join(tokens)}` is refused:\n{capsys.readouterr().err}")


def test_the_readme_commands_run(tmp_path, monkeypatch, capsys):
    """Runs each `jrnn` command of the README's bash blocks in a fresh folder, in order
    (train, resume, sample from it, gradcheck). Honest about what is changed: `jrnn
    train` gets a tiny budget appended (the last value of a flag wins, so the README's
    own flags are overridden: a 3-step, H=12 run on 20,000 characters, not the demo);
    `jrnn sample` and `jrnn gradcheck` run exactly as written; `jrnn bench` is only
    parsed (above) here: its full run takes minutes, and test_cli.py runs its README
    form at tiny sizes (`jrnn bench --remat --T 32 ...`)."""
    from jrnn import cli
    monkeypatch.chdir(tmp_path)
    ran = []
    for source, tokens in documented_commands():
        if "bash" not in source or not source.startswith("README") or tokens[0] != "jrnn":
            continue
        argv = tokens[1:]
        if argv[0] == "bench":
            continue
        if argv[0] == "train":
            argv = argv + TINY_BUDGET
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"`{' '.join(tokens)}` failed:\n{err}"
        ran.append(argv[0])
        if argv[0] == "sample":
            assert out.startswith("class ") and len(out.rstrip("\n")) == len("class ") + 400
    assert ran.count("train") >= 3 and "sample" in ran and "gradcheck" in ran


def test_docs_and_code_cite_published_sources_not_files_outside_the_repository():
    """A user of the package has README, docs/ and jrnn/, never the design notes or the
    'seeds' they came from: cite the book and papers instead."""
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "jrnn").rglob("*.py"),
             *(ROOT / "scripts").glob("*.py")]
    pattern = re.compile(r"\bseeds?\s+0\d\d|\bthe seeds'|\bseed 0\d\d's|DESIGN\.md", re.I)
    for path in texts:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.relative_to(ROOT)}:{number}: {line}"
    derivation = (ROOT / "docs" / "derivation.md").read_text()
    assert "Goodfellow" in derivation and "§10.2.2" in derivation and "| `W` hidden → hidden" in derivation


def test_each_optional_part_has_its_extra_and_the_readme_names_it():
    tomllib = __import__("pytest").importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = lambda reqs: {re.split(r"[<>=!~\[ ;]", r)[0].lower() for r in reqs}
    assert {"flax", "matplotlib"} <= names(extras["bench"])
    assert "matplotlib" in names(extras["examples"])
    # torch is never an unpinned requirement of the package: pip would pick a CUDA build.
    for reqs in [project["dependencies"], *extras.values()]:
        assert "torch" not in names(reqs)
    readme = (ROOT / "README.md").read_text()
    for command in ('pip install -e ".[bench]" torch==2.13.0', 'pip install -e ".[examples]"',
                    'pip install -e ".[test]"'):
        assert command in readme
