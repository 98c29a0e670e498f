"""The ``jrnn`` command: train, sample, bench, gradcheck.

    jrnn train --checkpoint-dir runs/lm             # char-LM on the stdlib source
    jrnn train --checkpoint-dir runs/lm --resume    # continue after an interruption
    jrnn sample --checkpoint-dir runs/lm --prompt "def " --temperature 0.8
    jrnn bench --configs S X                        # the benchmark suite
    jrnn gradcheck --cell lstm --arch deep-bidirectional --T 100 --H 32

``jrnn <command> --help`` lists every option.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Optional, Sequence

__all__ = ["main", "parser"]


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from jrnn import cells
    from jrnn.charlm import Config
    d = Config()
    data = p.add_argument_group("data")
    data.add_argument("--text", help="a UTF-8 text file (default: the Python stdlib source)")
    data.add_argument("--max-chars", type=int, default=d.max_chars,
                      help="characters of the default corpus")
    model = p.add_argument_group("model")
    model.add_argument("--cell", default=d.cell, choices=cells.names())
    model.add_argument("--hidden", type=int, default=d.hidden, help="hidden size H")
    model.add_argument("--layers", type=int, default=d.layers, help="stacked layers")
    opt = p.add_argument_group("training")
    opt.add_argument("--seq", type=int, default=d.seq, help="truncated-BPTT chunk length")
    opt.add_argument("--batch", type=int, default=d.batch, help="parallel streams")
    opt.add_argument("--steps", type=int, default=d.steps, help="training chunks")
    opt.add_argument("--lr", type=float, default=d.lr,
                     help="peak Adam learning rate (cosine decay to a tenth)")
    opt.add_argument("--clip", type=float, default=d.clip, help="global-norm gradient clip")
    opt.add_argument("--seed", type=int, default=d.seed)
    opt.add_argument("--backward", choices=("manual", "autodiff"), default=d.backward,
                     help="hand-written BPTT, or JAX autodiff of the same forward")
    opt.add_argument("--devices", type=int, default=d.devices,
                     help="data-parallel over this many devices (the batch is split)")
    ck = p.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint-dir", help="where checkpoints and the loss curve go "
                    "(none: nothing is saved)")
    ck.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                    help="steps between checkpoints (one is always written at the end)")
    ck.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    ck.add_argument("--resume", action="store_true",
                    help="continue from the newest good checkpoint in --checkpoint-dir")
    out = p.add_argument_group("after training")
    out.add_argument("--sample", type=int, default=600, help="characters to sample (0: none)")
    out.add_argument("--temperature", type=float, default=0.7)
    out.add_argument("--prompt", default="def ")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-dir", required=True, help="a `jrnn train` checkpoint folder")
    p.add_argument("--prompt", default="def ", help="text to continue (in the vocabulary)")
    p.add_argument("--length", type=int, default=600, help="characters to sample")
    p.add_argument("--temperature", type=float, default=0.7,
                   help="softmax temperature (lower: more conservative)")
    p.add_argument("--seed", type=int, default=0)


def _gradcheck_arguments(p: argparse.ArgumentParser) -> None:
    from jrnn import cells
    from jrnn.gradcheck import ARCHITECTURES, TRUNCATED_BPTT
    p.add_argument("--cell", default="elman", choices=cells.names())
    p.add_argument("--arch", default="tagger",
                   choices=sorted(ARCHITECTURES) + [TRUNCATED_BPTT.name])
    for name, default, what in (("T", 20, "sequence length"), ("B", 4, "batch"),
                                ("D", 8, "input size"), ("H", 16, "hidden size"),
                                ("C", 5, "classes")):
        p.add_argument(f"--{name}", type=int, default=default, help=what)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=None,
                   help="exit with status 1 if an error exceeds it (default: 1e-10 for "
                        "float64, 1e-5 for float32)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="jrnn", description="Recurrent networks in JAX with hand-written BPTT.",
        epilog="`jrnn <command> --help` lists the options of each command.")
    sub = top.add_subparsers(dest="command", required=True, metavar="command")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    _train_arguments(sub.add_parser(
        "train", formatter_class=fmt,
        help="train a character-level language model (checkpoints, resume, loss plot)",
        description="Train a character-level language model by truncated BPTT. With "
                    "--checkpoint-dir, checkpoints (atomic, pickle-free .npz) and loss.png go "
                    "there, and --resume continues a run exactly where it stopped."))
    _sample_arguments(sub.add_parser(
        "sample", formatter_class=fmt, help="sample text from a `jrnn train` checkpoint",
        description="Sample text from the newest good checkpoint of a `jrnn train` run."))
    bench = sub.add_parser(
        "bench", help="run the benchmark suite (jrnn, autodiff, Flax, PyTorch)",
        description="Runs jrnn.bench.suite (or jrnn.bench.remat_curve with --remat, "
                    "jrnn.bench.precision with --precision); "
                    "every other argument goes to it: `jrnn bench -- --help` lists them.",
        add_help=True)
    which = bench.add_mutually_exclusive_group()
    which.add_argument("--remat", action="store_true",
                       help="the memory/time curve of memory-bounded BPTT instead")
    which.add_argument("--precision", action="store_true",
                       help="float32 against bfloat16: speed and gradient error instead")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    _gradcheck_arguments(sub.add_parser(
        "gradcheck", formatter_class=fmt,
        help="compare hand-written and autodiff gradients at your sizes",
        description="Builds a random model and batch for a cell and an architecture at the "
                    "given sizes, differentiates it by jrnn's hand-written BPTT and by JAX "
                    "autodiff, and prints the relative error of the loss and every gradient."))
    return top


def _train(args) -> int:
    from jrnn import charlm, checkpoint
    fields = {f.name for f in dataclasses.fields(charlm.Config)}
    config = charlm.Config(**{k: v for k, v in vars(args).items() if k in fields})
    if args.resume and not args.checkpoint_dir:
        print("error: --resume needs --checkpoint-dir", file=sys.stderr)
        return 2
    try:
        result = charlm.run(config, resume=args.resume, progress=not args.quiet)
    except (charlm.NonFiniteError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.sample:
        text = charlm.generate(result.params, result.vocab, result.key, args.prompt, args.sample,
                               args.temperature)
        print(f"\n--- sample (temperature {args.temperature}) ---\n{args.prompt}{text}\n---")
    print(charlm.summary(result, config))
    return 0


def _sample(args) -> int:
    import jax
    from jrnn import charlm, checkpoint
    try:
        params, vocab, meta = charlm.load(args.checkpoint_dir)
        text = charlm.generate(params, vocab, jax.random.key(args.seed), args.prompt,
                               args.length, args.temperature)
    except (checkpoint.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.prompt}{text}")
    return 0


def _bench(args) -> int:
    rest = list(args.args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if args.remat:
        from jrnn.bench import remat_curve
        return remat_curve.main(rest)
    if args.precision:
        from jrnn.bench import precision
        return precision.main(rest)
    from jrnn.bench import suite
    return suite.main(rest)


def _gradcheck(args) -> int:
    import jax
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jrnn import gradcheck
    sizes = gradcheck.Sizes(args.T, args.B, args.D, args.H, args.C)
    errors = gradcheck.check(args.arch, args.cell, sizes, jnp.dtype(args.dtype), args.seed)
    tolerance = args.tolerance or {"float64": 1e-10, "float32": 1e-5}[args.dtype]
    print(f"{args.cell} / {args.arch}, T={args.T} B={args.B} D={args.D} H={args.H} "
          f"C={args.C}, {args.dtype}: relative error of hand-written vs autodiff")
    width = max(map(len, errors))
    for name, e in sorted(errors.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<{width}}  {e:.2e}")
    worst = max(errors.values())
    verdict = "ok" if worst <= tolerance else "FAILED"
    print(f"largest {worst:.2e} (tolerance {tolerance:.0e}): {verdict}")
    return 0 if worst <= tolerance else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    return {"train": _train, "sample": _sample, "bench": _bench,
            "gradcheck": _gradcheck}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
