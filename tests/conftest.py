"""Test configuration: float64 on, silent promotion turned into errors, and
full-precision float32 products on every backend.

Strict dtype promotion and rank promotion set to raise (the Equinox lesson in
the design notes): a hand-written gradient that broadcasts or promotes silently
fails loudly here instead of passing with the wrong shape or precision.

The suite runs on whichever backend JAX picks (``JAX_PLATFORMS=cpu`` or
``JAX_PLATFORMS=cuda`` to choose). Its float32 tolerances (1e-5 relative
against autodiff) are for IEEE float32 products. NVIDIA GPUs run float32
matmuls as TF32 by default (10-bit mantissa), so the suite sets the default
matmul precision to "highest", which is float32 on every backend and changes
nothing on a CPU. The TF32 default itself is tested on its own, with its own
documented bound (tests/test_dtypes.py, docs/precision.md).
"""
import os

# The suite is dominated by XLA compile time (each check compiles small programs
# once). LLVM's optimisation level changes neither the HLO nor floating-point
# semantics, only how hard the machine code is optimised: level 0 compiles about
# a quarter faster. Benchmarks run at the default level.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()
# Several test processes share one GPU: allocate on demand, not 75% each.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_report_header(config):
    device = jax.devices()[0]
    return (f"jax {jax.__version__} on {jax.default_backend()} "
            f"({getattr(device, 'device_kind', device)}), matmul precision 'highest'")


# Every program XLA:CPU compiles keeps its code in memory mappings until its
# executable is dropped, several hundred of them per program here; a test
# process that holds the executables of hundreds of tests reaches Linux's
# limit on mappings per process (vm.max_map_count, 65,530 by default), and the
# next compilation then crashes inside LLVM (a segmentation fault, not an
# error). Past a third of that limit the compiled programs are dropped: the
# tests after it recompile what they need.
import pathlib  # noqa: E402

import pytest  # noqa: E402

_MAPS = pathlib.Path("/proc/self/maps")
_MAX_MAPPINGS = 20_000


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    yield
    if _MAPS.exists():
        with _MAPS.open() as maps:
            if sum(1 for _ in maps) > _MAX_MAPPINGS:
                jax.clear_caches()
