"""The scan regularisation factor against time (see jrnn/bench/unroll.py)."""
import sys

from jrnn.bench.regularisation import main

if __name__ == "__main__":
    sys.exit(main())
