"""The benchmark suite (see jrnn/bench/suite.py): ``python benchmarks/suite.py --help``."""
import sys

from jrnn.bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
