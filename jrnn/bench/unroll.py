"""The ``lax.scan`` unroll factor against time: how ``jrnn.default_unroll`` is chosen.

For each config and cell, jrnn's training step (loss and all gradients, the
hand-written BPTT) and its forward at every ``--unroll`` factor, timed in
interleaved rounds in one process like the suite (``jrnn.bench.suite``).

    python benchmarks/unroll.py --configs S M X --unroll 1 2 4 8 16 32

Writes ``benchmarks/results/<backend>_unroll.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


from jrnn.bench import environment, suite, write_results


OUT = os.path.join("benchmarks", "results")


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--configs", nargs="+", default=["S", "M", "X"], choices=suite.CONFIGS)
    parser.add_argument("--cells", nargs="+", default=list(suite.CELLS), choices=suite.CELLS)
    parser.add_argument("--unroll", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=out,
                        help="folder for the JSON and markdown results")
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    env = environment(reps=args.reps)
    print(env, flush=True)
    rows = []
    for label in args.configs:
        cfg = suite.CONFIGS[label]
        for cell in args.cells:
            runners = {u: suite.build_jrnn(cell, cfg, "manual", u) for u in args.unroll}
            for kind in ("train", "forward"):
                calls, first = {}, {}
                for u, r in runners.items():
                    call = getattr(r, kind)
                    t0 = time.perf_counter()
                    call()
                    first[u] = time.perf_counter() - t0
                    call()
                    calls[u] = call
                times = suite.time_rounds(calls, args.reps)
                for u in args.unroll:
                    rows.append({"config": label, "cell": cell, **cfg._asdict(), "unroll": u,
                                 "kind": kind, "median_ms": 1e3 * statistics.median(times[u]),
                                 "first_s": first[u]})
                    print(f"  {label} {cell:5s} {kind:7s} unroll {u:3d} "
                          f"{rows[-1]['median_ms']:9.3f} ms  (first {first[u]:.1f} s)", flush=True)
    lines = [f"# Unroll sweep: {env['device']}, jax {env['jax']}, {env['date']}\n",
             f"Median of {args.reps} interleaved rounds, ms; float32, default matmul precision. "
             "In brackets: time relative to unroll 1.\n",
             "| config | cell | kind | " + " | ".join(f"unroll {u}" for u in args.unroll) + " |",
             "|---|---|---|" + "---|" * len(args.unroll)]
    for label in args.configs:
        for cell in args.cells:
            for kind in ("train", "forward"):
                by = {r["unroll"]: r["median_ms"] for r in rows
                      if (r["config"], r["cell"], r["kind"]) == (label, cell, kind)}
                base = by[args.unroll[0]]
                lines.append(f"| {label} | {cell} | {kind} | " + " | ".join(
                    f"{by[u]:.2f} ({by[u] / base:.2f})" for u in args.unroll) + " |")
    write_results(args.out, "unroll", env, rows, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
