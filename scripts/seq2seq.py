"""Many-to-many with T_x ≠ T_y: an encoder-decoder on digit strings.

``--task reverse``: "40712" -> "21704"; ``--task add``: "407+12" -> "419".
The encoder reads the one-hot characters; its final state starts the decoder,
which is trained with teacher forcing and decodes greedily, each output fed
back, until it emits an end token. Exact match means every character right
and the end token in the right place. Training batches are freshly drawn; the
test set is a fixed 1000 examples.

    python scripts/seq2seq.py --task reverse
    python scripts/seq2seq.py --task add --max-digits 3 --steps 8000
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jrnn
from jrnn.data import DIGIT_VOCAB, digit_strings
from jrnn.models import seq2seq

EOS = len(DIGIT_VOCAB)      # the end token, after the digits and '+'
VOCAB = len(DIGIT_VOCAB) + 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", choices=("reverse", "add"), default="reverse")
    parser.add_argument("--max-digits", type=int, default=8)
    parser.add_argument("--cell", default="elman", choices=jrnn.cells.names())
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true", help="bidirectional encoder")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_batch(rng, num, args):
    """One-hot inputs (T_x, N, VOCAB), their lengths, targets with EOS, their lengths."""
    xs, x_lengths, ys, y_lengths = digit_strings(rng, num, args.max_digits, args.task)
    ys = np.concatenate([ys, np.zeros((1, num), ys.dtype)])
    ys[y_lengths, np.arange(num)] = EOS
    return (jax.nn.one_hot(xs, VOCAB, dtype=jnp.float32), jnp.asarray(x_lengths), jnp.asarray(ys),
            jnp.asarray(y_lengths + 1))


def exact_match(params, batch) -> float:
    xs, x_lengths, ys, y_lengths = batch
    out = seq2seq.decode(params, xs, ys.shape[0], x_lengths=x_lengths).astype(ys.dtype)
    wanted = jrnn.lengths_to_mask(y_lengths, ys.shape[0])  # targets up to and including EOS
    return float(jnp.mean(jnp.all(jnp.where(wanted, out == ys, True), axis=0)))


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    test = make_batch(np.random.default_rng(12345), 1000, args)
    params = seq2seq.init(jax.random.key(args.seed), args.cell, VOCAB, args.hidden, VOCAB,
                          num_layers=args.layers, bidirectional_encoder=args.bidirectional)
    optimizer = jrnn.train.adam(args.lr, 1.0)

    def loss(p, batch):
        xs, x_lengths, ys, y_lengths = batch
        return seq2seq.loss(p, xs, ys, x_lengths=x_lengths, y_lengths=y_lengths,
                            reduction="mean"), None

    step = jrnn.train.make_train_step(loss, optimizer)
    evaluate = jax.jit(lambda p, batch: seq2seq.decode(p, batch[0], batch[2].shape[0],
                                                       x_lengths=batch[1]))
    opt_state, t0 = optimizer.init(params), time.perf_counter()
    print(f"task {args.task!r} with up to {args.max_digits} digits; {args.cell} encoder-decoder, "
          f"H={args.hidden}, {args.layers} layer(s)")
    bar = tqdm(range(1, args.steps + 1), desc="training", file=sys.stdout, mininterval=1.0)
    for i in bar:
        params, opt_state, _, metrics = step(params, opt_state, make_batch(rng, args.batch, args))
        if not metrics.finite:
            bar.close()
            print(f"error: non-finite loss or gradient at step {i}; stopped")
            return 1
        if i % 500 == 0:
            bar.set_postfix(loss=f"{float(metrics.loss):.3f}",
                            exact=f"{exact_match(params, test):.3f}")
    bar.close()
    accuracy = exact_match(params, test)
    xs, x_lengths, ys, y_lengths = test
    decoded = evaluate(params, test)
    show = lambda tokens, n: "".join((DIGIT_VOCAB + "$")[t] for t in tokens[:n])
    for i in range(5):
        source = "".join(DIGIT_VOCAB[t] for t in np.argmax(xs[: x_lengths[i], i], -1))
        print(f"  {source:>12} -> {show(decoded[:, i], int(y_lengths[i]))}"
              f"   (target {show(ys[:, i], int(y_lengths[i]))})")
    print(f"exact-match accuracy: {accuracy:.1%} on {len(x_lengths)} test strings, "
          f"after {args.steps} steps in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
