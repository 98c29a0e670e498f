"""Precision against speed: float32, bfloat16 products (``matmul_dtype``), bfloat16 parameters.

For each cell, one batch at each config: the training step (loss and all
gradients of ``jrnn.models.tagger``) in

* float32 (the default);
* float32 parameters with ``matmul_dtype=jnp.bfloat16`` (products on bfloat16
  inputs, accumulated in float32; everything else float32);
* bfloat16 parameters and inputs end to end;

the relative error of every gradient against the float64 gradient of the same
parameters (norm-wise, the worst leaf), and the median time of the float32 and
the bfloat16-product steps over interleaved rounds.

    python benchmarks/precision.py
    jrnn bench --precision

Writes ``benchmarks/results/<backend>_precision.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 reference only
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jrnn  # noqa: E402
from jrnn.bench import environment  # noqa: E402
from jrnn.bench.suite import CONFIGS, data  # noqa: E402
from jrnn.models import tagger  # noqa: E402

VARIANTS = ("float32", "bf16 products", "bf16 parameters")


def worst_error(grads, reference) -> float:
    worst = 0.0
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        worst = max(worst, float(np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-300)))
    return worst


def measure(label: str, cell: str, reps: int) -> dict:
    cfg = CONFIGS[label]
    xs, ys = data(cfg)
    p32 = tagger.init(jax.random.key(0), cell, cfg.D, cfg.H, cfg.C)
    cast = lambda tree, dt: jax.tree.map(lambda a: a.astype(dt), tree)
    grad = lambda md=None: jax.jit(jax.value_and_grad(
        lambda p, xs: tagger.loss(p, xs, ys, reduction="mean", matmul_dtype=md)))
    ref = grad()(cast(p32, jnp.float64), xs.astype(jnp.float64))[1]
    steps = {"float32": (grad(), p32, xs),
             "bf16 products": (grad(jnp.bfloat16), p32, xs),
             "bf16 parameters": (grad(), cast(p32, jnp.bfloat16), xs.astype(jnp.bfloat16))}
    row = {"config": label, "cell": cell, **cfg._asdict()}
    calls = {}
    for name, (fn, p, x) in steps.items():
        row[f"error {name}"] = worst_error(fn(p, x)[1], ref)
        calls[name] = lambda fn=fn, p=p, x=x: jax.block_until_ready(fn(p, x))
        for _ in range(2):
            calls[name]()
    times = {k: [] for k in calls}
    for _ in range(reps):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    for name in calls:
        row[f"ms {name}"] = 1e3 * statistics.median(times[name])
    print(f"  {label} {cell:5s} " + "  ".join(
        f"{n}: {row[f'ms {n}']:.2f} ms, err {row[f'error {n}']:.1e}" for n in VARIANTS),
        flush=True)
    return row


def table(rows) -> str:
    lines = ["| config | cell | " + " | ".join(f"{v}: ms (× f32)" for v in VARIANTS) + " | "
             + " | ".join(f"{v}: gradient error" for v in VARIANTS) + " |",
             "|---|---|" + "---|" * (2 * len(VARIANTS))]
    for r in rows:
        f32 = r["ms float32"]
        times = [f"{r[f'ms {v}']:.2f}" + ("" if v == "float32" else f" ({r[f'ms {v}'] / f32:.2f}×)")
                 for v in VARIANTS]
        errors = [f"{r[f'error {v}']:.1e}" for v in VARIANTS]
        lines.append(f"| {r['config']} | {r['cell']} | " + " | ".join(times + errors) + " |")
    return "\n".join(lines)


OUT = os.path.join("benchmarks", "results")  # `jrnn bench --precision` passes runs/bench


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    from jrnn.cli import ArgumentParser, integer
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--configs", nargs="+", default=["S", "X"], choices=CONFIGS)
    parser.add_argument("--cells", nargs="+", default=list(jrnn.cells.names()),
                        choices=jrnn.cells.names())
    parser.add_argument("--reps", type=integer(1), default=20)
    parser.add_argument("--out", default=out,
                        help=f"folder for the JSON and markdown results (default: {out})")
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    env = environment(reps=args.reps)
    print(env, flush=True)
    rows = [measure(label, cell, args.reps) for label in args.configs for cell in args.cells]
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{env['backend']}_precision")
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    text = (f"# Precision and speed: {env['device']} ({env['cpu_count']} cores), jax "
            f"{env['jax']}, {env['date']}\n\n`python benchmarks/precision.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\nTraining step of the "
            f"tagger (mean loss); median of {args.reps} interleaved rounds. Gradient error: "
            f"the worst leaf's ‖g − g64‖ / ‖g64‖ against float64 gradients of the same "
            f"parameters and batch.\n\n" + table(rows) + "\n")
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
