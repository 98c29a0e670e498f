"""The benchmark programs, importable so that ``jrnn bench`` runs them from an installed package.

* :mod:`jrnn.bench.suite`: jrnn beside autodiff, Flax and PyTorch (``jrnn bench``,
  or ``python benchmarks/suite.py``);
* :mod:`jrnn.bench.remat_curve`: memory against time for memory-bounded BPTT
  (``jrnn bench --remat``, or ``python benchmarks/remat_curve.py``);
* :mod:`jrnn.bench.precision`: float32 against bfloat16, speed and gradient error
  (``jrnn bench --precision``, or ``python benchmarks/precision.py``).

Results and the method notes live in the repository's ``benchmarks/`` folder.
"""


def write_results(out: str, name: str, env: dict, rows: list, markdown: str) -> str:
    """Writes ``<out>/<backend>_<name>.json`` ({"env", "rows"}) and ``.md``, prints the
    markdown, and returns the path without its suffix."""
    import json
    import os
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"{env['backend']}_{name}")
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown.rstrip("\n") + "\n")
    print(markdown)
    return stem
