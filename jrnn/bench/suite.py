"""The benchmark suite: jrnn beside its baselines, in one process, on one device.

Implementations, for each cell (tanh, LSTM, GRU):

* ``jrnn``: the hand-written BPTT (``jrnn.models.tagger``), at each ``--unroll``;
* ``autodiff``: jrnn's ``backward="autodiff"`` switch: the same forward and
  the same unroll, differentiated by JAX;
* ``jrnn native``: the hand-written BPTT with ``kernel="native"`` (:mod:`jrnn.native`: the
  LSTM's and the GRU's two loops as C++ calls on the CPU), where it runs (else missing, with
  the reason);
* ``flax``: Flax linen ``nn.RNN`` with ``SimpleCell`` / ``LSTMCell`` / ``GRUCell``
  and an ``nn.Dense`` head;
* ``torch``: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with an ``nn.Linear`` head
  (cuDNN on a GPU, the CPU build otherwise).

Every one computes the same thing: a one-layer RNN over xs (T, B, D), a linear
head to C classes, and the summed softmax cross-entropy. A *training step* is
the loss and every gradient; a *forward* is the loss alone. float32
parameters, default matmul precision (TF32 on NVIDIA GPUs for both JAX and
PyTorch's cuDNN).

Method: every implementation is built and called once (the first call's time
is reported as ``first_s``: compilation for JAX), warmed up, then timed in
interleaved rounds, so that drift on a shared machine hits all alike: in each
round every implementation makes an untimed call and then a timed one, so no
timed call pays for its predecessor (PyTorch's spinning OpenMP threads, for
one). The median over rounds is reported. Each call is
synchronised (``block_until_ready``; ``torch.cuda.synchronize`` on a GPU). XLA's
compiled temporary memory is read from ``memory_analysis()``; peak device
memory from the device's allocator where it has one (GPUs), else "n/a". A
baseline that cannot run here (its package missing) is reported as missing
with the reason, never dropped.

    python benchmarks/suite.py                          # CPU defaults
    python benchmarks/suite.py --configs S M L X --unroll 1 16 --sweeps T B   # a GPU
    python benchmarks/suite.py --cells lstm --heads 4 --sweeps --reps 5       # multi-head

Writes ``benchmarks/results/<backend>_suite.{json,md}`` and ``..._sweep_T.png``
(``<backend>_suite_heads<NH>`` with ``--heads NH`` > 1: a block-diagonal recurrent
matrix, which Flax's and PyTorch's cells do not have. PyTorch is then reported missing;
for the LSTM and the sLSTM the Flax column becomes ``flax (dense LSTMCell)``: Flax's
``LSTMCell`` of the same H with a dense W, the nearest model a Flax user has, which does
NH times the recurrent product's FLOPs; the roofline columns count the block-diagonal ones).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn.bench import environment, roofline, sampler
from jrnn.models import tagger


class Config(NamedTuple):
    B: int
    T: int
    D: int
    H: int
    C: int


CONFIGS = {  # small, medium, large, and extra long at a small batch
    "S": Config(B=32, T=128, D=64, H=128, C=64),
    "M": Config(B=64, T=512, D=128, H=512, C=128),
    "L": Config(B=256, T=256, D=256, H=1024, C=256),
    "X": Config(B=8, T=2048, D=64, H=256, C=64),
}
SWEEPS = {
    "T": [Config(B=8, T=t, D=64, H=256, C=64) for t in (128, 256, 512, 1024, 2048, 4096,
                                                         8192, 16384)],
    "B": [Config(B=b, T=512, D=64, H=256, C=64) for b in (1, 4, 16, 64, 256)],
}
KINDS = ("train", "forward", "sample")  # sample: the step-by-step generation loop
CELLS = ("elman", "lstm", "gru")  # the default; --cells takes any registered cell
ALL_CELLS = tuple(jrnn.cells.names())
OUT = os.path.join("benchmarks", "results")  # `jrnn bench` passes runs/bench instead


class Missing(Exception):
    """A baseline that cannot run here; the message says why."""


class Runner(NamedTuple):
    train: Callable[[], object]     # one training step, synchronised
    forward: Callable[[], object]   # one forward (loss only), synchronised
    temp_bytes: Callable[[str], Optional[int]]  # XLA temporary bytes of "train"/"forward"
    peak_bytes: Callable[[], Optional[int]]     # device peak since the last reset, if known
    reset_peak: Callable[[], None]
    sample: Optional[Callable[[], object]] = None  # T tokens step by step (jrnn.bench.sampler)


def data(cfg: Config, seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 2)
    xs = jax.random.normal(k[0], (cfg.T, cfg.B, cfg.D), jnp.float32)
    ys = jax.random.randint(k[1], (cfg.T, cfg.B), 0, cfg.C)
    return xs, ys


def _jax_peak():
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _jax_runner(loss, params, args, sample=None) -> Runner:
    train = jax.jit(jax.value_and_grad(loss))
    forward = jax.jit(loss)
    compiled = {"train": train, "forward": forward}

    def temp(kind):
        try:
            return int(compiled[kind].lower(params, *args).compile()
                       .memory_analysis().temp_size_in_bytes)
        except Exception:  # not every backend reports it
            return None
    return Runner(lambda: jax.block_until_ready(train(params, *args)),
                  lambda: jax.block_until_ready(forward(params, *args)),
                  temp, _jax_peak, lambda: None, sample)


def build_jrnn(cell: str, cfg: Config, backward: str, unroll: int, heads: int = 1,
               with_sampler: bool = True, kernel: str = "auto") -> Runner:
    params = tagger.init(jax.random.key(0), cell, cfg.D, cfg.H, cfg.C, heads=heads)
    loss = lambda p, xs, ys: tagger.loss(p, xs, ys, unroll=unroll, backward=backward,
                                         kernel=kernel)
    # the generation loop has no backward, so autodiff's would be the same program
    sample = (_sampler_or_none(sampler.jrnn_sampler, cell, cfg, heads, kernel)
              if backward == "manual" and with_sampler else None)
    return _jax_runner(loss, params, data(cfg), sample)


def build_jrnn_native(cell: str, cfg: Config, heads: int = 1) -> Runner:
    """jrnn with ``kernel="native"`` (:mod:`jrnn.native`: the cell's loops in C++; the
    sampler :mod:`jrnn.native_sampler`), where it can run."""
    from jrnn import native
    reason = native.unsupported(cell, cfg.H, jnp.float32, heads=heads)
    if reason:
        raise Missing(reason)
    return build_jrnn(cell, cfg, "manual", 1, heads, kernel="native")


def _sampler_or_none(build, *args):
    """A sampler, or None where the config cannot have one (D != C)."""
    try:
        return build(*args)
    except Missing:
        return None


def build_flax(cell: str, cfg: Config) -> Runner:
    try:
        import flax.linen as nn
        import optax
    except ImportError as e:
        raise Missing(f"flax not installed ({e.name}); pip install 'jrnn[bench]'") from None
    if cell not in CELLS:
        raise Missing(f"Flax has no {cell!r} cell")
    cell_cls = {"elman": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return nn.Dense(cfg.C)(nn.RNN(cell_cls(features=cfg.H), time_major=True)(xs))

    model, (xs, ys) = Model(), data(cfg)
    params = model.init(jax.random.key(0), xs[:2])
    loss = lambda p, xs, ys: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(p, xs), ys).sum()
    return _jax_runner(loss, params, (xs, ys), _sampler_or_none(sampler.flax_sampler, cell, cfg))


def build_torch(cell: str, cfg: Config) -> Runner:
    try:
        import torch
    except ImportError:
        raise Missing("torch not installed (pip install torch==2.13.0 for the CPU build)") \
            from None
    if cell not in CELLS:
        raise Missing(f"PyTorch has no {cell!r} module")
    gpu = jax.default_backend() == "gpu"
    if gpu and not torch.cuda.is_available():
        raise Missing("torch has no CUDA here, so it cannot run beside JAX on the GPU")
    device = torch.device("cuda" if gpu else "cpu")
    torch.manual_seed(0)
    rnn = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        cfg.D, cfg.H).to(device)
    head = torch.nn.Linear(cfg.H, cfg.C).to(device)
    xs, ys = data(cfg)
    x = torch.from_numpy(np.array(xs)).to(device)
    y = torch.from_numpy(np.asarray(ys).astype(np.int64)).reshape(-1).to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)

    def loss():
        out, _ = rnn(x)
        return torch.nn.functional.cross_entropy(head(out).reshape(-1, cfg.C), y,
                                                 reduction="sum")

    def train():
        for p in (*rnn.parameters(), *head.parameters()):
            p.grad = None
        value = loss()
        value.backward()
        sync()
        return value

    def forward():
        with torch.no_grad():
            value = loss()
        sync()
        return value

    return Runner(train, forward, lambda kind: None,
                  (lambda: torch.cuda.max_memory_allocated()) if gpu else (lambda: None),
                  torch.cuda.reset_peak_memory_stats if gpu else (lambda: None),
                  _sampler_or_none(sampler.torch_sampler, cell, cfg))


def build_flax_dense_lstm(cell: str, cfg: Config) -> Runner:
    """Flax's dense ``LSTMCell`` of the same H, the nearest a Flax user has to a multi-head
    LSTM or an sLSTM (neither exists in Flax)."""
    if cell not in ("lstm", "slstm"):
        raise Missing(f"Flax has no multi-head {cell!r}, nor a dense cell near it")
    return build_flax("lstm", cfg)


def _dense_only(build):
    def wrapped(cell, cfg, heads=1):
        if heads != 1:
            raise Missing("no multi-head (block-diagonal) recurrent matrix there")
        return build(cell, cfg)
    return wrapped


def implementations(unrolls, heads: int = 1) -> dict[str, Callable[[str, Config], Runner]]:
    impls = {}
    for u in unrolls:
        # the generation loop does not take an unroll: timed once, with the first
        impls[f"jrnn (unroll {u})"] = lambda c, cfg, u=u: build_jrnn(c, cfg, "manual", u, heads,
                                                                     u == unrolls[0])
        impls[f"autodiff (unroll {u})"] = lambda c, cfg, u=u: build_jrnn(c, cfg, "autodiff", u,
                                                                         heads)
    impls["jrnn native"] = lambda c, cfg: build_jrnn_native(c, cfg, heads)
    if heads == 1:
        impls["flax"] = build_flax
    else:
        impls["flax (dense LSTMCell)"] = build_flax_dense_lstm
    impls["torch"] = lambda c, cfg: _dense_only(build_torch)(c, cfg, heads)
    return impls


def time_rounds(calls: dict[str, Callable], reps: int) -> dict[str, list[float]]:
    """Interleaved rounds; in each, every implementation makes one untimed call
    and then one timed call, so that no timed call pays for the one before it.

    Without the untimed call, PyTorch's OpenMP workers, which spin after each
    parallel region, took a core from the JAX call that followed: the same
    compiled program timed 10.2 ms after torch and 6.2 ms after a JAX call.
    """
    times = {k: [] for k in calls}
    for _ in range(reps):
        for key, call in calls.items():
            call()
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    return times


PEAK = "peak matmul"  # the roofline's (n, n) product, timed in the rounds beside the runners


def measure(label: str, cell: str, cfg: Config, unrolls, reps: int, warmup: int = 2,
            heads: int = 1, peak: Optional[float] = None, peak_size: Optional[int] = None):
    """All implementations at one config and cell: one row per (implementation, kind).

    Each row carries the FLOPs of its products (:func:`jrnn.bench.roofline.flops`); with a
    peak also the roofline time, the fraction of it the implementation reached (roofline
    time / its median time) and the peak (``peak_gflops``). The peak is ``peak`` (FLOP/s),
    or with ``peak_size`` n the median throughput of an (n, n) float32 matmul timed in the
    same interleaved rounds as each kind's implementations, so that it is the machine's
    speed at the time of the times it divides.
    """
    runners, rows = {}, []
    peak_product = roofline.peak_call(peak_size) if peak_size else None
    gates = jrnn.cells.get(cell).gates
    for name, build in implementations(unrolls, heads).items():
        try:
            runners[name] = build(cell, cfg)
        except Missing as e:
            rows.append({"config": label, "cell": cell, **cfg._asdict(), "impl": name,
                         "missing": str(e)})
            print(f"  {name}: missing ({e})", flush=True)
    for kind in KINDS:
        calls, first, peak_mem = {}, {}, {}
        for name, r in runners.items():
            call = getattr(r, kind)
            if call is None:  # no sampler: autodiff (the same program), a second unroll, D != C
                continue
            r.reset_peak()
            t0 = time.perf_counter()
            call()
            first[name] = time.perf_counter() - t0
            for _ in range(warmup):
                call()
            calls[name] = call
        if peak_product:
            calls[PEAK] = peak_product[0]
        times = time_rounds(calls, reps)
        if peak_product:
            calls.pop(PEAK)
            peak = peak_product[1] / statistics.median(times[PEAK])
        for name in calls:
            r = runners[name]
            peak_mem[name] = r.peak_bytes()
            median_ms = 1e3 * statistics.median(times[name])
            n = roofline.flops(gates=gates, **cfg._asdict(), heads=heads,
                               kind="train" if kind == "train" else "forward")
            rows.append({"config": label, "cell": cell, **cfg._asdict(), "impl": name,
                         "kind": kind, "median_ms": median_ms,
                         "min_ms": 1e3 * min(times[name]), "first_s": first[name],
                         "temp_bytes": r.temp_bytes(kind), "peak_bytes": peak_mem[name],
                         "reps": reps, "flops": n})
            if peak:
                rows[-1]["peak_gflops"] = peak / 1e9
                rows[-1]["roofline_ms"] = 1e3 * n / peak
                rows[-1]["roofline_fraction"] = rows[-1]["roofline_ms"] / median_ms
            print(f"  {label} {cell:5s} {kind:7s} {name:20s} "
                  f"{rows[-1]['median_ms']:10.2f} ms  (first call {first[name]:.2f} s)",
                  flush=True)
    return rows


# -- reporting ---------------------------------------------------------------------------

def _fmt_bytes(n):
    return "n/a" if n is None else f"{n / 2**20:.1f}"


def tables(rows, unrolls) -> str:
    """Per cell and kind: time of each implementation and its ratio to jrnn's."""
    out = []
    base = f"jrnn (unroll {unrolls[0]})"
    for kind in KINDS:
        for cell in ALL_CELLS:
            sel = [r for r in rows if r["cell"] == cell and r.get("kind", kind) == kind]
            labels = list(dict.fromkeys(r["config"] for r in sel))
            if not labels:
                continue
            impls = list(dict.fromkeys(r["impl"] for r in sel))
            what = {"train": "training step (loss and all gradients)", "forward":
                    "forward (loss)", "sample": "sampler (T tokens, one step at a time)"}[kind]
            out.append(f"\n### {cell}: {what}, ms (× = time / {base}'s)\n")
            out.append("| config (B, T, D, H, C) | " + " | ".join(impls) + " |")
            out.append("|---|" + "---|" * len(impls))
            for label in labels:
                by = {r["impl"]: r for r in sel if r["config"] == label}
                ref = by.get(base, {}).get("median_ms")
                cells = []
                for impl in impls:
                    r = by.get(impl, {})
                    if "missing" in r:
                        cells.append("missing")
                    elif "median_ms" in r:
                        ratio = f" ({r['median_ms'] / ref:.2f}×)" if ref and impl != base else ""
                        cells.append(f"{r['median_ms']:.2f}{ratio}")
                    else:
                        cells.append("")
                cfg = by[next(iter(by))]
                out.append(f"| {label} ({cfg['B']}, {cfg['T']}, {cfg['D']}, {cfg['H']}, "
                           f"{cfg['C']}) | " + " | ".join(cells) + " |")
    # Memory and compile time of the training step.
    out.append("\n### Training step: XLA temporary memory (MiB) and first call (s)\n")
    jax_impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != "torch"]
    out.append("| config | cell | " + " | ".join(f"{i} temp / first" for i in jax_impls) + " |")
    out.append("|---|---|" + "---|" * len(jax_impls))
    for r0 in rows:
        if r0.get("kind") != "train" or r0["impl"] != base:
            continue
        by = {r["impl"]: r for r in rows if r.get("kind") == "train" and
              r["config"] == r0["config"] and r["cell"] == r0["cell"]}
        cells = [f"{_fmt_bytes(by[i].get('temp_bytes'))} / {by[i]['first_s']:.2f}"
                 if i in by and "first_s" in by[i] else "missing" for i in jax_impls]
        out.append(f"| {r0['config']} | {r0['cell']} | " + " | ".join(cells) + " |")
    out.append(roofline_table(rows))
    return "\n".join(out)


