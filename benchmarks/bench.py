"""Training-step benchmark: jrnn's hand-written BPTT beside its baselines, in one run.

A training step is the loss and every gradient (U, W, b, V, c) of the seeds'
tanh RNN, float32 parameters. Each implementation is compiled once (the time
of that first call is reported as compile time), warmed up, then timed in
interleaved rounds, one call per implementation per round, so that drift on a
shared machine hits them all alike; the median over rounds is reported.
Results are synchronised with ``block_until_ready``.

    python benchmarks/bench.py                       # CPU configs S, M, X
    python benchmarks/bench.py --configs S --reps 50 --unroll 1 4 8

Writes ``benchmarks/results/<backend>_train_step.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

import jrnn


class Config(NamedTuple):
    B: int
    T: int
    D: int
    H: int
    C: int


# DESIGN.md §5.
CONFIGS = {
    "S": Config(B=32, T=128, D=64, H=128, C=64),
    "M": Config(B=64, T=512, D=128, H=512, C=128),
    "L": Config(B=256, T=256, D=256, H=1024, C=256),
    "X": Config(B=8, T=2048, D=64, H=256, C=64),
}


def problem(cfg: Config, seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 3)
    p = jrnn.elman.init(k[0], cfg.D, cfg.H, cfg.C)
    xs = jax.random.normal(k[1], (cfg.T, cfg.B, cfg.D), jnp.float32)
    ys = jax.random.randint(k[2], (cfg.T, cfg.B), 0, cfg.C)
    return p, xs, ys


def jrnn_step(backward: str, unroll: int) -> Callable:
    """jit(value_and_grad(loss)) of jrnn.elman with the given backward and unroll."""
    def loss(p, xs, ys):
        return jrnn.elman.loss(p, xs, ys, unroll=unroll, backward=backward)
    return jax.jit(jax.value_and_grad(loss))


def implementations(unrolls) -> dict[str, Callable]:
    impls = {}
    for u in unrolls:
        impls[f"jrnn (unroll {u})"] = jrnn_step("manual", u)
        impls[f"autodiff (unroll {u})"] = jrnn_step("autodiff", u)
    return impls


def temp_bytes(fn, *args) -> int | None:
    try:
        return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)
    except Exception:  # memory_analysis is not available on every backend
        return None


def run(configs, unrolls, reps: int, warmup: int = 2) -> list[dict]:
    rows = []
    for name in configs:
        cfg = CONFIGS[name]
        args = problem(cfg)
        impls = implementations(unrolls)
        compile_s, times = {}, {k: [] for k in impls}
        for key, fn in impls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            compile_s[key] = time.perf_counter() - t0
            for _ in range(warmup):
                jax.block_until_ready(fn(*args))
        for _ in range(reps):
            for key, fn in impls.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times[key].append(time.perf_counter() - t0)
        for key, fn in impls.items():
            rows.append({
                "config": name, **cfg._asdict(), "impl": key,
                "median_ms": 1e3 * statistics.median(times[key]),
                "min_ms": 1e3 * min(times[key]),
                "compile_s": compile_s[key],
                "temp_bytes": temp_bytes(fn, *args),
                "reps": reps,
            })
            print(f"{name} {key:24s} {rows[-1]['median_ms']:9.2f} ms "
                  f"(first call {compile_s[key]:.2f} s)", flush=True)
    return rows


def markdown(rows: list[dict], unrolls) -> str:
    lines = ["| config | " + " | ".join(
        f"jrnn ms (unroll {u}) | autodiff ms (unroll {u}) | speed-up" for u in unrolls) +
        " | temp memory jrnn / autodiff |",
        "|---|" + "---|---|---|" * len(unrolls) + "---|"]
    for name in dict.fromkeys(r["config"] for r in rows):
        by = {r["impl"]: r for r in rows if r["config"] == name}
        cells = []
        for u in unrolls:
            m, a = by[f"jrnn (unroll {u})"], by[f"autodiff (unroll {u})"]
            cells += [f"{m['median_ms']:.1f}", f"{a['median_ms']:.1f}",
                      f"**{a['median_ms'] / m['median_ms']:.2f}×**"]
        u0 = unrolls[0]
        m, a = by[f"jrnn (unroll {u0})"]["temp_bytes"], by[f"autodiff (unroll {u0})"]["temp_bytes"]
        cells.append(f"{m / a:.2f}" if m and a else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["S", "M", "X"], choices=CONFIGS)
    parser.add_argument("--unroll", nargs="+", type=int, default=[1])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    device = jax.devices()[0]
    env = {"backend": backend, "device": getattr(device, "device_kind", str(device)),
           "cpu_count": os.cpu_count(), "jax": jax.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    print(env, flush=True)
    rows = run(args.configs, args.unroll, args.reps)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{backend}_train_step")
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    table = markdown(rows, args.unroll)
    with open(stem + ".md", "w") as f:
        f.write(f"# Training step, tanh RNN ({env['device']}, {env['cpu_count']} cores, "
                f"jax {env['jax']}, {env['date']})\n\n"
                "Loss and all gradients, float32, median of "
                f"{args.reps} interleaved rounds. Speed-up = autodiff time / jrnn time "
                "(same forward, same unroll). Temp memory: XLA's compiled temporary "
                "buffers.\n\n" + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
