"""The scan unroll factor against time (see jrnn/bench/unroll.py)."""
import sys

from jrnn.bench.unroll import main

if __name__ == "__main__":
    sys.exit(main())
