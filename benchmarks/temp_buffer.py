"""The training step's temporary buffer against its time (see jrnn/bench/temp_buffer.py)."""
import sys

from jrnn.bench.temp_buffer import main

if __name__ == "__main__":
    sys.exit(main())
