"""Does regularisation help? A plain and a regularised LSTM language model, side by side.

Trains two character-level language models (:mod:`jrnn.charlm`, the run behind
``jrnn train``) on the same text, from the same initial parameters, for the
same number of truncated-BPTT steps: one without noise, one with the
regularisation given here (:mod:`jrnn.dropout`: PyTorch's dropout between
stacked layers, variational recurrent dropout (Gal & Ghahramani 2016),
DropConnect on the recurrent weights (AWD-LSTM, Merity et al. 2017), zoneout
(Krueger et al. 2017)). Both are then scored deterministically (evaluation
mode) on the held-out end of the text and on the whole training text, so
the table shows each model's validation loss and its generalisation gap.

The corpus is the Python standard library's own source (no download), cut
short with ``--max-chars`` so that a few minutes of training see it many
times over: the regime where a network can memorise its training text and
noise can matter.

    python scripts/regularisation.py                       # a few minutes on 2 CPU cores
    python scripts/regularisation.py --max-chars 60000 --out docs/results/regularisation_60k.md
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys


from jrnn import charlm, cells, cli
from jrnn.bench import write_report
from jrnn.data import streams


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    positive, probability = cli.integer(1), cli.probability
    parser.add_argument("--cell", default="lstm", choices=cells.names())
    parser.add_argument("--hidden", type=positive, default=256)
    parser.add_argument("--layers", type=positive, default=2)
    parser.add_argument("--max-chars", type=positive, default=200_000,
                        help="characters of the corpus (5%% held out for validation)")
    parser.add_argument("--steps", type=positive, default=1500)
    parser.add_argument("--seq", type=positive, default=64)
    parser.add_argument("--batch", type=positive, default=32)
    parser.add_argument("--lr", type=cli.number(positive=True), default=2e-3)
    parser.add_argument("--seed", type=cli.integer(0), default=0)
    reg = parser.add_argument_group("the regularised model (jrnn train's flags)")
    reg.add_argument("--dropout", type=probability, default=0.3,
                     help="between stacked layers")
    reg.add_argument("--input-dropout", type=probability, default=0.0)
    reg.add_argument("--recurrent-dropout", type=probability, default=0.2)
    reg.add_argument("--weight-drop", type=probability, default=0.2)
    reg.add_argument("--zoneout", type=probability, default=0.0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--out", help="write the table here (markdown) and beside it JSON")
    return parser.parse_args(argv)


REGULARISATION = ("dropout", "input_dropout", "recurrent_dropout", "weight_drop", "zoneout")


def configs(args) -> tuple[charlm.Config, charlm.Config]:
    """(plain, regularised): the same run but for the noise."""
    plain = charlm.Config(cell=args.cell, hidden=args.hidden, layers=args.layers,
                          max_chars=args.max_chars, steps=args.steps, seq=args.seq,
                          batch=args.batch, lr=args.lr, seed=args.seed)
    return plain, dataclasses.replace(plain, **{k: getattr(args, k) for k in REGULARISATION})


def train_loss(config: charlm.Config, result: charlm.Result) -> float:
    """Evaluation-mode loss on the whole training text (all but the held-out end)."""
    text, _ = charlm.corpus(config)
    ids = result.vocab.encode(text)
    train = ids[:int((1 - charlm.VALID_SHARE) * len(ids))]
    return charlm.evaluate(result.params, streams(train, config.batch), result.vocab.size,
                           dropout=config.regularisation())


def describe(config: charlm.Config) -> str:
    on = [f"{k.replace('_', ' ')} {getattr(config, k):g}" for k in REGULARISATION
          if getattr(config, k)]
    return ", ".join(on) if on else "none"


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    for config in configs(args):
        print(f"\n== regularisation: {describe(config)}")
        result = charlm.run(config, progress=not args.quiet, log=lambda s: None)
        rows.append({"regularisation": describe(config), "validation": result.val_loss,
                     "training": train_loss(config, result), "baseline": result.baseline,
                     "seconds": result.seconds, **dataclasses.asdict(config)})
        print(f"validation {result.val_loss:.4f} nats/char in {result.seconds:.0f} s")
    plain, regularised = rows
    header = (f"{args.cell}, {args.layers} layer(s), H={args.hidden}; {args.steps} steps of "
              f"{args.batch} streams x {args.seq} characters "
              f"({args.steps * args.batch * args.seq / plain['max_chars']:.1f} passes over "
              f"{plain['max_chars']:,} characters of the stdlib source, 5% held out); "
              f"Adam lr {args.lr}, seed {args.seed}")
    lines = ["| regularisation | validation loss (nats/char) | training-text loss | gap | "
             "training time |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['regularisation']} | {r['validation']:.4f} "
                     f"({r['validation'] / math.log(2):.3f} bits) | {r['training']:.4f} | "
                     f"{r['validation'] - r['training']:+.4f} | {r['seconds']:.0f} s |")
    change = regularised["validation"] - plain["validation"]
    verdict = (f"regularisation {'lowered' if change < 0 else 'raised'} the validation loss by "
               f"{abs(change):.4f} nats/char ({abs(change) / plain['validation']:.1%})")
    text = "\n".join(lines)
    print(f"\n{header}\n{text}\n{verdict}")
    if args.out:
        write_report(args.out, "regularisation.py", argv,
                     "Regularisation of a character-level LSTM",
                     f"{header}. Both models start from the same parameters and read the same "
                     f"chunks; both are scored in evaluation mode (no noise) on the held-out 5% "
                     f"and on the whole training text (gap: validation minus training loss). "
                     f"One run each (the times are that run's wall clock, indicative "
                     f"only).\n\n{text}\n\n{verdict}.\n", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
