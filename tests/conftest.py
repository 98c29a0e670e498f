"""Test configuration: float64 on, and silent promotion turned into errors.

Strict dtype promotion and rank promotion set to raise (the Equinox lesson in
DESIGN.md §4): a hand-written gradient that broadcasts or promotes silently
fails loudly here instead of passing with the wrong shape or precision.
"""
import os

# The suite is dominated by XLA compile time (each check compiles small programs
# once). LLVM's optimisation level changes neither the HLO nor floating-point
# semantics, only how hard the machine code is optimised: level 0 compiles about
# a quarter faster. Benchmarks run at the default level.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
