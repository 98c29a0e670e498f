"""The benchmark programs, importable so that ``jrnn bench`` runs them from an installed package.

* :mod:`jrnn.bench.suite`: jrnn beside autodiff, Flax and PyTorch (``jrnn bench``,
  or ``python benchmarks/suite.py``);
* :mod:`jrnn.bench.remat_curve`: memory against time for memory-bounded BPTT
  (``jrnn bench --remat``, or ``python benchmarks/remat_curve.py``);
* :mod:`jrnn.bench.precision`: float32 against bfloat16, speed and gradient error
  (``jrnn bench --precision``, or ``python benchmarks/precision.py``).

Results and the method notes live in the repository's ``benchmarks/`` folder.
"""


# Environment variables that change how fast a run is without changing what it computes:
# the allocator's (glibc's MALLOC_*_ and GLIBC_TUNABLES: PyTorch's training step at M ran
# 1.36x faster with MALLOC_MMAP_MAX_=0, benchmarks/NOTES.md), XLA's, the thread pools' and
# jrnn's own. Every result file records those that are set.
TUNING_PREFIXES = ("MALLOC_", "GLIBC_TUNABLES", "XLA_FLAGS", "JRNN_", "OMP_", "MKL_",
                   "LD_PRELOAD")


def tuning_variables() -> dict:
    """The set environment variables named by :data:`TUNING_PREFIXES`, sorted by name."""
    import os
    return {k: os.environ[k] for k in sorted(os.environ) if k.startswith(TUNING_PREFIXES)}


def cpu_model():
    """The CPU's model name (Linux's /proc/cpuinfo), or None where it cannot be read: runs on
    machines of different CPUs (AVX-512 or not) compare only within a run."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _native_isa():
    """The instruction set jrnn's native kernels are built for here, or None (not x86-64,
    or a bad JRNN_NATIVE_ISA)."""
    from jrnn import native
    try:
        return None if native._cpu_supported() else native.isa()
    except ValueError:
        return None


def environment(**extra) -> dict:
    """What a result file records about the run: backend, device, cores, the CPU's model and
    the native kernels' instruction set, versions, date,
    the load average when it started (a loaded machine's ratios are noisy), the
    environment variables that change speed (:func:`tuning_variables`), and ``extra`` (the
    run's options)."""
    import os
    import platform
    import time

    import jax
    device = jax.devices()[0]
    return {"backend": jax.default_backend(),
            "device": getattr(device, "device_kind", str(device)),
            "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_model": cpu_model(), "native_isa": _native_isa(),
            "date": time.strftime("%Y-%m-%d"),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "tuning": tuning_variables(), **extra}


def write_report(out: str, script: str, argv, title: str, body: str, rows: list) -> None:
    """Writes a worked example's results: ``out`` (markdown: the title, the command that
    made it, ``body``) and the same ``rows`` as JSON beside it. ``argv``: the script's
    arguments (None: those of this process)."""
    import json
    import sys
    command = " ".join(["python", f"scripts/{script}",
                        *(sys.argv[1:] if argv is None else argv)])
    with open(out, "w") as f:
        f.write(f"# {title}\n\n`{command}`\n\n{body}")
    with open(out.rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    print(f"written: {out}")


def write_results(out: str, name: str, env: dict, rows: list, markdown: str,
                  echo: bool = True) -> str:
    """Writes ``<out>/<backend>_<name>.json`` ({"env", "rows"}) and ``.md``, prints the
    markdown if ``echo``, and returns the path without its suffix."""
    import json
    import os
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"{env['backend']}_{name}")
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown.rstrip("\n") + "\n")
    if echo:
        print(markdown)
    return stem
