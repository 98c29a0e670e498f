"""jrnn's Flax NNX and Equinox modules beside those frameworks' own recurrences.

Pairs, for the LSTM and the GRU, each a training step (loss and every gradient)
of a one-layer RNN over batch-first xs (B, T, D), a linear head to C classes
and the summed softmax cross-entropy, as a user of that framework writes it:

* NNX: ``jrnn.nnx.LSTM``/``GRU`` against ``nnx.RNN(nnx.LSTMCell / nnx.GRUCell)``,
  each with an ``nnx.Linear`` head, under ``nnx.jit(nnx.value_and_grad(...))``;
* Equinox: ``jrnn.equinox.LSTM``/``GRU`` against ``eqx.nn.LSTMCell`` /
  ``GRUCell`` under ``lax.scan`` (vmapped over the batch, Equinox's idiom), each
  with an ``eqx.nn.Linear`` head, under ``eqx.filter_jit(eqx.filter_value_and_grad(...))``.

Timing as in :mod:`jrnn.bench.suite`: every step is built and called once
(compilation), warmed up, then timed in interleaved rounds (``time_rounds``),
so that drift on a shared machine hits all alike; the median is reported.

    python benchmarks/adapters.py --configs S M X --reps 10

Writes ``benchmarks/results/<backend>_adapters.{json,md}``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from jrnn.bench import environment, write_results
from jrnn.bench.suite import CONFIGS, Config, data, time_rounds

CELLS = ("lstm", "gru")


def _batch_first(cfg: Config):
    xs, ys = data(cfg)
    return jnp.swapaxes(xs, 0, 1), ys.T  # (B, T, D), (B, T)


def _nll(logits, ys):
    return optax.softmax_cross_entropy_with_integer_labels(logits, ys).sum()


def build_nnx(cell: str, cfg: Config, jrnn_side: bool):
    from flax import nnx

    import jrnn.nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            if jrnn_side:
                make = {"lstm": jrnn.nnx.LSTM, "gru": jrnn.nnx.GRU}[cell]
                self.rnn = make(cfg.D, cfg.H, rngs=rngs)
            else:
                make = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell}[cell]
                self.rnn = nnx.RNN(make(cfg.D, cfg.H, rngs=rngs))
            self.head = nnx.Linear(cfg.H, cfg.C, rngs=rngs)

        def __call__(self, xs):
            return self.head(self.rnn(xs))

    model, (xs, ys) = Model(nnx.Rngs(0)), _batch_first(cfg)
    step = nnx.jit(nnx.value_and_grad(lambda m, xs, ys: _nll(m(xs), ys)))
    return lambda: jax.block_until_ready(step(model, xs, ys))


def build_equinox(cell: str, cfg: Config, jrnn_side: bool):
    import equinox as eqx

    import jrnn.equinox

    k_rnn, k_head = jax.random.split(jax.random.key(0))
    head = eqx.nn.Linear(cfg.H, cfg.C, dtype=jnp.float32, key=k_head)
    if jrnn_side:
        rnn = {"lstm": jrnn.equinox.LSTM, "gru": jrnn.equinox.GRU}[cell](cfg.D, cfg.H, key=k_rnn)

        def loss(model, xs, ys):
            rnn, head = model
            hs = rnn(xs)                                            # (B, T, H)
            return _nll(jnp.einsum("bth,ch->btc", hs, head.weight) + head.bias[None, None], ys)
    else:
        make = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell]
        rnn = make(cfg.D, cfg.H, dtype=jnp.float32, key=k_rnn)

        def run(rnn, xs):                                           # one sequence (T, D)
            init = jnp.zeros((cfg.H,), xs.dtype)
            carry0 = (init, init) if cell == "lstm" else init

            def step(carry, x):
                carry = rnn(x, carry)
                return carry, carry[0] if cell == "lstm" else carry
            return jax.lax.scan(step, carry0, xs)[1]

        def loss(model, xs, ys):
            rnn, head = model
            hs = jax.vmap(run, in_axes=(None, 0))(rnn, xs)          # (B, T, H)
            return _nll(jnp.einsum("bth,ch->btc", hs, head.weight) + head.bias[None, None], ys)

    model, (xs, ys) = (rnn, head), _batch_first(cfg)
    step = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    return lambda: jax.block_until_ready(step(model, xs, ys))


PAIRS = {  # framework: (builder, name of the framework's own implementation)
    "nnx": (build_nnx, "flax nnx.RNN"),
    "equinox": (build_equinox, "eqx cell + lax.scan"),
}


def measure(label: str, cell: str, cfg: Config, reps: int, warmup: int = 2) -> list[dict]:
    calls, first = {}, {}
    for framework, (build, theirs) in PAIRS.items():
        for jrnn_side in (True, False):
            name = f"{framework}: " + ("jrnn" if jrnn_side else theirs)
            call = build(cell, cfg, jrnn_side)
            t0 = time.perf_counter()
            call()
            first[name] = time.perf_counter() - t0
            for _ in range(warmup):
                call()
            calls[name] = call
    times = time_rounds(calls, reps)
    rows = []
    for name in calls:
        rows.append({"config": label, "cell": cell, **cfg._asdict(), "impl": name,
                     "median_ms": 1e3 * statistics.median(times[name]),
                     "min_ms": 1e3 * min(times[name]), "first_s": first[name], "reps": reps})
        print(f"  {label} {cell:4s} {name:28s} {rows[-1]['median_ms']:10.2f} ms", flush=True)
    return rows


def table(rows) -> str:
    out = ["| config (B, T, D, H, C) | cell | framework | jrnn ms | theirs ms | speed-up |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        framework, who = r["impl"].split(": ", 1)
        if who != "jrnn":
            continue
        other = next(o for o in rows if o["config"] == r["config"] and o["cell"] == r["cell"]
                     and o["impl"] == f"{framework}: {PAIRS[framework][1]}")
        out.append(f"| {r['config']} ({r['B']}, {r['T']}, {r['D']}, {r['H']}, {r['C']}) | "
                   f"{r['cell']} | {framework} vs {PAIRS[framework][1]} | {r['median_ms']:.2f} "
                   f"| {other['median_ms']:.2f} | {other['median_ms'] / r['median_ms']:.2f}× |")
    return "\n".join(out)


OUT = os.path.join("benchmarks", "results")


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--configs", nargs="*", default=["S", "M", "X"], choices=CONFIGS)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--note", default="", help="a line on the machine's state, for the record")
    parser.add_argument("--out", default=out)
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    import equinox
    import flax
    env = environment(flax=flax.__version__, equinox=equinox.__version__, reps=args.reps,
                      note=args.note)
    print(env, flush=True)
    rows = []
    for label in args.configs:
        for cell in args.cells:
            rows += measure(label, cell, CONFIGS[label], args.reps)
    text = (f"# jrnn's Flax NNX and Equinox modules against the frameworks' own: "
            f"{env['device']} ({env['cpu_count']} cores), jax {env['jax']}, flax {env['flax']}, "
            f"equinox {env['equinox']}, {env['date']}\n\n"
            f"`python benchmarks/adapters.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f"\n\nTraining step (loss and every gradient), float32, batch-first, median of "
            f"{args.reps} interleaved rounds. Speed-up = their time / jrnn's (> 1: jrnn is "
            f"faster).{' ' + args.note if args.note else ''}\n\n" + table(rows) + "\n")
    write_results(args.out, "adapters", env, rows, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
