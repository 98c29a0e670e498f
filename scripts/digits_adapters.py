"""The digits classifier (scripts/digits.py) trained once through each adapter:
Flax NNX, Flax Linen and Equinox, each a jrnn recurrent module and a linear head.

The same data, split, model (one recurrent layer, the head on the final hidden
state), optimiser (Adam) and batches in all three; each framework trains it
the way its users do (``nnx.Optimizer``; ``init``/``apply`` with optax;
``eqx.filter_jit``/``eqx.filter_grad``).

    python scripts/digits_adapters.py                  # LSTM, H 64, 15 epochs
    python scripts/digits_adapters.py --cell gru --frameworks nnx equinox
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrnn.data import load_digits


def nll(logits, ys):
    return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()


def final_h(carry):
    return carry.h if hasattr(carry, "h") else carry


def train_nnx(args, batches, evaluate):
    from flax import nnx

    import jrnn.nnx

    class Classifier(nnx.Module):
        def __init__(self, rngs):
            self.rnn = jrnn.nnx.RNN(args.cell, 8, args.hidden, return_carry=True, rngs=rngs)
            self.head = nnx.Linear(args.hidden, 10, rngs=rngs)

        def __call__(self, xs):
            carry, _ = self.rnn(xs)
            return self.head(final_h(carry))

    model = Classifier(nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xs, ys):
        loss, grads = nnx.value_and_grad(lambda m: nll(m(xs), ys))(model)
        optimizer.update(model, grads)
        return loss

    for xs, ys in batches():
        step(model, optimizer, xs, ys)
    return evaluate(nnx.jit(lambda xs: model(xs)))


def train_linen(args, batches, evaluate):
    import flax.linen as nn

    import jrnn.linen

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, xs):
            carry, _ = jrnn.linen.RNN(cell=args.cell, features=args.hidden, return_carry=True)(xs)
            return nn.Dense(10)(final_h(carry))

    model, tx = Classifier(), optax.adam(args.lr)
    params = model.init(jax.random.key(args.seed), jnp.zeros((1, 8, 8), jnp.float32))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xs, ys):
        grads = jax.grad(lambda p: nll(model.apply(p, xs), ys))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for xs, ys in batches():
        params, opt_state = step(params, opt_state, xs, ys)
    return evaluate(jax.jit(lambda xs: model.apply(params, xs)))


def train_equinox(args, batches, evaluate):
    import equinox as eqx

    import jrnn.equinox

    k_rnn, k_head = jax.random.split(jax.random.key(args.seed))

    class Classifier(eqx.Module):
        rnn: jrnn.equinox.RNN
        head: eqx.nn.Linear

        def __call__(self, xs):
            carry, _ = self.rnn(xs, return_carry=True)
            return jax.vmap(self.head)(final_h(carry))

    model = Classifier(jrnn.equinox.RNN(args.cell, 8, args.hidden, key=k_rnn),
                       eqx.nn.Linear(args.hidden, 10, key=k_head))
    tx = optax.adam(args.lr)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, xs, ys):
        grads = eqx.filter_grad(lambda m: nll(m(xs), ys))(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    for xs, ys in batches():
        model, opt_state = step(model, opt_state, xs, ys)
    return evaluate(eqx.filter_jit(lambda xs: model(xs)))


TRAINERS = {"nnx": train_nnx, "linen": train_linen, "equinox": train_equinox}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cell", default="lstm", choices=("elman", "lstm", "gru"))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frameworks", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    images, labels = load_digits()                          # (N, 8 rows, 8 pixels): batch-first
    order = np.random.default_rng(0).permutation(len(labels))  # scripts/digits.py's split
    test, train = order[: len(order) // 5], order[len(order) // 5:]
    xs, ys = jnp.asarray(images, jnp.float32), jnp.asarray(labels)

    def batches():
        rng = np.random.default_rng(args.seed)
        for _ in range(args.epochs):
            shuffled = rng.permutation(train)
            for start in range(0, len(shuffled) - args.batch + 1, args.batch):
                idx = shuffled[start:start + args.batch]
                yield xs[idx], ys[idx]

    def evaluate(predict):
        return float(jnp.mean(jnp.argmax(predict(xs[test]), -1) == ys[test]))

    print(f"{len(train)} training and {len(test)} test images; {args.cell} cell, "
          f"H={args.hidden}, {args.epochs} epochs")
    for name in args.frameworks:
        t0 = time.perf_counter()
        accuracy = TRAINERS[name](args, batches, evaluate)
        print(f"{name:8s} test accuracy {accuracy:.1%} ({round(accuracy * len(test))}/"
              f"{len(test)}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
