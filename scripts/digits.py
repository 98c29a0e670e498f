"""Many-to-one: classify scikit-learn's handwritten digits read row by row.

Each 8×8 image is a sequence of 8 steps with 8 features (one row of pixels
per step); the classifier reads the final state (a many-to-one RNN).
The data ship with scikit-learn, so nothing is downloaded. A fixed 20% of the
1797 images is held out for the test accuracy.

    python scripts/digits.py                          # tanh RNN
    python scripts/digits.py --cell elman --bidirectional --layers 2
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
from jrnn.data import load_digits
from jrnn.models import classifier


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cell", default="elman", choices=jrnn.cells.names())
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backward", choices=("manual", "autodiff"), default="manual")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    images, labels = load_digits()
    order = np.random.default_rng(0).permutation(len(labels))  # one fixed split
    test, train = order[: len(order) // 5], order[len(order) // 5:]
    xs = jnp.asarray(images.transpose(1, 0, 2))  # (T=8 rows, N, 8 pixels): time-major
    ys = jnp.asarray(labels)

    key_init, key = jax.random.split(jax.random.key(args.seed))
    params = classifier.init(key_init, args.cell, 8, args.hidden, 10, num_layers=args.layers,
                             bidirectional=args.bidirectional)
    optimizer = jrnn.train.adam(args.lr)
    step = jrnn.train.make_train_step(
        lambda p, batch: (classifier.loss(p, *batch, reduction="mean",
                                          backward=args.backward), None), optimizer)
    opt_state = optimizer.init(params)
    def accuracy(p, xs, ys):
        predicted = classifier.predict(p, xs)
        return jnp.mean(predicted == ys.astype(predicted.dtype))
    accuracy = jax.jit(accuracy)
    rng = np.random.default_rng(args.seed)
    print(f"{len(train)} training and {len(test)} test images; {args.cell} cell, "
          f"H={args.hidden}, {args.layers} layer(s){', bidirectional' if args.bidirectional else ''}")
    t0 = time.perf_counter()
    bar = tqdm(range(args.epochs), desc="epochs", file=sys.stdout)
    for epoch in bar:
        shuffled = rng.permutation(train)
        for start in range(0, len(shuffled) - args.batch + 1, args.batch):
            idx = shuffled[start:start + args.batch]
            params, opt_state, _, metrics = step(params, opt_state, (xs[:, idx], ys[idx]))
            if not metrics.finite:
                print(f"error: non-finite loss or gradient in epoch {epoch + 1}; stopped")
                return 1
        bar.set_postfix(loss=f"{float(metrics.loss):.3f}",
                        train_acc=f"{float(accuracy(params, xs[:, train], ys[train])):.3f}")
    bar.close()
    acc = float(accuracy(params, xs[:, test], ys[test]))
    print(f"test accuracy: {acc:.1%} ({round(acc * len(test))}/{len(test)}) "
          f"after {args.epochs} epochs in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
