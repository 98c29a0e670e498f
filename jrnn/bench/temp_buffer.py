"""The training step's temporary buffer against its time: plain cell and zoneout side by side.

For each shape and cell, jrnn's training step (tagger loss, all gradients) plain and with
zoneout 0.1: the compiled program's temporary bytes (``memory_analysis()``), the minor page
faults each call takes (``getrusage``), and the median time of interleaved rounds. A shape is
a config name, optionally with its batch and length replaced: ``S:28:128`` is S at B 28, T 128.

    python benchmarks/temp_buffer.py --shapes S S:28:128 S:36:128 --name temp_buffer

Run it again with glibc's allocator told to keep freed memory (for example
``MALLOC_MMAP_THRESHOLD_=1073741824``, in the environment before the process starts; the
result file records these variables) to see what the page faults cost.
Writes ``benchmarks/results/<backend>_<name>.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import jax

from jrnn import dropout as jd
from jrnn.bench import environment, suite, write_results
from jrnn.models import tagger

OPTIONS = {"plain": None, "zoneout 0.1": jd.Dropout(zoneout=0.1)}
MALLOC = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_")


def shape(text: str) -> tuple[str, suite.Config]:
    name, *sizes = text.split(":")
    if name not in suite.CONFIGS or len(sizes) not in (0, 2) or not all(
            s.isdigit() and int(s) > 0 for s in sizes):
        raise argparse.ArgumentTypeError(
            f"expected a config ({', '.join(suite.CONFIGS)}) or CONFIG:B:T with positive "
            f"integers, got {text!r}")
    cfg = suite.CONFIGS[name]
    return text, cfg if not sizes else cfg._replace(B=int(sizes[0]), T=int(sizes[1]))


def build(cell, cfg, option):
    """(call, temporary bytes) of one training step."""
    params = tagger.init(jax.random.key(0), cell, cfg.D, cfg.H, cfg.C)
    xs, ys = suite.data(cfg)
    regularise = {} if option is None else dict(dropout=option, key=jax.random.key(3),
                                                training=True)
    step = jax.jit(jax.value_and_grad(lambda p: tagger.loss(p, xs, ys, **regularise)))
    temp = step.lower(params).compile().memory_analysis().temp_size_in_bytes
    return (lambda: jax.block_until_ready(step(params))), temp


def timed_rounds(calls: dict, reps: int) -> tuple[dict, dict]:
    """Interleaved rounds (an untimed call, then a timed one, as suite.time_rounds):
    seconds and minor page faults of each timed call."""
    times, faults = ({k: [] for k in calls} for _ in range(2))
    for _ in range(reps):
        for key, call in calls.items():
            call()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
            faults[key].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return times, faults


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", type=shape, default=[shape("S")])
    parser.add_argument("--cells", nargs="+", default=["lstm"], choices=suite.CELLS)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--name", default="temp_buffer")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    return parser


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    env = environment(reps=args.reps, **{v: os.environ.get(v) for v in MALLOC})
    print(env, flush=True)
    rows = []
    for label, cfg in args.shapes:
        for cell in args.cells:
            built = {name: build(cell, cfg, opt) for name, opt in OPTIONS.items()}
            times, faults = timed_rounds({k: call for k, (call, _) in built.items()}, args.reps)
            base = statistics.median(times["plain"])
            for name, (_, temp) in built.items():
                rows.append({"shape": label, "B": cfg.B, "T": cfg.T, "cell": cell, "option": name,
                             "temp_MiB": temp / 2 ** 20,
                             "faults_per_call": statistics.median(faults[name]),
                             "median_ms": 1e3 * statistics.median(times[name]),
                             "ratio": statistics.median(times[name]) / base})
                print(rows[-1], flush=True)
    malloc = ", ".join(f"{v}={env[v]}" for v in MALLOC if env[v]) or "glibc defaults"
    lines = [f"# Temporary buffer and page faults: {env['device']} ({env['cpu_count']} cores), "
             f"jax {env['jax']}, {env['date']}, allocator: {malloc}\n",
             f"Training step, median of {args.reps} interleaved rounds; temp: the compiled "
             "program's temporary bytes; faults: minor page faults per call (median); in "
             "brackets the time over the plain cell's.\n",
             "| shape (B, T) | cell | option | temp MiB | faults/call | ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} ({r['B']}, {r['T']}) | {r['cell']} | {r['option']} | "
              f"{r['temp_MiB']:.2f} | {r['faults_per_call']:.0f} | {r['median_ms']:.2f} "
              f"({r['ratio']:.2f}×) |" for r in rows]
    write_results(args.out, args.name, env, rows, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