def roofline_table(rows) -> str:
    """Per config, cell and kind: the products' GFLOP, the roofline time at the measured
    peak, and each implementation's fraction of it (1 = at the machine's matmul limit);
    empty when the rows carry no roofline (no peak was measured)."""
    sel = [r for r in rows if "roofline_ms" in r]
    if not sel:
        return ""
    impls = list(dict.fromkeys(r["impl"] for r in rows if "missing" not in r))
    out = ["\n### Fraction of the matmul roofline (roofline time / time; 1 = the machine's "
           "limit)\n",
           "| config | cell | kind | GFLOP | peak GFLOP/s | roofline ms | " + " | ".join(impls)
           + " |",
           "|---|---|---|---|---|---|" + "---|" * len(impls)]
    for key in dict.fromkeys((r["config"], r["cell"], r["kind"]) for r in sel):
        by = {r["impl"]: r for r in sel if (r["config"], r["cell"], r["kind"]) == key}
        r0 = next(iter(by.values()))
        cells = [f"{by[i]['roofline_fraction']:.2f}" if i in by else "missing" for i in impls]
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {r0['flops'] / 1e9:.2f} | "
                   f"{r0['peak_gflops']:.1f} | {r0['roofline_ms']:.2f} | " + " | ".join(cells)
                   + " |")
    return "\n".join(out)


