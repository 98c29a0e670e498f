"""Memory against time for memory-bounded BPTT (``jrnn.remat.segmented``).

One long sequence (default T = 65,536, B = 8, D = 64, H = 256, C = 64, tanh
cell): the training step (loss and all gradients) of full BPTT, then of the
segmented version for several segment lengths k. For each: XLA's compiled
temporary memory and the median time over ``--reps`` calls. The gradients of
every k are checked against full BPTT's in the same run.

    python benchmarks/remat_curve.py
    python benchmarks/remat_curve.py --T 16384 --segments 64 128 256

Writes ``benchmarks/results/<backend>_remat.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import jrnn
from jrnn.bench import environment
from jrnn.models import tagger


OUT = os.path.join("benchmarks", "results")  # `jrnn bench --remat` passes runs/bench instead


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    from jrnn.cli import ArgumentParser, integer
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    for name, default in (("T", 65536), ("B", 8), ("D", 64), ("H", 256), ("C", 64)):
        parser.add_argument(f"--{name}", type=integer(1), default=default)
    parser.add_argument("--cell", default="elman", choices=jrnn.cells.names())
    parser.add_argument("--segments", nargs="+", type=integer(1),
                        default=[64, 128, 256, 512, 1024, 4096])
    parser.add_argument("--reps", type=integer(1), default=5)
    parser.add_argument("--out", default=out,
                        help=f"folder for the JSON, markdown and PNG results (default: {out})")
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)

    k = jax.random.split(jax.random.key(0), 3)
    params = tagger.init(k[0], args.cell, args.D, args.H, args.C)
    xs = jax.random.normal(k[1], (args.T, args.B, args.D), jnp.float32)
    ys = jax.random.randint(k[2], (args.T, args.B), 0, args.C)
    h0 = jrnn.layers.zero_states(params.rnn, (args.B,))
    loss_and_state = functools.partial(tagger.loss_and_state, reduction="sum")

    def step_for(segment):
        fn = loss_and_state if segment is None else jrnn.remat.segmented(loss_and_state, segment)
        return jax.jit(jax.grad(lambda p: fn(p, xs, ys, h0)[0]))

    rows, reference = [], None
    for segment in [None] + args.segments:
        step = step_for(segment)
        temp = step.lower(params).compile().memory_analysis().temp_size_in_bytes
        t0 = time.perf_counter()
        grads = jax.block_until_ready(step(params))
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            jax.block_until_ready(step(params))
            times.append(time.perf_counter() - t0)
        if reference is None:
            reference, error = grads, 0.0
        else:
            error = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)))
        rows.append({"segment": segment, "temp_bytes": int(temp), "first_s": first,
                     "median_s": statistics.median(times), "grad_rel_error": error})
        print(f"segment {str(segment):>5}: temp {temp / 2**20:9.1f} MiB, "
              f"{rows[-1]['median_s']:.2f} s, rel. error {error:.1e}", flush=True)

    full = rows[0]
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{jax.default_backend()}_remat")
    env = environment(**{k: getattr(args, k) for k in ("T", "B", "D", "H", "C", "cell", "reps")})
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    lines = [f"# Memory-bounded BPTT: T={args.T}, B={args.B}, D={args.D}, H={args.H}, "
             f"C={args.C}, {args.cell} cell ({env['backend']}, {env['cpu_count']} cores, "
             f"jax {env['jax']}, {env['date']})\n",
             f"Training step (loss and all gradients), median of {args.reps} calls. Memory is "
             "XLA's compiled temporary memory. The gradient error is against full BPTT.\n",
             "| segment k | temp memory (MiB) | vs full | time (s) | vs full | grad rel. error |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['segment'] or 'full BPTT'} | {r['temp_bytes'] / 2**20:.1f} | "
                     f"{r['temp_bytes'] / full['temp_bytes']:.3f} | {r['median_s']:.2f} | "
                     f"{r['median_s'] / full['median_s']:.2f}× | {r['grad_rel_error']:.1e} |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 4))
        seg = [r for r in rows if r["segment"]]
        ax.plot([r["median_s"] for r in seg], [r["temp_bytes"] / 2**20 for r in seg], "o-",
                label="segmented")
        for r in seg:
            ax.annotate(f"k={r['segment']}", (r["median_s"], r["temp_bytes"] / 2**20),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.plot([full["median_s"]], [full["temp_bytes"] / 2**20], "s", color="C3",
                label="full BPTT")
        ax.set(yscale="log", xlabel="training step, s", ylabel="temporary memory, MiB",
               title=f"T={args.T}, B={args.B}, H={args.H}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(stem + ".png", dpi=120)
        lines.append(f"\n![memory against time]({os.path.basename(stem)}.png)")
    except ImportError:
        pass
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
