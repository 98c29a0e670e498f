"""The persistent recurrence kernel against the scan path and cuDNN.

For each case (cell, B, T, D, H, product dtype): the kernel's gradients
against the scan path's (float32 under "highest" matmul precision, fresh random
data; and under the default precision), then, timed in interleaved rounds:
the forward recurrence alone (µs per step), the model's forward (loss) and
its training step (loss and all gradients), for jrnn's scan path, jrnn with the
persistent kernel, and ``torch.nn.RNN``/``LSTM``/``GRU`` (cuDNN) where torch
has CUDA. On a CPU the kernel runs in interpret mode: correctness only, use
``--no-time``.

    python benchmarks/persistent.py
    python benchmarks/persistent.py --warps 4 8 --weight-limit 262144

Writes ``benchmarks/results/<backend>_persistent.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import persistent
from jrnn.bench import environment, suite, write_results
from jrnn.models import tagger

# (cell, B, T, D, H, C, matmul dtype or None)
CASES = [
    ("elman", 8, 2048, 64, 256, 64, "bfloat16"),   # config X, bf16 products
    ("elman", 8, 2048, 64, 256, 64, None),         # config X, float32 (needs 256 KiB)
    ("elman", 8, 2048, 64, 128, 64, None),
    ("elman", 32, 128, 64, 128, 64, None),         # config S
    ("elman", 256, 256, 64, 128, 64, None),
    ("lstm", 8, 2048, 64, 128, 64, "bfloat16"),
    ("lstm", 8, 2048, 64, 128, 64, None),
    ("gru", 8, 2048, 64, 128, 64, "bfloat16"),
    ("gru", 8, 2048, 64, 128, 64, None),
]


def _rel(a, b):
    a, b = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])
            for t in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check(cell, B, T, D, H, C, md, seed):
    """Relative gradient error of the kernel against the scan, highest and default."""
    cfg = suite.Config(B=B, T=T, D=D, H=H, C=C)
    params = tagger.init(jax.random.key(seed), cell, D, H, C)
    xs, ys = suite.data(cfg, seed + 1)
    grad = lambda kernel: jax.jit(jax.value_and_grad(
        lambda p: tagger.loss(p, xs, ys, matmul_dtype=md, kernel=kernel)))(params)
    out = {}
    for precision in ("highest", "default"):
        with jax.default_matmul_precision(precision):
            (v_k, g_k), (v_s, g_s) = grad("persistent"), grad("scan")
        ok = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g_k))
        out[precision] = {"loss": abs(float(v_k - v_s)) / abs(float(v_s)),
                          "grads": _rel(g_k, g_s), "finite": ok}
    return out


def timings(cell, B, T, D, H, C, md, reps, unroll):
    cfg = suite.Config(B=B, T=T, D=D, H=H, C=C)
    params = tagger.init(jax.random.key(0), cell, D, H, C)
    xs, ys = suite.data(cfg)
    layer = params.rnn[0][0]
    calls = {}
    for kernel in ("scan", "persistent"):
        loss = lambda p, xs, ys, kernel=kernel: tagger.loss(p, xs, ys, unroll=unroll,
                                                            matmul_dtype=md, kernel=kernel)
        train, fwd = jax.jit(jax.value_and_grad(loss)), jax.jit(loss)
        rec = jax.jit(lambda x, kernel=kernel: jrnn.layers.run_layer(
            layer, x, unroll=unroll, matmul_dtype=md, kernel=kernel)[0])
        calls[f"{kernel} recurrence"] = lambda f=rec: jax.block_until_ready(f(xs))
        calls[f"{kernel} forward"] = lambda f=fwd: jax.block_until_ready(f(params, xs, ys))
        calls[f"{kernel} train"] = lambda f=train: jax.block_until_ready(f(params, xs, ys))
    try:
        r = suite.build_torch(cell, cfg)
        calls["torch forward"], calls["torch train"] = r.forward, r.train
    except suite.Missing as e:
        print(f"  torch: {e}")
    for c in calls.values():
        c(), c()
    times = suite.time_rounds(calls, reps)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def table(rows, env) -> str:
    """The markdown report of the measured cases (rows as :func:`main` makes them)."""
    lines = [f"# Persistent kernel: {env['device']}, jax {env['jax']}, {env['date']}\n",
             "Gradient error against the scan path (relative, all gradients), and median "
             f"ms over {env['reps']} interleaved rounds; scan at unroll {env['unroll']}.\n",
             "| cell | B | T | H | products | warps | grad err highest / default | "
             "recurrence µs/step scan → kernel | forward ms scan → kernel (torch) | "
             "train ms scan → kernel (torch) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['cell']} | {r['B']} | {r['T']} | {r['H']} | "
                f"{r['matmul_dtype'] or 'float32'} | {r['warps']} | ")
        if "unsupported" in r or "failed" in r:
            lines.append(head + (r.get("unsupported") or r["failed"][:120]).replace("|", "/")
                         + " | | | |")
            continue
        e = r["error"]
        err = f"{e['highest']['grads']:.1e} / {e['default']['grads']:.1e}"
        if "ms" not in r:
            lines.append(head + err + " | | | |")
            continue
        m, T = r["ms"], r["T"]
        torch_f = f" ({m['torch forward']:.2f})" if "torch forward" in m else ""
        torch_t = f" ({m['torch train']:.2f})" if "torch train" in m else ""
        lines.append(head + err + f" | {1e3 * m['scan recurrence'] / T:.2f} → "
                     f"{1e3 * m['persistent recurrence'] / T:.2f} | {m['scan forward']:.2f} → "
                     f"{m['persistent forward']:.2f}{torch_f} | {m['scan train']:.2f} → "
                     f"{m['persistent train']:.2f}{torch_t} |")
    return "\n".join(lines)


OUT = os.path.join("benchmarks", "results")


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--warps", nargs="+", type=int, default=[persistent.NUM_WARPS])
    parser.add_argument("--weight-limit", type=int, default=persistent.MAX_WEIGHT_BYTES,
                        help="bytes of recurrent weights allowed on chip (to probe larger H)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--unroll", type=int, default=None, help="the scan's unroll")
    parser.add_argument("--no-time", action="store_true", help="correctness only")
    parser.add_argument("--cases", nargs="+", type=int, default=None,
                        help="indices into CASES (default: all)")
    parser.add_argument("--out", default=out)
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    persistent.MAX_WEIGHT_BYTES = args.weight_limit
    env = environment(reps=args.reps, weight_limit=args.weight_limit,
                      unroll=args.unroll or jrnn.default_unroll())
    print(env, flush=True)
    rows = []
    cases = [CASES[i] for i in args.cases] if args.cases else CASES
    for case in cases:
        for warps in args.warps:
            persistent.NUM_WARPS = warps
            row = dict(zip(("cell", "B", "T", "D", "H", "C", "matmul_dtype"), case), warps=warps)
            why = persistent.unsupported(case[0], case[4], jnp.float32, case[6])
            if why:
                row["unsupported"] = why
                print(row, flush=True)
                rows.append(row)
                continue
            try:
                row["error"] = check(*case, seed=len(rows))
                if not args.no_time:
                    row["ms"] = timings(*case, args.reps, args.unroll)
            except Exception as e:  # a case that fails to compile is reported, not fatal
                row["failed"] = f"{type(e).__name__}: {str(e)[:2000]}"
                traceback.print_exc()
            print(json.dumps(row), flush=True)
            rows.append(row)
            # after every case, so that a run stopped at a time limit keeps what it measured
            write_results(args.out, "persistent", env, rows, table(rows, env), echo=False)
    write_results(args.out, "persistent", env, rows, table(rows, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
