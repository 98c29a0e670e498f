"""Builds jrnn's API reference from its docstrings with pdoc (https://pdoc.dev).

    python scripts/api_reference.py                 # writes docs/api/, open docs/api/index.html
    python scripts/api_reference.py --serve         # or browse it live at http://localhost:8080

The test suite builds it too (tests/test_api_reference.py), so a module that
no longer imports or a docstring pdoc cannot render fails CI.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

# The core package, and the framework adapters that `import jrnn` leaves out
# (they import Flax or Equinox, which are optional extras).
MODULES = ["jrnn", "jrnn.nnx", "jrnn.linen", "jrnn.equinox", "jrnn.bench"]
# pdoc cannot resolve string annotations that NamedTuple fields get under
# `from __future__ import annotations`; it shows them as written. Not an error.
HARMLESS = ("Error parsing type annotation",)


def build(output_dir: pathlib.Path) -> list[str]:
    """Writes the HTML reference into ``output_dir``; returns pdoc's complaints."""
    import pdoc
    import pdoc.render
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.render.configure(docformat="restructuredtext", math=True)
        pdoc.pdoc(*MODULES, output_directory=pathlib.Path(output_dir))
    return [str(w.message) for w in caught
            if "pdoc" in w.filename and not str(w.message).startswith(HARMLESS)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/api")
    parser.add_argument("--serve", action="store_true", help="serve it on localhost instead")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        import pdoc.__main__
        sys.argv = ["pdoc", "-d", "restructuredtext", "--math", *MODULES]
        return pdoc.__main__.cli()
    problems = build(pathlib.Path(args.out))
    for p in problems:
        print("pdoc:", p, file=sys.stderr)
    print(f"API reference in {args.out}/index.html")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
