"""What each kind of regularisation costs: the training step with it against the plain cell's.

For each config and cell, jrnn's training step (tagger loss, all gradients) with
no regularisation and with each :class:`jrnn.dropout.Dropout` option alone
(masks drawn inside the step from a key, as in training), timed in
interleaved rounds in one process (:func:`jrnn.bench.suite.time_rounds`).

    python benchmarks/regularisation.py --configs S X

Writes ``benchmarks/results/<backend>_regularisation.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax

from jrnn import dropout as jd
from jrnn.bench import environment, suite, write_results
from jrnn.models import tagger

OPTIONS = {
    "plain": None,
    "input 0.25": jd.Dropout(input=0.25),
    "recurrent 0.25": jd.Dropout(recurrent=0.25),
    "weight 0.25": jd.Dropout(weight=0.25),
    "zoneout 0.1": jd.Dropout(zoneout=0.1),
    "all": jd.Dropout(input=0.25, recurrent=0.25, weight=0.25, zoneout=0.1),
}


def build(cell, cfg, option):
    params = tagger.init(jax.random.key(0), cell, cfg.D, cfg.H, cfg.C)
    xs, ys = suite.data(cfg)
    key = jax.random.key(3)
    regularise = {} if option is None else dict(dropout=option, key=key, training=True)
    step = jax.jit(jax.value_and_grad(lambda p: tagger.loss(p, xs, ys, **regularise)))
    return lambda: jax.block_until_ready(step(params))


OUT = os.path.join("benchmarks", "results")


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--configs", nargs="+", default=["S", "X"], choices=suite.CONFIGS)
    parser.add_argument("--cells", nargs="+", default=list(suite.CELLS), choices=suite.CELLS)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", default=out)
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    env = environment(reps=args.reps)
    print(env, flush=True)
    rows = []
    for label in args.configs:
        for cell in args.cells:
            calls = {name: build(cell, suite.CONFIGS[label], opt) for name, opt in OPTIONS.items()}
            for c in calls.values():
                c(), c()
            times = suite.time_rounds(calls, args.reps)
            base = statistics.median(times["plain"])
            for name, ts in times.items():
                rows.append({"config": label, "cell": cell, "option": name,
                             "median_ms": 1e3 * statistics.median(ts),
                             "ratio": statistics.median(ts) / base})
                print(f"  {label} {cell:5s} {name:15s} {rows[-1]['median_ms']:9.2f} ms "
                      f"({rows[-1]['ratio']:.2f}×)", flush=True)
    lines = [f"# Regularisation cost: {env['device']} ({env['cpu_count']} cores), jax "
             f"{env['jax']}, {env['date']}\n",
             f"Training step (loss and all gradients), median ms of {args.reps} interleaved "
             "rounds; in brackets the time over the plain cell's (target ≤ 1.15×).\n",
             "| config | cell | " + " | ".join(OPTIONS) + " |", "|---|---|" + "---|" * len(OPTIONS)]
    for label in args.configs:
        for cell in args.cells:
            by = {r["option"]: r for r in rows if (r["config"], r["cell"]) == (label, cell)}
            lines.append(f"| {label} | {cell} | " + " | ".join(
                f"{by[o]['median_ms']:.1f} ({by[o]['ratio']:.2f}×)" for o in OPTIONS) + " |")
    write_results(args.out, "regularisation", env, rows, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
