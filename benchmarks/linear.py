"""Linear recurrences: the hand-written adjoint scan against autodiff (see jrnn/bench/linear.py)."""
import sys

from jrnn.bench.linear import main

if __name__ == "__main__":
    sys.exit(main())
