"""The descriptor table: every architecture × layer option, built for any cell.

Each entry builds random parameters and a batch for a cell and returns a loss
``loss(params, batch, backward)``. ``tests/test_architectures.py`` runs every
entry with every registered cell, so an architecture, an option or a cell is
tested the moment it is registered here or in ``jrnn.cells`` (the Haiku
descriptor lesson, DESIGN.md §4).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

import jrnn
from jrnn import layers
from jrnn.models import classifier, generator, seq2seq, tagger

T, B, D, H, C = 5, 3, 3, 4, 3
LENGTHS = jnp.array([5, 3, 1])  # ragged, including a one-step sequence


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str
    build: Callable  # (key, cell, dtype) -> (params, batch dict)
    loss: Callable   # (params, batch, backward) -> scalar


def _normal(key, shape, dtype, scale=1.0):
    return scale * jax.random.normal(key, shape, dtype)


def _tagger(num_layers=1, bidirectional=False, learn_h0=False, given_h0=False, lengths=False,
            mask=False, reset=False, reduction="sum"):
    def build(key, cell, dtype):
        k = jax.random.split(key, 6)
        p = tagger.init(k[0], cell, D, H, C, num_layers=num_layers, bidirectional=bidirectional,
                        learn_h0=learn_h0, dtype=dtype)
        if learn_h0:  # nonzero learned states, so that their gradient paths are exercised
            p = p._replace(h0=jax.tree.map(lambda a: _normal(k[5], a.shape, dtype, 0.5), p.h0))
        batch = {"xs": _normal(k[1], (T, B, D), dtype),
                 "ys": jax.random.randint(k[2], (T, B), 0, C)}
        if given_h0:
            batch["h0"] = jax.tree.map(lambda a: _normal(k[3], a.shape, dtype, 0.5),
                                       layers.zero_states(p.rnn, (B,)))
        if lengths:
            batch["lengths"] = LENGTHS
        if mask:
            batch["mask"] = jax.random.bernoulli(k[3], 0.7, (T, B))
        if reset:
            batch["reset"] = jax.random.bernoulli(k[4], 0.3, (T, B))
        return p, batch

    def loss(p, batch, backward):
        b = dict(batch)
        return tagger.loss(p, b.pop("xs"), b.pop("ys"), b.pop("h0", None), reduction=reduction,
                           backward=backward, **b)
    return build, loss


def _classifier(num_layers=1, bidirectional=False, learn_h0=False):
    def build(key, cell, dtype):
        k = jax.random.split(key, 4)
        p = classifier.init(k[0], cell, D, H, C, num_layers=num_layers,
                            bidirectional=bidirectional, learn_h0=learn_h0, dtype=dtype)
        if learn_h0:
            p = p._replace(h0=jax.tree.map(lambda a: _normal(k[3], a.shape, dtype, 0.5), p.h0))
        return p, {"xs": _normal(k[1], (T, B, D), dtype),
                   "ys": jax.random.randint(k[2], (B,), 0, C), "lengths": LENGTHS}

    def loss(p, batch, backward):
        return classifier.loss(p, batch["xs"], batch["ys"], lengths=batch["lengths"],
                               backward=backward)
    return build, loss


def _regressor():
    def build(key, cell, dtype):
        k = jax.random.split(key, 3)
        p = classifier.init(k[0], cell, D, H, 2, dtype=dtype)
        return p, {"xs": _normal(k[1], (T, B, D), dtype), "lengths": LENGTHS,
                   "targets": _normal(k[2], (B, 2), dtype)}

    def loss(p, batch, backward):
        return classifier.regression_loss(p, batch["xs"], batch["targets"],
                                          lengths=batch["lengths"], reduction="mean",
                                          backward=backward)
    return build, loss


def _generator(num_layers=1):
    def build(key, cell, dtype):
        k = jax.random.split(key, 3)
        p = generator.init(k[0], cell, D, H, C, num_layers=num_layers, dtype=dtype)
        return p, {"context": _normal(k[1], (B, D), dtype),
                   "ys": jax.random.randint(k[2], (T, B), 0, C), "lengths": LENGTHS}

    def loss(p, batch, backward):
        return generator.loss(p, batch["context"], batch["ys"], lengths=batch["lengths"],
                              reduction="mean", backward=backward)
    return build, loss


def _seq2seq(num_layers=1, bidirectional_encoder=False):
    def build(key, cell, dtype):
        k = jax.random.split(key, 3)
        p = seq2seq.init(k[0], cell, D, H, C, num_layers=num_layers,
                         bidirectional_encoder=bidirectional_encoder, dtype=dtype)
        return p, {"xs": _normal(k[1], (T, B, D), dtype), "x_lengths": LENGTHS,
                   "ys": jax.random.randint(k[2], (T + 2, B), 0, C),   # T_y ≠ T_x
                   "y_lengths": jnp.array([7, 2, 4])}

    def loss(p, batch, backward):
        return seq2seq.loss(p, batch["xs"], batch["ys"], x_lengths=batch["x_lengths"],
                            y_lengths=batch["y_lengths"], backward=backward)
    return build, loss


def _single_layer(reverse=False, **options):
    """One layer through jrnn.layers.run_layer, with a loss on outputs and final state."""
    def build(key, cell, dtype):
        k = jax.random.split(key, 4)
        layer = layers.init_layer(k[0], cell, D, H, recurrent_bias=True, dtype=dtype)
        h0 = jax.tree.map(lambda a: _normal(k[2], a.shape, dtype, 0.5),
                          layers.zero_states(((layer,),), (B,))[0][0])
        batch = {"xs": _normal(k[1], (T, B, D), dtype), "h0": h0}
        if options.get("lengths"):
            batch["lengths"] = LENGTHS
        if options.get("reset"):
            batch["reset"] = jax.random.bernoulli(k[3], 0.3, (T, B))
        return layer, batch

    def loss(layer, batch, backward):
        b = dict(batch)
        hs, final = layers.run_layer(layer, b.pop("xs"), b.pop("h0"), reverse=reverse,
                                     backward=backward, **b)
        weights = jnp.arange(1, H + 1, dtype=hs.dtype).reshape(1, 1, H)
        return jnp.sum(jnp.sin(hs) * weights) + sum(jnp.sum(s ** 3) for s in
                                                     jax.tree.leaves(final))
    return build, loss


def _tbptt(chunk=2):
    """Truncated BPTT: chunk gradients accumulated, no gradient across boundaries."""
    def build(key, cell, dtype):
        k = jax.random.split(key, 3)
        p = tagger.init(k[0], cell, D, H, C, dtype=dtype)
        return p, {"xs": _normal(k[1], (T, B, D), dtype),
                   "ys": jax.random.randint(k[2], (T, B), 0, C)}

    def loss(p, batch, backward):
        def loss_and_state(p, xs, ys, h0):
            outputs, finals = tagger.hidden(p, xs, ((h0,),), backward=backward)
            J = jrnn.heads.softmax_nll(p.head.V, p.head.c, outputs, ys, backward=backward)
            return J, finals[0][0]
        h0 = layers.zero_states(p.rnn, (B,))[0][0]
        # Differentiable through params: the helper's value is a sum of chunk
        # losses, and its gradient is checked against jax.grad of that sum.
        return jrnn.train.tbptt_value_and_grad(loss_and_state, p, batch["xs"], batch["ys"],
                                               h0, chunk)
    return build, loss


def _remat_segments(segment=2):
    """Memory-bounded BPTT: the manual side recomputes segments of 2 steps (T = 5,
    so with a shorter last one); the reference is autodiff of the whole sequence."""
    def build(key, cell, dtype):
        k = jax.random.split(key, 4)
        p = tagger.init(k[0], cell, D, H, C, num_layers=2, dtype=dtype)
        h0 = jax.tree.map(lambda a: _normal(k[3], a.shape, dtype, 0.5),
                          layers.zero_states(p.rnn, (B,)))
        return p, {"xs": _normal(k[1], (T, B, D), dtype),
                   "ys": jax.random.randint(k[2], (T, B), 0, C), "h0": h0}

    def loss(p, batch, backward):
        fn = functools.partial(tagger.loss_and_state, backward=backward)
        if backward == "manual":
            fn = jrnn.remat.segmented(fn, segment)
        J, finals = fn(p, batch["xs"], batch["ys"], batch["h0"])
        return J + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(finals))
    return build, loss


ARCHS = {a.name: a for a in [
    Arch("layer", *_single_layer()),
    Arch("layer-reverse", *_single_layer(reverse=True)),
    Arch("layer-lengths", *_single_layer(lengths=True)),
    Arch("layer-reverse-lengths-reset", *_single_layer(reverse=True, lengths=True, reset=True)),
    Arch("tagger", *_tagger()),
    Arch("tagger-lengths-mean", *_tagger(lengths=True, reduction="mean")),
    Arch("tagger-mask", *_tagger(mask=True)),
    Arch("tagger-reset", *_tagger(reset=True)),
    Arch("tagger-learned-h0", *_tagger(learn_h0=True)),
    Arch("tagger-given-h0", *_tagger(given_h0=True)),
    Arch("deep", *_tagger(num_layers=3, lengths=True)),
    Arch("bidirectional", *_tagger(bidirectional=True, lengths=True)),
    Arch("deep-bidirectional", *_tagger(num_layers=2, bidirectional=True, lengths=True,
                                        learn_h0=True, reset=True)),
    Arch("many-to-one", *_classifier()),
    Arch("many-to-one-deep-bidirectional", *_classifier(num_layers=2, bidirectional=True,
                                                        learn_h0=True)),
    Arch("many-to-one-regression", *_regressor()),
    Arch("one-to-many", *_generator()),
    Arch("one-to-many-deep", *_generator(num_layers=2)),
    Arch("encoder-decoder", *_seq2seq()),
    Arch("encoder-decoder-deep-bidirectional", *_seq2seq(num_layers=2,
                                                         bidirectional_encoder=True)),
    Arch("memory-bounded-bptt", *_remat_segments()),
]}
TBPTT = Arch("truncated-bptt", *_tbptt())
