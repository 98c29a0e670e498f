"""Precision against speed (see jrnn/bench/precision.py)."""
import sys

from jrnn.bench.precision import main

if __name__ == "__main__":
    sys.exit(main())
