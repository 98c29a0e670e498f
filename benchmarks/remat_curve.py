"""Memory against time for memory-bounded BPTT (see jrnn/bench/remat_curve.py)."""
import sys

from jrnn.bench.remat_curve import main

if __name__ == "__main__":
    sys.exit(main())
