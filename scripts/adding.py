"""The adding problem: can the network carry two numbers across T steps?

Every step has a value in [0, 1) and a marker; the target is the sum of the two
marked values, one marker in each half of the sequence (Hochreiter &
Schmidhuber 1997; Le et al. 2015). Predicting the mean gives a mean squared
error of 1/6 ≈ 0.167; solving the task means a test MSE near 0. A many-to-one
regressor reads the final state; each training batch is freshly drawn and the
test set is fixed.

Runs every requested cell at every requested length, side by side, and
prints a markdown table (optionally written with ``--out``).

    python scripts/adding.py                                  # tanh RNN, T = 100 and 200
    python scripts/adding.py --cells elman --lengths 50 100 200 400 --out docs/results/adding.md
    python scripts/adding.py --cells elman lstm --lengths 100 --flow docs/results/flow.png

``--flow`` draws the gradient flow (:mod:`jrnn.diagnostics`) of every run at
initialisation and after training: ‖∂J/∂h_t‖ and each step's contribution to
∇W, on 100 test sequences, against t.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jrnn
from jrnn.data import adding_problem
from jrnn.models import classifier

BASELINE = 1 / 6


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["elman"], choices=jrnn.cells.names())
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 200])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--forget-bias", type=float, default=None,
                        help="LSTM only: initial forget-gate bias (e.g. 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the table here (markdown) and beside it JSON")
    parser.add_argument("--flow", help="write the gradient-flow plot here (PNG)")
    return parser.parse_args(argv)


def train_one(cell: str, length: int, args) -> dict:
    rng = np.random.default_rng(args.seed)
    test_x, test_y = map(jnp.asarray, adding_problem(np.random.default_rng(12345), 1000, length))
    options = {"forget_bias": args.forget_bias} if cell == "lstm" and args.forget_bias else {}
    params = classifier.init(jax.random.key(args.seed), cell, 2, args.hidden, 1, **options)
    optimizer = jrnn.train.adam(args.lr, args.clip)
    step = jrnn.train.make_train_step(
        lambda p, batch: (classifier.regression_loss(p, *batch, reduction="mean"), None),
        optimizer)
    test_mse = jax.jit(lambda p: classifier.regression_loss(p, test_x, test_y, reduction="mean"))
    flow = lambda p: jrnn.diagnostics.gradient_flow(
        lambda p: classifier.regression_loss(p, test_x[:, :100], test_y[:100], reduction="mean"),
        p)[1][0]
    flow_start = flow(params)
    opt_state, best, t0 = optimizer.init(params), float("inf"), time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc=f"{cell} T={length}", file=sys.stdout,
               mininterval=1.0)
    for i in bar:
        batch = tuple(map(jnp.asarray, adding_problem(rng, args.batch, length)))
        params, opt_state, _, metrics = step(params, opt_state, batch)
        if not metrics.finite:
            bar.close()
            raise FloatingPointError(f"{cell} T={length}: non-finite loss or gradient at step {i}")
        if i % 250 == 0 or i == args.steps:
            best = min(best, float(test_mse(params)))
            bar.set_postfix(test_mse=f"{best:.4f}")
    bar.close()
    final, seconds = float(test_mse(params)), time.perf_counter() - t0
    flow_end = flow(params)
    name = cell + (f" (forget bias {args.forget_bias:g})" if options else "")
    return {"cell": name, "T": length, "test_mse": final, "best_test_mse": min(best, final),
            "steps": args.steps, "batch": args.batch, "hidden": args.hidden,
            "seconds": seconds,
            "horizon_start": horizon(flow_start), "horizon_end": horizon(flow_end),
            "flows": {"start": flow_start, "end": flow_end}}


def horizon(flow, drop: float = 1e-6) -> int:
    """Steps back from T over which ‖∂J/∂h_t‖ stays at least ``drop`` × ‖∂J/∂h_T‖:
    how far back the error signal of the last step reaches."""
    reached = flow.dh_norm[::-1] >= drop * flow.dh_norm[-1]
    return int(len(reached) if reached.all() else np.argmin(reached))


def table(rows) -> str:
    lines = ["| cell | T | test MSE (end) | best test MSE | of the baseline 0.167 | "
             "gradient horizon, init → end | time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['T']} | {r['test_mse']:.4f} | {r['best_test_mse']:.4f} "
                     f"| {r['best_test_mse'] / BASELINE:.0%} | {r['horizon_start']} → "
                     f"{r['horizon_end']} steps | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = [train_one(cell, length, args) for length in args.lengths for cell in args.cells]
    text = table(rows)
    print(f"\nadding problem, H={args.hidden}, {args.steps} steps of {args.batch} sequences, "
          f"Adam lr {args.lr}, clip {args.clip}\n{text}")
    if args.flow:
        flows = [r["flows"][when] for r in rows for when in ("start", "end")]
        labels = [f"{r['cell']} T={r['T']}, {when}" for r in rows
                  for when in ("initialisation", f"after {r['steps']} steps")]
        jrnn.plots.gradient_flow(flows, args.flow, labels=labels,
                                 title="adding problem: loss at the last step only")
        print(f"gradient flow: {args.flow}")
    for r in rows:
        del r["flows"]
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# The adding problem\n\n`python scripts/adding.py {' '.join(sys.argv[1:])}`"
                    f"\n\nH={args.hidden}, {args.steps} training steps of {args.batch} fresh "
                    f"sequences, Adam lr {args.lr}, global-norm clip {args.clip}; test MSE on "
                    f"1000 fixed sequences, checked every 250 steps. Predicting the mean scores "
                    f"1/6 ≈ 0.167. Gradient horizon: the steps back from T over which "
                    f"‖∂J/∂h_t‖ ≥ 1e-6 ‖∂J/∂h_T‖ on 100 test sequences (jrnn.diagnostics).\n\n"
                    f"{text}\n")
        with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
