"""jrnn's NNX and Equinox modules against the frameworks' own (see jrnn/bench/adapters.py)."""
import sys

from jrnn.bench.adapters import main

if __name__ == "__main__":
    sys.exit(main())
