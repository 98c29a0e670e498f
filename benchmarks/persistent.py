"""The scan persistent factor against time (see jrnn/bench/unroll.py)."""
import sys

from jrnn.bench.persistent import main

if __name__ == "__main__":
    sys.exit(main())
