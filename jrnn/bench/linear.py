"""Linear recurrences (:mod:`jrnn.linear`): the hand-written adjoint scan against autodiff.

Three measurements, in one process:

* **targets**: the training step (loss = Σ_t ⟨h_t, G_t⟩ / T for a fixed random G,
  gradients of U and the bias) of one layer, hand-written (``backward="manual"``)
  against JAX autodiff of the same forward in the same mode (``parallel``:
  through ``lax.associative_scan``; ``sequential``: through ``lax.scan``), timed in
  interleaved rounds (:func:`jrnn.bench.suite.time_rounds`); temporary memory of
  each compiled step from ``memory_analysis()``. The parallel mode's hand-written
  step once per backward in ``--adjoints`` (default: the platform's). Targets: time
  ratio ≥ 1.5, memory ratio ≤ 0.7.
* **sweep**: the hand-written training step of both modes over T, the measured
  choice of :func:`jrnn.linear.default_mode`; a plot.
* **agreement**: at a long T with small B·H, parallel against sequential in
  float64 (forward and every gradient), and float32 against float64 (the plain-
  space scan's stability, the reason no log-space variant is used).

    python benchmarks/linear.py --reps 3 --cells mingru minlstm lru

Writes ``benchmarks/results/<backend>_linear.{json,md}`` and ``..._linear_sweep.png``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp

from jrnn import linear
from jrnn.bench import environment, suite, write_results

OUT = os.path.join("benchmarks", "results")
MODES = linear.MODES


def _blocks(cell: str) -> int:
    return linear._contract.get(cell).blocks


def build(cell, T, B, D, H, mode, backward, dtype=jnp.float32, adjoint=None):
    """A jitted training step and its arguments."""
    k = jax.random.split(jax.random.key(0), 5)
    # Drawn in float32 and cast, so that every dtype sees the same numbers.
    xs = jax.random.normal(k[0], (T, B, D), jnp.float32).astype(dtype)
    G = jax.random.normal(k[1], (T, B, H), jnp.float32).astype(dtype)
    U = (jax.random.normal(k[2], (_blocks(cell) * H, D), jnp.float32) / D ** 0.5).astype(dtype)
    lru = cell == "lru"
    bias = None if lru else jnp.zeros((_blocks(cell) * H,), dtype)
    params = None if not lru else jax.tree.map(
        lambda a: a.astype(dtype),
        linear._contract.get(cell).init_params(k[3], H, jnp.float32))

    def loss(p, xs, G):
        hs, _ = linear.linear_rnn(cell, p[0], p[1], xs, cell_params=p[2], mode=mode,
                                  adjoint=adjoint, backward=backward)
        return jnp.sum(jnp.real(hs) * G) / T

    step = jax.jit(jax.value_and_grad(loss))
    args = ((U, bias, params), xs, G)
    return step, args


def temp_bytes(step, args):
    try:
        return int(step.lower(*args).compile().memory_analysis().temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def targets(cell, Ts, B, D, H, reps, adjoints=None):
    """The target table's rows: per T, autodiff once per mode, the hand-written step once
    per (mode, adjoint), all in one set of interleaved rounds."""
    schemes = [("parallel", a) for a in (adjoints or [linear.default_adjoint()])]
    schemes.append(("sequential", None))
    rows = []
    for T in Ts:
        calls, mem = {}, {}
        runs = [(mode, None, "autodiff") for mode in MODES]
        runs += [(mode, adjoint, "manual") for mode, adjoint in schemes]
        for mode, adjoint, backward in runs:
            step, args = build(cell, T, B, D, H, mode, backward, adjoint=adjoint)
            key = mode, adjoint, backward
            mem[key] = temp_bytes(step, args)
            calls[key] = lambda step=step, args=args: jax.block_until_ready(step(*args))
            calls[key]()
        times = suite.time_rounds(calls, reps)
        for mode, adjoint in schemes:
            t_m = statistics.median(times[mode, adjoint, "manual"])
            t_a = statistics.median(times[mode, None, "autodiff"])
            m_m, m_a = mem[mode, adjoint, "manual"], mem[mode, None, "autodiff"]
            rows.append({"cell": cell, "T": T, "B": B, "D": D, "H": H, "mode": mode,
                         "adjoint": adjoint or linear.default_adjoint(mode=mode, cell=cell),
                         "manual_ms": 1e3 * t_m, "autodiff_ms": 1e3 * t_a,
                         "speedup": t_a / t_m, "manual_temp_mb": m_m and m_m / 2**20,
                         "autodiff_temp_mb": m_a and m_a / 2**20,
                         "memory_ratio": m_m / m_a if m_m and m_a else None})
            r = rows[-1]
            print(f"  {cell} T={T:6d} {mode:10s} {r['adjoint']:11s} manual {r['manual_ms']:8.1f} ms  autodiff "
                  f"{r['autodiff_ms']:8.1f} ms  {r['speedup']:.2f}×  memory "
                  f"{r['memory_ratio'] or float('nan'):.2f}×", flush=True)
        del calls
    return rows


def sweep(cell, Ts, B, D, H, reps):
    rows = []
    for T in Ts:
        calls = {}
        for mode in MODES:
            step, args = build(cell, T, B, D, H, mode, "manual")
            calls[mode] = lambda step=step, args=args: jax.block_until_ready(step(*args))
            calls[mode]()
        times = suite.time_rounds(calls, reps)
        row = {"cell": cell, "T": T, "B": B, "D": D, "H": H}
        row.update({f"{mode}_ms": 1e3 * statistics.median(times[mode]) for mode in MODES})
        row["sequential_over_parallel"] = row["sequential_ms"] / row["parallel_ms"]
        rows.append(row)
        print(f"  sweep {cell} T={T:6d} parallel {row['parallel_ms']:9.1f} ms  sequential "
              f"{row['sequential_ms']:9.1f} ms", flush=True)
        del calls
    return rows


def _relative(a, b) -> float:
    return max(float(jnp.linalg.norm(jnp.ravel(x - y)) / jnp.linalg.norm(jnp.ravel(y)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def agreement(cell, T, B, H, D=4):
    """Worst relative difference of (hs, every gradient): parallel vs sequential (float64),
    float32 (each mode) vs float64 sequential."""
    results = {}
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        for dtype in (jnp.float64, jnp.float32):
            for mode in MODES:
                step, args = build(cell, T, B, D, H, mode, "manual", dtype)
                fwd = jax.jit(lambda p, xs, mode=mode: linear.linear_rnn(
                    cell, p[0], p[1], xs, cell_params=p[2], mode=mode)[0])
                value, grads = step(*args)
                results[dtype, mode] = jax.tree.map(
                    lambda a: jnp.asarray(a, jnp.complex128 if jnp.iscomplexobj(a)
                                          else jnp.float64),
                    (fwd(args[0], args[1]), grads))
        ref = results[jnp.float64, "sequential"]
        row = {"cell": cell, "T": T, "B": B, "H": H,
               "parallel_vs_sequential_f64": _relative(results[jnp.float64, "parallel"], ref),
               "parallel_f32_vs_f64": _relative(results[jnp.float32, "parallel"], ref),
               "sequential_f32_vs_f64": _relative(results[jnp.float32, "sequential"], ref)}
    finally:
        jax.config.update("jax_enable_x64", x64)
    print(f"  agreement {row}", flush=True)
    return row


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for cell in sorted({r["cell"] for r in rows}):
        mine = [r for r in rows if r["cell"] == cell]
        Ts = [r["T"] for r in mine]
        for i, mode in enumerate(MODES):
            ax.plot(Ts, [r[f"{mode}_ms"] for r in mine], marker="o", color=f"C{i}",
                    label=f"{cell} {mode}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("T (sequence length)")
    ax.set_ylabel("training step (ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=epilog)
    parser.add_argument("--cells", nargs="+", default=["mingru"],
                        choices=linear._contract.names())
    parser.add_argument("--T", nargs="+", type=int, default=[1024, 4096, 16384],
                        help="sequence lengths of the target table")
    parser.add_argument("--sweep", nargs="*", type=int,
                        default=[256, 1024, 4096, 16384, 65536],
                        help="sequence lengths of the mode sweep (none: skip it)")
    parser.add_argument("--sweep-cells", nargs="+", default=["mingru"],
                        choices=linear._contract.names(), help="the cells of the mode sweep")
    parser.add_argument("--adjoints", nargs="+", choices=linear.ADJOINTS,
                        help="the parallel mode's backwards to time (default: the "
                             "platform's, jrnn.linear.default_adjoint())")
    parser.add_argument("--agreement-T", type=int, default=65536)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=out)
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    env = environment(reps=args.reps)
    print(env, flush=True)
    rows = {"targets": [], "sweep": [], "agreement": []}
    for cell in args.cells:
        rows["targets"] += targets(cell, args.T, args.B, args.D, args.H, args.reps,
                                   args.adjoints)
        if args.sweep and cell in args.sweep_cells:
            rows["sweep"] += sweep(cell, args.sweep, args.B, args.D, args.H, args.reps)
        rows["agreement"].append(agreement(cell, args.agreement_T, 2, 8))
    lines = [f"# Linear recurrences: {env['device']} ({env['cpu_count']} cores), jax "
             f"{env['jax']}, {env['date']}, load average {env['load_average']}\n",
             f"Training step (loss and gradients of U and the bias), B {args.B}, D {args.D}, "
             f"H {args.H}, median ms of {args.reps} interleaved rounds. Speed-up = autodiff's "
             "time / the hand-written one's, same forward, same mode (target ≥ 1.5); memory = "
             "the hand-written step's compiled temporary memory / autodiff's (target ≤ 0.7).\n",
             "| cell | T | mode | hand-written ms | autodiff ms | speed-up | temp MiB (hand / auto) "
             "| memory ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows["targets"]:
        mode = r["mode"] + (f" ({r['adjoint']})" if r.get("adjoint") else "")
        lines.append(f"| {r['cell']} | {r['T']} | {mode} | {r['manual_ms']:.1f} | "
                     f"{r['autodiff_ms']:.1f} | {r['speedup']:.2f}× | "
                     f"{r['manual_temp_mb'] or 0:.0f} / {r['autodiff_temp_mb'] or 0:.0f} | "
                     f"{r['memory_ratio'] or float('nan'):.2f} |")
    if rows["sweep"]:
        lines += ["", "Mode sweep, hand-written training step (ms); the faster mode is "
                  "the platform's default:\n", "| cell | T | parallel | sequential | "
                  "sequential / parallel |", "|---|---|---|---|---|"]
        for r in rows["sweep"]:
            lines.append(f"| {r['cell']} | {r['T']} | {r['parallel_ms']:.1f} | "
                         f"{r['sequential_ms']:.1f} | {r['sequential_over_parallel']:.2f} |")
    lines += ["", f"Agreement at T = {args.agreement_T}, B 2, H 8 (worst relative difference "
              "over the outputs and every gradient):\n",
              "| cell | parallel vs sequential, float64 | parallel float32 vs float64 | "
              "sequential float32 vs float64 |", "|---|---|---|---|"]
    for r in rows["agreement"]:
        lines.append(f"| {r['cell']} | {r['parallel_vs_sequential_f64']:.1e} | "
                     f"{r['parallel_f32_vs_f64']:.1e} | {r['sequential_f32_vs_f64']:.1e} |")
    stem = write_results(args.out, "linear", env, rows, "\n".join(lines))
    if rows["sweep"]:
        plot(rows["sweep"], stem + "_sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
