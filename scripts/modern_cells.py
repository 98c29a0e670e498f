"""Modern recurrences against the LSTM: the same char-LM, the same wall-clock budget.

Trains the character-level language model of ``jrnn train`` (:mod:`jrnn.charlm`:
the demo's corpus, hidden size, chunk length, batch and learning rate) once per
cell, each for the same number of seconds of training (compilation included), and
scores each on the same held-out end of the text. Cells: the LSTM (Hochreiter &
Schmidhuber 1997) as the reference, minGRU and minLSTM (Feng et al. 2024, "Were
RNNs All We Needed?"; linear recurrences, :mod:`jrnn.linear`) and the sLSTM
(Beck et al. 2024, "xLSTM"; exponential input gate, normaliser and stabiliser).

A fixed budget favours the cell that does more per second, which is the
question asked; the learning-rate schedule (cosine decay over the run's steps)
must still end where the budget does, or a fast cell would be cut off at a high
learning rate. So each cell first runs a short probe (``--probe-steps``) to
measure its time per step and its first step (compilation); its schedule then
gets as many steps as should fit in ``--seconds``, and the run is stopped by
the same ``--seconds`` as a time limit (``jrnn train --time-limit``) should the
estimate be long. The table reports the steps each cell took, the schedule it
was given, its steps per second and its validation loss.

    python scripts/modern_cells.py --out docs/results/modern_cells.md   # about 10 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time

from jrnn import cells, charlm, cli
from jrnn.bench import write_report

CELLS = ("lstm", "mingru", "minlstm", "slstm")


def parse_args(argv=None):
    d = charlm.Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    positive = cli.integer(1)
    parser.add_argument("--cells", nargs="+", default=list(CELLS),
                        choices=cells.layer_names())
    parser.add_argument("--seconds", type=cli.number(positive=True), default=120.0,
                        help="training seconds per cell (compilation included)")
    parser.add_argument("--probe-steps", type=positive, default=30,
                        help="steps of the probe that measures each cell's time per step")
    parser.add_argument("--hidden", type=positive, default=d.hidden)
    parser.add_argument("--max-chars", type=positive, default=d.max_chars,
                        help="characters of the corpus (5%% held out for validation)")
    parser.add_argument("--seq", type=positive, default=d.seq)
    parser.add_argument("--batch", type=positive, default=d.batch)
    parser.add_argument("--lr", type=cli.number(positive=True), default=d.lr)
    parser.add_argument("--seed", type=cli.integer(0), default=d.seed)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--out", help="write the table here (markdown) and beside it JSON")
    return parser.parse_args(argv)


def probe(config: charlm.Config) -> tuple[float, float]:
    """(seconds of the first step, median seconds of a later step) of a short run."""
    stamps = [time.perf_counter()]
    charlm.run(config, progress=False, log=lambda s: None,
               on_chunk=lambda step, state: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return gaps[0], statistics.median(gaps[1:] or gaps)


def schedule_steps(seconds: float, first: float, per_step: float) -> int:
    """Steps that fit in ``seconds`` after a first step of ``first`` seconds (at least 1)."""
    return max(1, 1 + int((seconds - first) / per_step))


def main(argv=None) -> int:
    args = parse_args(argv)
    base = charlm.Config(hidden=args.hidden, max_chars=args.max_chars, seq=args.seq,
                         batch=args.batch, lr=args.lr, seed=args.seed)
    rows = []
    for cell in args.cells:
        config = dataclasses.replace(base, cell=cell, steps=args.probe_steps)
        first, per_step = probe(config)
        steps = schedule_steps(args.seconds, first, per_step)
        config = dataclasses.replace(config, steps=steps, time_limit=args.seconds)
        print(f"\n== {cell}: first step {first:.1f} s, then {per_step * 1e3:.1f} ms per step: "
              f"a schedule of {steps} steps in {args.seconds:g} s")
        result = charlm.run(config, progress=not args.quiet, log=lambda s: None)
        done = len(result.losses)
        rows.append({**dataclasses.asdict(config),  # its `steps` is the schedule's length
                     "cell": cell, "validation": result.val_loss, "steps": done,
                     "schedule": steps, "seconds": result.seconds,
                     "steps_per_second": done / result.seconds,
                     "probe_first_step_s": first, "probe_step_ms": per_step * 1e3,
                     "time_limited": result.time_limited, "baseline": result.baseline})
        print(f"validation {result.val_loss:.4f} nats/char after {done} steps in "
              f"{result.seconds:.0f} s")
    header = (f"H={args.hidden}, one layer; {args.batch} streams x {args.seq} characters per "
              f"step, {args.max_chars:,} characters of the stdlib source (5% held out); Adam "
              f"lr {args.lr} with cosine decay over each cell's schedule; seed {args.seed}; "
              f"{args.seconds:g} s of training per cell")
    lines = ["| cell | validation loss (nats/char) | steps done / schedule | steps/s | "
             "training time |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['validation']:.4f} "
                     f"({r['validation'] / math.log(2):.3f} bits) | {r['steps']} / "
                     f"{r['schedule']} | {r['steps_per_second']:.1f} | {r['seconds']:.0f} s |")
    text = "\n".join(lines)
    print(f"\n{header}\n{text}")
    if args.out:
        write_report(args.out, "modern_cells.py", argv,
                     "Modern recurrences against the LSTM, at equal training time",
                     f"{header}. Every cell reads the same chunks of the same text from the "
                     f"same seed and is scored on the same held-out 5% (unigram baseline "
                     f"{rows[0]['baseline']:.3f} nats/char). One run per cell.\n\n{text}\n",
                     rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