def plot_sweep(rows, path: str, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return False
    cells = [c for c in ALL_CELLS if any(r["cell"] == c for r in rows)]
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        sel = [r for r in rows if r["cell"] == cell and r.get("kind") == "train"]
        for impl in dict.fromkeys(r["impl"] for r in sel):
            pts = sorted((r["T"], r["median_ms"]) for r in sel if r["impl"] == impl)
            ax.plot(*zip(*pts), marker="o", label=impl)
        ax.set(xscale="log", yscale="log", xlabel="T (sequence length)",
               ylabel="training step, ms", title=f"{cell}: {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def arguments(prog=None, out=OUT, epilog=None) -> argparse.ArgumentParser:
    from jrnn.cli import ArgumentParser, integer
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--configs", nargs="*", default=["S", "M", "X"], choices=CONFIGS)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=ALL_CELLS)
    parser.add_argument("--sweeps", nargs="*", default=["T"], choices=SWEEPS)
    parser.add_argument("--sweep-cells", nargs="+", default=["elman"], choices=ALL_CELLS)
    parser.add_argument("--unroll", nargs="+", type=integer(1), default=[jrnn.default_unroll()])
    parser.add_argument("--reps", type=integer(1), default=20)
    parser.add_argument("--heads", type=integer(1), default=1,
                        help="heads of a block-diagonal recurrent matrix (1: dense)")
    parser.add_argument("--peak-size", type=integer(1), default=2048,
                        help="n of the (n, n) float32 matmul that measures the peak FLOP/s "
                             "for the roofline columns (default: 2048)")
    parser.add_argument("--out", default=out,
                        help=f"folder for the JSON, markdown and PNG results (default: {out})")
    return parser


def main(argv=None, *, prog=None, out=OUT, epilog=None) -> int:
    args = arguments(prog, out, epilog).parse_args(argv)
    if args.reps < 20:
        print(f"note: --reps {args.reps}: fewer than the 20 rounds the results table assumes")
    env = environment(unrolls=args.unroll, reps=args.reps, heads=args.heads)
    for name in ("flax", "torch"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    env["peak_size"] = args.peak_size
    print(env, flush=True)
    command = f"python benchmarks/suite.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    rows, sweep_rows = [], {}
    save = lambda: write_suite(args.out, env, rows, sweep_rows, command, args.peak_size)
    for label in args.configs:
        for cell in args.cells:
            rows += measure(label, cell, CONFIGS[label], args.unroll, args.reps,
                            heads=args.heads, peak_size=args.peak_size)
            save()
    for sweep in args.sweeps:
        sweep_rows[sweep] = []
        for cfg in SWEEPS[sweep]:
            for cell in args.sweep_cells:
                sweep_rows[sweep] += measure(f"{sweep}={getattr(cfg, sweep)}", cell, cfg,
                                             args.unroll, args.reps, heads=args.heads,
                                             peak_size=args.peak_size)
                save()
    print(save())
    return 0


def _cpu_sentence(env: dict) -> str:
    """The CPU and the native kernels' instruction set, where the run recorded them."""
    parts = []
    if env.get("cpu_model"):
        parts.append(f"CPU: {env['cpu_model']}")
    if env.get("native_isa"):
        parts.append(f"jrnn's native kernels built for {env['native_isa']}")
    return "; ".join(parts) + ". " if parts else ""


def _peak_sentence(rows: list, sweep_rows: dict, peak_size: int) -> str:
    """The range of the peaks the rows' roofline times divide by, as one sentence."""
    peaks = [r["peak_gflops"] for r in rows + [r for s in sweep_rows.values() for r in s]
             if "peak_gflops" in r]
    if not peaks:
        return "No peak measured. "
    return (f"Peak float32 matmul throughput, a {peak_size}² matmul timed in each config's "
            f"rounds beside the implementations: {min(peaks):.1f}–{max(peaks):.1f} GFLOP/s "
            f"(per row in the roofline table); the roofline time is the products' FLOPs at "
            f"its config's peak (jrnn/bench/roofline.py). ")


def _tuning_sentence(tuning: dict) -> str:
    """The environment variables that change speed, as one sentence of the report."""
    if not tuning:
        return "No allocator, XLA or thread-pool variables set (defaults)."
    return "Set for this run: " + ", ".join(f"`{k}={v}`" for k, v in tuning.items()) + "."


def write_suite(out: str, env: dict, rows: list, sweep_rows: dict, command: str,
                peak_size: int) -> str:
    """Writes ``<out>/<backend>_suite[_headsN].{json,md}`` (and the T sweep's plot) from
    the rows measured so far, and returns the markdown. The suite calls it after every
    config, so that a run stopped at a time limit keeps what it measured."""
    unrolls = env["unrolls"]
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"{env['backend']}_suite" +
                        (f"_heads{env['heads']}" if env["heads"] > 1 else ""))
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "configs": rows, "sweeps": sweep_rows}, f, indent=1)
    text = [f"# Benchmark suite: {env['device']} ({env['cpu_count']} cores), jax {env['jax']}, "
            f"flax {env['flax']}, torch {env['torch']}, {env['date']}\n",
            f"`{command}`"
            f"\n\nMedian of {env['reps']} interleaved rounds; float32. Ratios are time divided "
            f"by jrnn's, so > 1 means jrnn is faster. {_peak_sentence(rows, sweep_rows, peak_size)}"
            f"{_cpu_sentence(env)}{_tuning_sentence(env.get('tuning') or {})}",
            tables(rows, unrolls) if rows else ""]
    for sweep, srows in sweep_rows.items():
        if not srows:
            continue
        text.append(f"\n## Sweep over {sweep}\n" + tables(srows, unrolls))
        if sweep == "T" and plot_sweep(srows, stem + "_sweep_T.png",
                                       "B 8, D 64, H 256, C 64"):
            text.append(f"\n![time against T]({os.path.basename(stem)}_sweep_T.png)\n")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(text) + "\n")
    return "\n".join(text)


if __name__ == "__main__":
    sys.exit(main())
