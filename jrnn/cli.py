"""The ``jrnn`` command: train, sample, bench, gradcheck.

    jrnn train --checkpoint-dir runs/lm             # char-LM on the stdlib source
    jrnn train --checkpoint-dir runs/lm --resume    # continue after an interruption
    jrnn train --cell layernorm_lstm --layers 2 --dropout 0.2 --zoneout 0.1   # regularised
    jrnn sample --checkpoint-dir runs/lm --prompt "def " --temperature 0.8
    jrnn bench --configs S X                        # the benchmark suite
    jrnn gradcheck --cell lstm --arch deep-bidirectional --T 100 --H 32

``jrnn <command> --help`` lists every option. Every argument is checked before
any work starts; a mistake is reported as one line on stderr (exit status 2
for a malformed command line, 1 for a problem found with the files it names),
never as a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from typing import Optional, Sequence

__all__ = ["main", "parser", "parse", "ArgumentParser", "integer", "number", "probability"]

BENCH_OUT = "runs/bench"   # `jrnn bench` writes here unless --out says otherwise
BENCH_PROGRAMS = {"--remat": "remat_curve", "--precision": "precision"}  # default: suite


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line and a pointer to --help, not the whole usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n  (`{self.prog} --help` lists the "
                     f"options)\n")


def integer(minimum: int):
    """An argparse type: an int >= minimum, or a one-line error saying what was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def number(positive: bool):
    """An argparse type: a finite float > 0 (``positive``) or >= 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'> 0' if positive else '>= 0'}, got {text}")
        return value
    parse.__name__ = "positive number" if positive else "number >= 0"
    return parse


def probability(text: str) -> float:
    """An argparse type: a probability p with 0 <= p < 1 (1 would drop everything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0 <= value < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text}")
    return value


probability.__name__ = "probability in [0, 1)"

_positive, _natural = integer(1), integer(0)
_rate, _nonnegative = number(positive=True), number(positive=False)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from jrnn import cells
    from jrnn.charlm import Config
    d = Config()
    data = p.add_argument_group("data")
    data.add_argument("--text", help="a UTF-8 text file (default: the Python stdlib source)")
    data.add_argument("--max-chars", type=_positive, default=d.max_chars,
                      help="characters of the default corpus")
    model = p.add_argument_group("model")
    model.add_argument("--cell", default=d.cell, choices=cells.layer_names())
    model.add_argument("--hidden", type=_positive, default=d.hidden, help="hidden size H")
    model.add_argument("--layers", type=_positive, default=d.layers, help="stacked layers")
    model.add_argument("--heads", type=_positive, default=d.heads,
                       help="heads of a block-diagonal recurrent matrix (dividing --hidden)")
    model.add_argument("--proj-size", type=_natural, default=d.proj_size,
                       help="LSTM projection to this many units, < --hidden (0: none)")
    reg = p.add_argument_group(
        "regularisation", "each a probability in [0, 1), 0 (the default) turns it off; masks are "
        "drawn afresh for every chunk in training, and validation and sampling run without "
        "them (zoneout as its expectation)")
    reg.add_argument("--dropout", type=probability, default=d.dropout,
                     help="dropout on the outputs of every layer but the last (PyTorch's "
                          "dropout=); needs --layers >= 2")
    reg.add_argument("--input-dropout", type=probability, default=d.input_dropout,
                     help="variational dropout of each layer's input: one mask per stream "
                          "and chunk (Gal & Ghahramani 2016)")
    reg.add_argument("--recurrent-dropout", type=probability, default=d.recurrent_dropout,
                     help="variational dropout of h_{t-1} where it feeds W: one mask per "
                          "stream and chunk (Gal & Ghahramani 2016)")
    reg.add_argument("--weight-drop", type=probability, default=d.weight_drop,
                     help="DropConnect on the recurrent weights W: one mask per chunk "
                          "(AWD-LSTM, Merity et al. 2017)")
    reg.add_argument("--zoneout", type=probability, default=d.zoneout,
                     help="each unit of h keeps its previous value with this probability at "
                          "every step (Krueger et al. 2017)")
    reg.add_argument("--zoneout-cell", type=probability, default=d.zoneout_cell,
                     help="zoneout of the LSTM's cell state c (default: as --zoneout)")
    opt = p.add_argument_group("training")
    opt.add_argument("--seq", type=_positive, default=d.seq, help="truncated-BPTT chunk length")
    opt.add_argument("--batch", type=_positive, default=d.batch, help="parallel streams")
    opt.add_argument("--steps", type=_positive, default=d.steps, help="training chunks")
    opt.add_argument("--lr", type=_rate, default=d.lr,
                     help="peak Adam learning rate (cosine decay to a tenth)")
    opt.add_argument("--clip", type=_rate, default=d.clip, help="global-norm gradient clip")
    opt.add_argument("--time-limit", type=_rate, default=d.time_limit, metavar="SECONDS",
                     help="stop after this many seconds of training (counted over resumes; "
                          "the learning-rate schedule still spans --steps)")
    opt.add_argument("--seed", type=_natural, default=d.seed)
    opt.add_argument("--backward", choices=("manual", "autodiff"), default=d.backward,
                     help="hand-written BPTT, or JAX autodiff of the same forward")
    opt.add_argument("--kernel", choices=("auto", "native"), default=d.kernel,
                     help="native: the training and validation losses on jrnn's C++ loops "
                          "and softmax head (CPU, float32; the LSTM, GRU and tanh cells "
                          "without projections, heads or recurrent noise, one device); "
                          "auto: the lax.scan path")
    opt.add_argument("--devices", type=_positive, default=d.devices,
                     help="data-parallel over this many devices (the batch is split)")
    ck = p.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint-dir", help="the run folder: checkpoints, train_log.jsonl "
                    "(one JSON line per step), loss.png and gradient_flow.png go there; a new "
                    "run refuses a folder that holds another run (none: nothing is saved)")
    ck.add_argument("--checkpoint-every", type=_positive, default=d.checkpoint_every,
                    help="steps between checkpoints (one is always written at the end)")
    ck.add_argument("--keep", type=_positive, default=d.keep, help="checkpoints kept")
    ck.add_argument("--resume", action="store_true",
                    help="continue from the newest good checkpoint in --checkpoint-dir")
    out = p.add_argument_group("after training")
    out.add_argument("--sample", type=_natural, default=600,
                     help="characters to sample (0: none)")
    out.add_argument("--temperature", type=_nonnegative, default=0.7,
                     help="softmax temperature (0: the most likely character)")
    out.add_argument("--prompt", help="text to continue, in the corpus's characters (default: "
                     "'def ' if the corpus has them, else a newline)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-dir", required=True, help="a `jrnn train` checkpoint folder")
    p.add_argument("--prompt", help="text to continue, in the model's characters (default: "
                   "'def ' if it has them, else a newline)")
    p.add_argument("--length", type=_positive, default=600, help="characters to sample")
    p.add_argument("--temperature", type=_nonnegative, default=0.7,
                   help="softmax temperature (lower: more conservative; 0: the most likely)")
    p.add_argument("--seed", type=_natural, default=0)


