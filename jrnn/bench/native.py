"""The native LSTM forward kernel (jrnn/native.py) against jrnn's scan and PyTorch.

Two levels, each timed in interleaved rounds in one process (every implementation makes
an untimed call, then ``--calls`` timed ones, per round; medians over rounds):

* ``loop``: the forward recurrence alone, from the hoisted projection A (four (T, B, H)
  arrays with their bias) to every h_t, c_t, gate and the final carry: the native kernel
  (1 and 2 threads; with and without residuals; ``in-step``: from xs and U, the projection
  in the kernel's step) against the same loop as a ``lax.scan``
  (the driver's body: one product per step, the LSTM cell's step), and against
  ``torch.nn.LSTM``'s whole forward (input projection included) under ``no_grad``;
* ``model``: the suite's tagger (jrnn/bench/suite.py): the loss (forward) and the training
  step, ``kernel="native"`` against ``kernel="scan"`` against PyTorch (oneDNN); the native
  kernel once per ``--threads`` (``JRNN_NATIVE_THREADS`` set while it compiles).

    python -m jrnn.bench.native --configs S X --levels loop model

Writes ``<out>/cpu_native.{json,md}`` (``--out``, default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import native
from jrnn.bench import environment, suite, write_results
from jrnn.cli import integer
from jrnn.cells import lstm
from jrnn.models import tagger


def _time(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _rounds(impls: dict, rounds: int, calls: int) -> dict:
    for fn in impls.values():
        fn()  # compile / warm
    times = {name: [] for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            fn()
            times[name].append(_time(fn, calls))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _scan_loop(A, W, b_r, carry0):
    W_t = W.T

    def step(carry, A_t):
        R = carry[0] @ W_t + b_r[None]
        new, extra = lstm.step(A_t, tuple(jnp.split(R, 4, axis=-1)), carry)
        return new, (new, extra)

    final, (carries, extras) = lax.scan(step, carry0, A)
    return carries, extras, final


def loop_impls(cfg):
    T, B, H, D = cfg.T, cfg.B, cfg.H, cfg.D
    k = jax.random.split(jax.random.key(0), 5)
    A = tuple(jax.random.normal(kk, (T, B, H), jnp.float32) for kk in jax.random.split(k[0], 4))
    W = jax.random.normal(k[1], (4 * H, H), jnp.float32) / H ** 0.5
    b_r = jax.random.normal(k[2], (4 * H,), jnp.float32) * 0.1
    carry0 = (jnp.zeros((B, H), jnp.float32),) * 2
    ready = jax.block_until_ready
    scan = jax.jit(_scan_loop)
    impls = {"scan": lambda: ready(scan(A, W, b_r, carry0))}
    for n in (1, 2):
        for keep in (True, False):
            f = jax.jit(lambda A, W, b_r, c0, n=n, keep=keep: native.forward(
                "lstm", A, W, b_r, c0, reverse=False, keep_residuals=keep, num_threads=n))
            impls[f"native {n}t" + ("" if keep else " no-res")] = (
                lambda f=f: ready(f(A, W, b_r, carry0)))
    xs = jax.random.normal(k[3], (T, B, D), jnp.float32)
    U = jax.random.normal(k[4], (4 * H, D), jnp.float32) / D ** 0.5
    b = jnp.zeros((4 * H,), jnp.float32)
    for keep in (True, False):
        f = jax.jit(lambda xs, U, b, W, b_r, c0, keep=keep: native.forward_inputs(
            "lstm", xs, U, b, W, b_r, c0, reverse=False, keep_residuals=keep))
        impls["native 2t in-step" + ("" if keep else " no-res")] = (
            lambda f=f: ready(f(xs, U, b, W, b_r, carry0)))
    import torch
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(D, H)
    x = torch.randn(T, B, D)

    def torch_fwd():
        with torch.no_grad():
            return rnn(x)
    impls["torch LSTM fwd"] = torch_fwd
    return impls


@contextlib.contextmanager
def _threads(n):
    """``JRNN_NATIVE_THREADS`` = n for the duration (the kernel reads it when traced)."""
    old = os.environ.get("JRNN_NATIVE_THREADS")
    os.environ["JRNN_NATIVE_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["JRNN_NATIVE_THREADS"]
        else:
            os.environ["JRNN_NATIVE_THREADS"] = old


def model_impls(cfg, threads=(None,)):
    xs, ys = suite.data(cfg)
    params = tagger.init(jax.random.key(0), "lstm", cfg.D, cfg.H, cfg.C)
    impls = {}
    for kernel, n in [("scan", None)] + [("native", n) for n in threads]:
        loss = lambda p, xs, ys, kernel=kernel: tagger.loss(p, xs, ys, unroll=1, kernel=kernel)
        fwd, train = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
        with _threads(n) if n is not None else contextlib.nullcontext():
            fwd = fwd.lower(params, xs, ys).compile()
            train = train.lower(params, xs, ys).compile()
        name = kernel if n is None else f"{kernel} {n}t"
        impls[f"{name} forward"] = lambda f=fwd: jax.block_until_ready(f(params, xs, ys))
        impls[f"{name} train"] = lambda t=train: jax.block_until_ready(t(params, xs, ys))
    runner = suite.build_torch("lstm", cfg)
    impls["torch forward"] = runner.forward
    impls["torch train"] = runner.train
    return impls


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jrnn.bench.native",
                                description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["S", "X"], choices=suite.CONFIGS)
    p.add_argument("--levels", nargs="+", default=["loop", "model"], choices=["loop", "model"])
    p.add_argument("--rounds", type=integer(1), default=7)
    p.add_argument("--calls", type=integer(1), default=3)
    p.add_argument("--threads", nargs="+", type=integer(1), default=None,
                   help="the model level's native kernel once per thread count "
                        "(default: jrnn.native.threads())")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"),
                   help="folder for cpu_native.json and .md (default: benchmarks/results)")
    return p


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    if not native.available():
        print(f"error: jrnn.native is unavailable: {native.why_unavailable()}", file=sys.stderr)
        return 1
    import torch
    env = environment(rounds=args.rounds, calls=args.calls, torch=torch.__version__,
                      torch_threads=torch.get_num_threads(), native_threads=native.threads())
    print(env, flush=True)
    rows = []
    for name in args.configs:
        cfg = suite.CONFIGS[name]
        for level in args.levels:
            impls = (loop_impls(cfg) if level == "loop" else
                     model_impls(cfg, args.threads or (None,)))
            med = _rounds(impls, args.rounds, args.calls)
            for impl, s in med.items():
                ref = "torch LSTM fwd" if level == "loop" else (
                    "torch train" if "train" in impl else "torch forward")
                rows.append({"config": name, "level": level, "impl": impl, "ms": s * 1e3,
                             "us_per_step": s / cfg.T * 1e6, "torch_over_this": med[ref] / s})
                print(f"{name} {level:5s} {impl:26s} {s * 1e3:9.3f} ms  "
                      f"{s / cfg.T * 1e6:8.2f} us/step  torch/this {med[ref] / s:5.2f}x",
                      flush=True)
    write_results(args.out, "native", env, rows, markdown(env, rows, argv), echo=False)
    return 0


def markdown(env: dict, rows: list, argv) -> str:
    command = "python -m jrnn.bench.native " + " ".join(
        sys.argv[1:] if argv is None else argv)
    lines = [f"# The native LSTM kernels against the scan and PyTorch: {env['device']} "
             f"({env['cpu_count']} cores), jax {env['jax']}, torch {env['torch']}, "
             f"{env['date']}\n", f"`{command}`\n",
             f"Median of {env['rounds']} interleaved rounds of {env['calls']} calls; float32; "
             f"load average {env['load_average']:.2f} at the start. torch/this > 1: faster "
             f"than PyTorch's `nn.LSTM` (the loop level: its whole forward under no_grad; "
             f"the model level: the same model's forward or training step).\n",
             "| config | level | implementation | ms | µs/step | torch/this |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['level']} | {r['impl']} | {r['ms']:.2f} | "
              f"{r['us_per_step']:.1f} | {r['torch_over_this']:.2f}× |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
