"""Character-level language model, trained with jrnn's hand-written BPTT.

The min-char-rnn recipe (seed 003's reference) at a useful scale: a recurrent
network (the seeds' tanh RNN by default; ``--cell lstm`` or ``gru``, and
``--layers``) reads one-hot characters and predicts the next one; a long text is cut into
``--batch`` parallel streams and trained by truncated BPTT in chunks of
``--seq`` characters, the hidden state carried from chunk to chunk.

With no ``--text`` it trains on about 2 MB of the Python standard library's
own source (no download). It prints the validation loss beside the unigram
entropy of the same text (the loss of a model that ignores context) and a
sample. The defaults finish in about two to three minutes on a 2-core CPU.

    python scripts/char_lm.py                   # default corpus
    python scripts/char_lm.py --text book.txt --steps 5000 --hidden 512
    python scripts/char_lm.py --cell lstm --hidden 256
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

import jrnn
from jrnn.data import CharVocab, stdlib_source, streams, unigram_entropy
from jrnn.models import tagger


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--text", help="a UTF-8 text file (default: Python stdlib source)")
    parser.add_argument("--max-chars", type=int, default=2_000_000,
                        help="characters of the default corpus")
    parser.add_argument("--cell", default="elman", choices=jrnn.cells.names())
    parser.add_argument("--hidden", type=int, default=512, help="hidden size H")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seq", type=int, default=64, help="truncated-BPTT chunk length")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams")
    parser.add_argument("--steps", type=int, default=6000, help="training chunks")
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="peak Adam learning rate (cosine decay to a tenth)")
    parser.add_argument("--clip", type=float, default=5.0, help="global-norm gradient clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backward", choices=("manual", "autodiff"), default="manual",
                        help="hand-written BPTT, or JAX autodiff of the same forward")
    parser.add_argument("--sample", type=int, default=600, help="characters to sample")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--prompt", default="def ")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
        source = args.text
    else:
        text, source = stdlib_source(args.max_chars), "Python standard library source"
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    split = int(0.95 * len(ids))
    train, valid = streams(ids[:split], args.batch), streams(ids[split:], args.batch)
    V, H, T = vocab.size, args.hidden, args.seq
    baseline = unigram_entropy(ids[:split], V)
    print(f"corpus: {source}, {len(ids):,} characters, vocabulary {V}; "
          f"{len(ids) - split:,} held out")
    print(f"model: {args.cell}, {args.layers} layer(s), H={H}, {args.batch} streams x {T} "
          f"steps per chunk, backward={args.backward}, device={jax.devices()[0].platform}")

    def loss_and_state(p, xs, ys, h0):
        one_hot = jax.nn.one_hot(xs, V, dtype=p.head.V.dtype)
        return tagger.loss_and_state(p, one_hot, ys, h0, reduction="mean",
                                     backward=args.backward)

    key_init, key_sample = jax.random.split(jax.random.key(args.seed))
    params = tagger.init(key_init, args.cell, V, H, V, num_layers=args.layers)
    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1)
    optimizer = jrnn.train.adam(schedule, args.clip)
    opt_state = optimizer.init(params)
    step = jrnn.train.make_tbptt_step(loss_and_state, optimizer)
    zeros = jrnn.layers.zero_states(params.rnn, (args.batch,))
    h = zeros
    start, smooth, t0 = 0, None, time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc="training", unit="chunk", file=sys.stdout,
               mininterval=1.0)
    for i in bar:
        if start + T + 1 > len(train):  # end of the text: start the streams again
            start, h = 0, zeros
        xs, ys = train[start:start + T], train[start + 1:start + T + 1]
        start += T
        params, opt_state, h, metrics = step(params, opt_state, h, xs, ys)
        loss = float(metrics.loss)
        if not metrics.finite:
            bar.close()
            print(f"error: non-finite loss or gradient at step {i} (loss {loss}); the update "
                  "was skipped and training stopped. Try a lower --lr or --clip.")
            return 1
        smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
        rate = i * T * args.batch / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{smooth:.3f}", chars_per_s=f"{rate:,.0f}", refresh=False)
    bar.close()
    elapsed = time.perf_counter() - t0

    evaluate = jax.jit(functools.partial(tagger.loss_and_state, reduction="sum"))
    total, h = 0.0, zeros
    for xs, ys in jrnn.train.chunks(valid[:-1], valid[1:], 512):
        J, h = evaluate(params, jax.nn.one_hot(xs, V, dtype=params.head.V.dtype), ys, h)
        total += float(J)
    val_loss = total / ((len(valid) - 1) * args.batch)

    prompt = vocab.encode(args.prompt) if args.prompt else vocab.encode(text[:1])
    tokens = tagger.sample(params, key_sample, jnp.asarray(prompt), args.sample,
                           temperature=args.temperature)
    print(f"\n--- sample (temperature {args.temperature}) ---\n"
          f"{args.prompt}{vocab.decode(tokens)}\n---")
    print(f"trained {args.steps} chunks ({args.steps * T * args.batch:,} characters) "
          f"in {elapsed:.0f} s")
    print(f"unigram baseline : {baseline:.3f} nats/char ({baseline / math.log(2):.2f} bits)")
    print(f"validation loss  : {val_loss:.3f} nats/char ({val_loss / math.log(2):.2f} bits), "
          f"{val_loss / baseline:.0%} of the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