def _gradcheck_arguments(p: argparse.ArgumentParser) -> None:
    from jrnn import cells
    from jrnn.gradcheck import ARCHITECTURES, TRUNCATED
    p.add_argument("--cell", default="elman", choices=cells.layer_names())
    p.add_argument("--arch", default="tagger",
                   choices=sorted(ARCHITECTURES) + sorted(TRUNCATED))
    for name, default, what in (("T", 20, "sequence length"), ("B", 4, "batch"),
                                ("D", 8, "input size"), ("H", 16, "hidden size"),
                                ("C", 5, "classes")):
        p.add_argument(f"--{name}", type=_positive, default=default, help=what)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=_natural, default=0)
    p.add_argument("--tolerance", type=_nonnegative, default=None,
                   help="exit with status 1 if an error exceeds it (default: 1e-10 for "
                        "float64, 1e-5 for float32)")


def parser() -> argparse.ArgumentParser:
    top = ArgumentParser(
        prog="jrnn", description="Recurrent networks in JAX with hand-written BPTT.",
        epilog="`jrnn <command> --help` lists the options of each command.")
    sub = top.add_subparsers(dest="command", required=True, metavar="command")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    _train_arguments(sub.add_parser(
        "train", formatter_class=fmt,
        help="train a character-level language model (checkpoints, resume, loss plot)",
        description="Train a character-level language model by truncated BPTT. With "
                    "--checkpoint-dir, checkpoints (atomic, pickle-free .npz), a JSON-lines "
                    "log and the plots go there, and --resume continues a run exactly where "
                    "it stopped."))
    _sample_arguments(sub.add_parser(
        "sample", formatter_class=fmt, help="sample text from a `jrnn train` checkpoint",
        description="Sample text from the newest good checkpoint of a `jrnn train` run."))
    # Listed here for `jrnn --help`; its options are the benchmark program's own (see _bench).
    sub.add_parser("bench", add_help=False,
                   help="run the benchmark suite (jrnn, autodiff, Flax, PyTorch); "
                        "--remat or --precision for the others")
    _gradcheck_arguments(sub.add_parser(
        "gradcheck", formatter_class=fmt,
        help="compare hand-written and autodiff gradients at your sizes",
        description="Builds a random model and batch for a cell and an architecture at the "
                    "given sizes, differentiates it by jrnn's hand-written BPTT and by JAX "
                    "autodiff, and prints the relative error of the loss and every gradient."))
    return top


def _bench_program(argv: Sequence[str]):
    """(module, prog, its arguments) for `jrnn bench ARGS`: --remat / --precision pick the
    program, a lone `--` is dropped, and everything else is the program's own option."""
    import importlib
    argv = list(argv)
    name, rest = "suite", []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest += argv[i + 1:]
            break
        if arg in BENCH_PROGRAMS:
            if name != "suite":
                ArgumentParser(prog="jrnn bench").error("--remat and --precision: choose one")
            name = BENCH_PROGRAMS[arg]
        else:
            rest.append(arg)
    flag = {v: k for k, v in BENCH_PROGRAMS.items()}.get(name)
    prog = f"jrnn bench {flag}" if flag else "jrnn bench"
    return importlib.import_module(f"jrnn.bench.{name}"), prog, rest


def _bench_epilog() -> str:
    return (f"`jrnn bench` runs the suite; `jrnn bench --remat` the memory/time curve of "
            f"memory-bounded BPTT; `jrnn bench --precision` float32 against bfloat16. Results go "
            f"to {BENCH_OUT}/ unless --out says otherwise.")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parses a `jrnn` command line as :func:`main` would, running nothing.

    For `bench`, the benchmark program's own parser checks the rest of the line too
    (``options``). A malformed line exits with status 2 and one line on stderr.
    """
    argv = list(argv)
    if argv[:1] == ["bench"]:
        module, prog, rest = _bench_program(argv[1:])
        options = module.arguments(prog=prog, out=BENCH_OUT, epilog=_bench_epilog()
                                   ).parse_args(rest)
        return argparse.Namespace(command="bench", module=module, prog=prog, args=rest,
                                  options=options)
    return parser().parse_args(argv)


def _fail(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _train(args) -> int:
    from jrnn import charlm, checkpoint
    fields = {f.name for f in dataclasses.fields(charlm.Config)}
    try:
        config = charlm.Config(**{k: v for k, v in vars(args).items() if k in fields})
        config.check_trainable()
    except ValueError as e:  # options that do not go together: a malformed command line
        name, _, rest = str(e).partition(": ")
        print(f"jrnn train: error: --{name.replace('_', '-')}: {rest}", file=sys.stderr)
        return 2
    if args.resume and not args.checkpoint_dir:
        print("jrnn train: error: --resume needs --checkpoint-dir", file=sys.stderr)
        return 2
    try:
        result = charlm.run(config, resume=args.resume, progress=not args.quiet,
                            prompt=args.prompt if args.sample else None)
        if args.sample:
            prompt = charlm.default_prompt(result.vocab) if args.prompt is None else args.prompt
            text = charlm.generate(result.params, result.vocab, result.key, prompt,
                                   args.sample, args.temperature, config.regularisation())
    except (charlm.NonFiniteError, checkpoint.CheckpointError, ValueError, OSError) as e:
        return _fail(e)
    except KeyboardInterrupt:
        where = (f"; `--resume` continues from the last checkpoint in {args.checkpoint_dir}"
                 if args.checkpoint_dir else "")
        print(f"\ninterrupted{where}", file=sys.stderr)
        return 130
    if args.sample:
        print(f"\n--- sample (temperature {args.temperature}) ---\n{prompt}{text}\n---")
    print(charlm.summary(result, config))
    return 0


def _sample(args) -> int:
    import jax
    from jrnn import charlm, checkpoint
    try:
        params, vocab, meta = charlm.load(args.checkpoint_dir)
        prompt = charlm.default_prompt(vocab) if args.prompt is None else args.prompt
        text = charlm.generate(params, vocab, jax.random.key(args.seed), prompt,
                               args.length, args.temperature,
                               charlm.saved_config(meta).regularisation())
    except (checkpoint.CheckpointError, ValueError, OSError) as e:
        return _fail(e)
    print(f"{prompt}{text}")
    return 0


def _bench(args) -> int:
    try:
        return args.module.main(args.args, prog=args.prog, out=BENCH_OUT, epilog=_bench_epilog())
    except OSError as e:
        return _fail(e)


def _gradcheck(args) -> int:
    import jax
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jrnn import gradcheck
    sizes = gradcheck.Sizes(args.T, args.B, args.D, args.H, args.C)
    try:
        errors = gradcheck.check(args.arch, args.cell, sizes, jnp.dtype(args.dtype), args.seed)
    except ValueError as e:
        return _fail(e)
    tolerance = ({"float64": 1e-10, "float32": 1e-5}[args.dtype] if args.tolerance is None
                 else args.tolerance)
    print(f"{args.cell} / {args.arch}, T={args.T} B={args.B} D={args.D} H={args.H} "
          f"C={args.C}, {args.dtype}: relative error of hand-written vs autodiff")
    width = max(map(len, errors))
    for name, e in sorted(errors.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<{width}}  {e:.2e}")
    worst = max(errors.values())
    verdict = "ok" if worst <= tolerance else "FAILED"
    print(f"largest {worst:.2e} (tolerance {tolerance:.0e}): {verdict}")
    return 0 if worst <= tolerance else 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings (a damaged checkpoint skipped, for one) as the command's own lines."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return {"train": _train, "sample": _sample, "bench": _bench,
                "gradcheck": _gradcheck}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
