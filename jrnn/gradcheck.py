"""Check the hand-written gradients against autodiff on your own sizes: every architecture × option × cell.

The descriptor table (as in Haiku's ``integration/descriptors.py``): each entry builds
random parameters and a batch for a cell at given :class:`Sizes` and defines
``loss(params, batch, backward)``. :func:`check` differentiates it twice, by
jrnn's hand-written BPTT (``backward="manual"``) and by JAX autodiff of the
same forward (``backward="autodiff"``), and returns the relative error
‖g_manual − g_autodiff‖ / ‖g_autodiff‖ of every gradient leaf. The test suite
runs every entry with every cell, so an architecture, an option or a cell is
tested the moment it is registered here or in :mod:`jrnn.cells`; ``jrnn
gradcheck`` runs one at the sizes a user asks for. An entry that needs what
only some cells have names it in ``needs``, and runs with a cell exactly when the
cell has it (:func:`capabilities`): ``"projection"`` (LSTMP), ``"recurrence"`` (a
recurrent matrix: recurrent dropout, DropConnect, zoneout, heads) or ``"linear"``
(the linear driver's scan modes); :func:`pairs` lists the (entry, cell) pairs.

    >>> errors = jrnn.gradcheck.check("deep-bidirectional", "lstm", Sizes(T=50, B=4, D=8, H=16, C=5))
    >>> max(errors.values())   # ~1e-15 in float64
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import dropout as _dropout
from jrnn import cells, heads, layers, remat, train
from jrnn.models import classifier, generator, seq2seq, tagger

__all__ = ["Sizes", "Arch", "ARCHITECTURES", "TRUNCATED_BPTT", "TRUNCATED", "applies",
           "capabilities", "check",
           "linear_cells", "pairs", "split"]


class Sizes(NamedTuple):
    """Sequence length T, batch B, input D, hidden H, classes C."""

    T: int = 5
    B: int = 3
    D: int = 3
    H: int = 4
    C: int = 3

    @property
    def lengths(self):
        """Ragged valid lengths, from T down to 1 (row 0 full, the last row one step)."""
        step = max(1, (self.T - 1) // max(self.B - 1, 1))
        return jnp.array([max(1, self.T - j * step) for j in range(self.B)])

    @property
    def y_lengths(self):
        """Ragged target lengths for the encoder-decoder, whose T_y = T + 2 differs from T."""
        T_y = self.T + 2
        return jnp.array([T_y - (3 * j) % T_y for j in range(self.B)])


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str
    build: Callable  # (key, cell, dtype, sizes) -> (params, batch dict)
    loss: Callable   # (params, batch, backward) -> scalar
    needs: tuple = ()  # what the cell must have (:func:`capabilities`); (): every cell

    def accepts(self, cell: str) -> bool:
        """Whether this entry runs with ``cell``: the cell has all it needs."""
        return set(self.needs) <= capabilities(cell)


def capabilities(cell: str) -> frozenset:
    """What an entry may need of a cell: its driver (``"recurrence"``: a recurrent matrix W,
    so recurrent dropout, DropConnect, zoneout and heads; ``"linear"``: the linear driver's
    scan modes) and ``"projection"`` (LSTMP) where it takes one."""
    spec = cells.get(cell)
    return frozenset({spec.driver} | ({"projection"} if spec.projectable else set()))


def _widths(s: "Sizes", proj: bool = False, heads: int = 1) -> tuple[int, dict]:
    """(hidden size, layer options): with a projection the cell is H + 1 wide and
    projects to P = H, so that every entry's outputs keep the width H of its sizes;
    with heads the cell is heads·H wide, each head H (any H of the sizes divides);
    with both, the cell is heads·(H + 1) wide and projects to heads·H."""
    options = dict(heads=heads) if heads > 1 else {}
    if proj:
        return heads * (s.H + 1), dict(options, proj_size=heads * s.H)
    return heads * s.H, options


def _normal(key, shape, dtype, scale=1.0):
    return scale * jax.random.normal(key, shape, dtype)


# Every kind of noise at once, at rates high enough that each mask matters.
ALL_NOISE = _dropout.Dropout(input=0.3, recurrent=0.4, weight=0.3, zoneout=0.3,
                             zoneout_cell=0.2, between=0.3)
# The kinds that act outside the recurrence, which every cell takes (linear ones too).
OUTSIDE_NOISE = _dropout.Dropout(input=0.3, between=0.3)


def _tagger(num_layers=1, bidirectional=False, learn_h0=False, given_h0=False, lengths=False,
            mask=False, reset=False, reduction="sum", dropout=None, training=True, proj=False,
            heads=1):
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 6)
        H, options = _widths(s, proj, heads)
        p = tagger.init(k[0], cell, s.D, H, s.C, num_layers=num_layers, bidirectional=bidirectional,
                        learn_h0=learn_h0, dtype=dtype, **options)
        if learn_h0:  # nonzero learned states, so that their gradient paths are exercised
            p = p._replace(h0=jax.tree.map(lambda a: _normal(k[5], a.shape, dtype, 0.5), p.h0))
        batch = {"xs": _normal(k[1], (s.T, s.B, s.D), dtype),
                 "ys": jax.random.randint(k[2], (s.T, s.B), 0, s.C)}
        if given_h0:
            batch["h0"] = jax.tree.map(lambda a: _normal(k[3], a.shape, dtype, 0.5),
                                       layers.zero_states(p.rnn, (s.B,)))
        if lengths:
            batch["lengths"] = s.lengths
        if mask:
            batch["mask"] = jax.random.bernoulli(k[3], 0.7, (s.T, s.B))
        if reset:
            batch["reset"] = jax.random.bernoulli(k[4], 0.3, (s.T, s.B))
        if dropout is not None and training:
            batch["key"] = k[5]  # the same masks for both backwards
        return p, batch

    def loss(p, batch, backward):
        b = dict(batch)
        regularise = {} if dropout is None else dict(dropout=dropout, training=training)
        return tagger.loss(p, b.pop("xs"), b.pop("ys"), b.pop("h0", None), reduction=reduction,
                           backward=backward, **regularise, **b)
    return build, loss


def _noise(dropout, key, batch):
    """Adds the masks' key to a batch; returns the regularisation keywords of the loss."""
    if dropout is None:
        return batch
    return {**batch, "key": jax.random.fold_in(key, 99)}  # the same masks for both backwards


def _regularise(dropout, batch):
    return {} if dropout is None else dict(dropout=dropout, key=batch["key"], training=True)


def _classifier(num_layers=1, bidirectional=False, learn_h0=False, dropout=None, proj=False,
                heads=1):
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 4)
        H, options = _widths(s, proj, heads)
        p = classifier.init(k[0], cell, s.D, H, s.C, num_layers=num_layers,
                            bidirectional=bidirectional, learn_h0=learn_h0, dtype=dtype,
                            **options)
        if learn_h0:
            p = p._replace(h0=jax.tree.map(lambda a: _normal(k[3], a.shape, dtype, 0.5), p.h0))
        return p, _noise(dropout, key, {"xs": _normal(k[1], (s.T, s.B, s.D), dtype),
                                        "ys": jax.random.randint(k[2], (s.B,), 0, s.C),
                                        "lengths": s.lengths})

    def loss(p, batch, backward):
        return classifier.loss(p, batch["xs"], batch["ys"], lengths=batch["lengths"],
                               backward=backward, **_regularise(dropout, batch))
    return build, loss


def _regressor():
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 3)
        p = classifier.init(k[0], cell, s.D, s.H, 2, dtype=dtype)
        return p, {"xs": _normal(k[1], (s.T, s.B, s.D), dtype), "lengths": s.lengths,
                   "targets": _normal(k[2], (s.B, 2), dtype)}

    def loss(p, batch, backward):
        return classifier.regression_loss(p, batch["xs"], batch["targets"],
                                          lengths=batch["lengths"], reduction="mean",
                                          backward=backward)
    return build, loss


def _generator(num_layers=1, dropout=None, proj=False, heads=1):
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 3)
        H, options = _widths(s, proj, heads)
        p = generator.init(k[0], cell, s.D, H, s.C, num_layers=num_layers, dtype=dtype,
                           **options)
        return p, _noise(dropout, key, {"context": _normal(k[1], (s.B, s.D), dtype),
                                        "ys": jax.random.randint(k[2], (s.T, s.B), 0, s.C),
                                        "lengths": s.lengths})

    def loss(p, batch, backward):
        return generator.loss(p, batch["context"], batch["ys"], lengths=batch["lengths"],
                              reduction="mean", backward=backward,
                              **_regularise(dropout, batch))
    return build, loss


def _seq2seq(num_layers=1, bidirectional_encoder=False, dropout=None, proj=False, heads=1):
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 3)
        H, options = _widths(s, proj, heads)
        p = seq2seq.init(k[0], cell, s.D, H, s.C, num_layers=num_layers,
                         bidirectional_encoder=bidirectional_encoder, dtype=dtype, **options)
        return p, _noise(dropout, key, {
            "xs": _normal(k[1], (s.T, s.B, s.D), dtype), "x_lengths": s.lengths,
            "ys": jax.random.randint(k[2], (s.T + 2, s.B), 0, s.C),   # T_y ≠ T_x
            "y_lengths": s.y_lengths})

    def loss(p, batch, backward):
        return seq2seq.loss(p, batch["xs"], batch["ys"], x_lengths=batch["x_lengths"],
                            y_lengths=batch["y_lengths"], backward=backward,
                            **_regularise(dropout, batch))
    return build, loss


def _single_layer(reverse=False, driver=None, proj=False, heads=1, **options):
    """One layer through jrnn.layers.run_layer, with a loss on outputs and final state."""
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 4)
        H, widths = _widths(s, proj, heads)
        linear = cells.get(cell).driver == "linear"  # no recurrent product, no b_r
        layer = layers.init_layer(k[0], cell, s.D, H, recurrent_bias=not linear, dtype=dtype,
                                  **widths)
        h0 = jax.tree.map(lambda a: _normal(k[2], a.shape, dtype, 0.5),
                          layers.zero_states(((layer,),), (s.B,))[0][0])
        batch = {"xs": _normal(k[1], (s.T, s.B, s.D), dtype), "h0": h0}
        if options.get("lengths"):
            batch["lengths"] = s.lengths
        if options.get("reset"):
            batch["reset"] = jax.random.bernoulli(k[3], 0.3, (s.T, s.B))
        if options.get("noise"):  # fixed masks, differentiated like any input
            batch["recurrent_mask"] = jax.random.bernoulli(
                k[3], 0.6, (s.B, layer.output_size)).astype(dtype) / 0.6
        if options.get("noise"):  # zoneout: h's mask as wide as h (P with a projection), c's H
            widths = [layer.output_size] + [layer.hidden_size] * (len(jax.tree.leaves(h0)) - 1)
            batch["zoneout"] = tuple(
                jax.random.bernoulli(kz, 0.3, (s.T, s.B, width)).astype(dtype)
                for kz, width in zip(jax.random.split(k[2], len(widths)), widths))
        return layer, batch

    def loss(layer, batch, backward):
        b = dict(batch)
        b.update(driver or {})  # the linear driver's scan mode and adjoint
        hs, final = layers.run_layer(layer, b.pop("xs"), b.pop("h0"), reverse=reverse,
                                     backward=backward, **b)
        weights = jnp.arange(1, hs.shape[-1] + 1, dtype=hs.dtype).reshape(1, 1, -1)
        return jnp.sum(jnp.sin(hs) * weights) + sum(jnp.sum(s ** 3) for s in
                                                     jax.tree.leaves(final))
    return build, loss


def _tbptt(chunk=2, dropout=None, proj=False, num_heads=1):
    """Truncated BPTT: chunk gradients accumulated, no gradient across boundaries; with
    ``dropout``, chunk i draws its masks from fold_in(key, i)."""
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 3)
        H, options = _widths(s, proj, num_heads)
        p = tagger.init(k[0], cell, s.D, H, s.C, dtype=dtype, **options)
        return p, _noise(dropout, key, {"xs": _normal(k[1], (s.T, s.B, s.D), dtype),
                                        "ys": jax.random.randint(k[2], (s.T, s.B), 0, s.C)})

    def loss(p, batch, backward):
        def loss_and_state(p, xs, ys, h0, key=None):
            regularise = {} if dropout is None else dict(dropout=dropout, key=key,
                                                         training=True)
            outputs, finals = tagger.hidden(p, xs, ((h0,),), backward=backward, **regularise)
            J = heads.softmax_nll(p.head.V, p.head.c, outputs, ys, backward=backward)
            return J, finals[0][0]
        h0 = layers.zero_states(p.rnn, batch["xs"].shape[1:2])[0][0]
        # Differentiable through params: the helper's value is a sum of chunk
        # losses, and its gradient is checked against jax.grad of that sum.
        return train.tbptt_value_and_grad(loss_and_state, p, batch["xs"], batch["ys"],
                                          h0, chunk, key=batch.get("key"))
    return build, loss


def _remat_segments(segment=2, dropout=None, proj=False, heads=1):
    """Memory-bounded BPTT: the manual side recomputes segments of 2 steps (with a
    shorter last one where T is odd); the reference is autodiff of the whole sequence.
    With ``dropout``, segment s draws its masks from fold_in(key, s), and the reference
    is autodiff of that forward: the segments run one after the other, state carried."""
    def build(key, cell, dtype, s):
        k = jax.random.split(key, 4)
        H, options = _widths(s, proj, heads)
        p = tagger.init(k[0], cell, s.D, H, s.C, num_layers=2, dtype=dtype, **options)
        h0 = jax.tree.map(lambda a: _normal(k[3], a.shape, dtype, 0.5),
                          layers.zero_states(p.rnn, (s.B,)))
        return p, _noise(dropout, key, {"xs": _normal(k[1], (s.T, s.B, s.D), dtype),
                                        "ys": jax.random.randint(k[2], (s.T, s.B), 0, s.C),
                                        "h0": h0})

    def loss(p, batch, backward):
        fn = functools.partial(tagger.loss_and_state, backward=backward)
        xs, ys, h0 = batch["xs"], batch["ys"], batch["h0"]
        if dropout is None:
            if backward == "manual":
                fn = remat.segmented(fn, segment)
            J, finals = fn(p, xs, ys, h0)
        else:
            fn = functools.partial(fn, dropout=dropout, training=True)
            if backward == "manual":
                J, finals = remat.segmented(fn, segment)(p, xs, ys, h0, key=batch["key"])
            else:
                J, finals = 0.0, h0
                for i, start in enumerate(range(0, xs.shape[0], segment)):
                    J_i, finals = fn(p, xs[start:start + segment], ys[start:start + segment],
                                     finals, key=jax.random.fold_in(batch["key"], i))
                    J = J + J_i
        return J + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(finals))
    return build, loss


def _random_cell_params(build):
    """The cells' own parameters (LayerNorm gains and biases) drawn at random instead of
    their initial 1 and 0, so that a backward that dropped a gain would show."""
    def randomise(key, x):
        if not (isinstance(x, layers.Layer) and x.cell_params is not None):
            return x
        leaves, tree = jax.tree.flatten(x.cell_params)
        keys = jax.random.split(jax.random.fold_in(key, x.W.size), len(leaves))
        leaves = [l + _normal(k, l.shape, l.dtype, 0.3) for k, l in zip(keys, leaves)]
        return dataclasses.replace(x, cell_params=jax.tree.unflatten(tree, leaves))

    def wrapped(key, cell, dtype, s):
        params, batch = build(key, cell, dtype, s)
        k = jax.random.fold_in(key, 7)
        return jax.tree.map(lambda x: randomise(k, x), params,
                            is_leaf=lambda x: isinstance(x, layers.Layer)), batch
    return wrapped


def _arch_entry(name, build, loss, needs=()) -> Arch:
    return Arch(name, _random_cell_params(build), loss, needs)


def _recurrent(name, build, loss) -> Arch:
    """An entry with noise that acts on the recurrent matrix or inside the recurrence
    (recurrent dropout, DropConnect, zoneout) or with heads: for the classic driver's cells."""
    return _arch_entry(name, build, loss, needs=("recurrence",))


def _projected(name, entry) -> Arch:
    """An entry built with proj_size (LSTMP): for the cells that take a projection."""
    return _arch_entry(name, *entry, needs=("projection",))


ARCHITECTURES = {a.name: a for a in [
    _arch_entry("layer", *_single_layer()),
    _arch_entry("layer-reverse", *_single_layer(reverse=True)),
    _arch_entry("layer-lengths", *_single_layer(lengths=True)),
    _arch_entry("layer-reverse-lengths-reset", *_single_layer(reverse=True, lengths=True, reset=True)),
    _arch_entry("tagger", *_tagger()),
    _arch_entry("tagger-lengths-mean", *_tagger(lengths=True, reduction="mean")),
    _arch_entry("tagger-mask", *_tagger(mask=True)),
    _arch_entry("tagger-reset", *_tagger(reset=True)),
    _arch_entry("tagger-learned-h0", *_tagger(learn_h0=True)),
    _arch_entry("tagger-given-h0", *_tagger(given_h0=True)),
    _arch_entry("deep", *_tagger(num_layers=3, lengths=True)),
    _arch_entry("bidirectional", *_tagger(bidirectional=True, lengths=True)),
    _arch_entry("deep-bidirectional", *_tagger(num_layers=2, bidirectional=True, lengths=True,
                                        learn_h0=True, reset=True)),
    _arch_entry("many-to-one", *_classifier()),
    _arch_entry("many-to-one-deep-bidirectional", *_classifier(num_layers=2, bidirectional=True,
                                                        learn_h0=True)),
    _arch_entry("many-to-one-regression", *_regressor()),
    _arch_entry("one-to-many", *_generator()),
    _arch_entry("one-to-many-deep", *_generator(num_layers=2)),
    _arch_entry("encoder-decoder", *_seq2seq()),
    _arch_entry("encoder-decoder-deep-bidirectional", *_seq2seq(num_layers=2,
                                                         bidirectional_encoder=True)),
    _arch_entry("memory-bounded-bptt", *_remat_segments()),
    _recurrent("layer-recurrent-dropout-zoneout", *_single_layer(lengths=True, noise=True)),
    _recurrent("layer-reverse-recurrent-dropout-zoneout-reset",
         *_single_layer(reverse=True, lengths=True, reset=True, noise=True)),
    _recurrent("tagger-dropout", *_tagger(lengths=True, dropout=ALL_NOISE)),
    _recurrent("deep-bidirectional-dropout", *_tagger(num_layers=2, bidirectional=True, lengths=True,
                                                dropout=ALL_NOISE)),
    _recurrent("deep-dropout-evaluation", *_tagger(num_layers=2, lengths=True, dropout=ALL_NOISE,
                                             training=False)),
    _recurrent("many-to-one-deep-bidirectional-dropout",
                *_classifier(num_layers=2, bidirectional=True, dropout=ALL_NOISE)),
    _recurrent("one-to-many-deep-dropout", *_generator(num_layers=2, dropout=ALL_NOISE)),
    _recurrent("encoder-decoder-deep-bidirectional-dropout",
                *_seq2seq(num_layers=2, bidirectional_encoder=True, dropout=ALL_NOISE)),
    _recurrent("memory-bounded-bptt-dropout", *_remat_segments(dropout=ALL_NOISE)),
    _arch_entry("deep-bidirectional-input-between-dropout",
                *_tagger(num_layers=2, bidirectional=True, lengths=True, dropout=OUTSIDE_NOISE)),
    _projected("layer-projection", _single_layer(proj=True, lengths=True)),
    _projected("layer-reverse-projection-recurrent-dropout-zoneout-reset",
               _single_layer(reverse=True, proj=True, lengths=True, reset=True, noise=True)),
    _projected("tagger-mask-projection", _tagger(mask=True, proj=True)),
    _projected("deep-bidirectional-projection",
               _tagger(num_layers=2, bidirectional=True, lengths=True, learn_h0=True, reset=True,
                       proj=True)),
    _projected("deep-bidirectional-dropout-projection",
               _tagger(num_layers=2, bidirectional=True, lengths=True, dropout=ALL_NOISE,
                       proj=True)),
    _projected("deep-dropout-evaluation-projection",
               _tagger(num_layers=2, lengths=True, dropout=ALL_NOISE, training=False, proj=True)),
    _projected("many-to-one-deep-bidirectional-projection",
               _classifier(num_layers=2, bidirectional=True, learn_h0=True, proj=True)),
    _projected("one-to-many-deep-projection", _generator(num_layers=2, proj=True)),
    _projected("encoder-decoder-deep-bidirectional-projection",
               _seq2seq(num_layers=2, bidirectional_encoder=True, proj=True)),
    _projected("memory-bounded-bptt-projection", _remat_segments(proj=True)),
    _recurrent("layer-heads", *_single_layer(heads=2, lengths=True)),
    _recurrent("layer-reverse-heads-recurrent-dropout-zoneout-reset",
                *_single_layer(reverse=True, heads=2, lengths=True, reset=True, noise=True)),
    _recurrent("deep-bidirectional-heads",
                *_tagger(num_layers=2, bidirectional=True, lengths=True, learn_h0=True, reset=True,
                         heads=2)),
    _recurrent("deep-bidirectional-dropout-heads",
                *_tagger(num_layers=2, bidirectional=True, lengths=True, dropout=ALL_NOISE,
                         heads=2)),
    _recurrent("encoder-decoder-deep-bidirectional-heads",
                *_seq2seq(num_layers=2, bidirectional_encoder=True, heads=2)),
    _recurrent("memory-bounded-bptt-heads", *_remat_segments(heads=2)),
    _projected("layer-heads-projection", _single_layer(heads=2, proj=True, lengths=True)),
    _projected("layer-reverse-heads-projection-recurrent-dropout-zoneout-reset",
               _single_layer(reverse=True, heads=2, proj=True, lengths=True, reset=True,
                             noise=True)),
    _projected("deep-bidirectional-dropout-heads-projection",
               _tagger(num_layers=2, bidirectional=True, lengths=True, dropout=ALL_NOISE,
                       heads=2, proj=True)),
]}
TRUNCATED_BPTT = _arch_entry("truncated-bptt", *_tbptt())
TRUNCATED_BPTT_DROPOUT = _recurrent("truncated-bptt-dropout", *_tbptt(dropout=ALL_NOISE))
TRUNCATED_BPTT_INPUT_DROPOUT = _arch_entry("truncated-bptt-input-dropout",
                                           *_tbptt(dropout=_dropout.Dropout(input=0.3)))
TRUNCATED_BPTT_PROJECTION = _projected("truncated-bptt-projection", _tbptt(proj=True))
TRUNCATED_BPTT_HEADS = _recurrent("truncated-bptt-heads", *_tbptt(num_heads=2))
# Entries whose loss is already (Σ chunk losses, Σ chunk gradients, final state).
TRUNCATED = {a.name: a for a in (TRUNCATED_BPTT, TRUNCATED_BPTT_DROPOUT,
                                 TRUNCATED_BPTT_INPUT_DROPOUT,
                                 TRUNCATED_BPTT_PROJECTION, TRUNCATED_BPTT_HEADS)}

# The linear driver's scan modes and their backwards (every backward after the parallel
# forward; the reverse loop and the blocked scan after the sequential one), for the linear
# cells (jrnn.linear); every other entry runs them in the platform's default mode.
for _scheme, _driver in (("sequential", {"mode": "sequential", "adjoint": "sequential"}),
                         ("sequential-blocked", {"mode": "sequential", "adjoint": "blocked"}),
                         *((f"parallel-{_adjoint}", {"mode": "parallel", "adjoint": _adjoint})
                           for _adjoint in ("blocked", "associative", "sequential"))):
    for _name, _options in (("layer", {}), ("layer-reverse-lengths", dict(reverse=True,
                                                                          lengths=True))):
        ARCHITECTURES[f"{_name}-{_scheme}"] = _arch_entry(
            f"{_name}-{_scheme}", *_single_layer(driver=_driver, **_options), needs=("linear",))

def applies(arch: str, cell: str) -> bool:
    """Whether the table's entry ``arch`` runs cell ``cell``: the cell has every
    capability the entry needs (:func:`capabilities`)."""
    return _arch(arch).accepts(cell)


def linear_cells() -> list[str]:
    """The linear cells that run in layers (the LRU has its own readout: jrnn.lru)."""
    return [name for name in cells.layer_names() if cells.get(name).driver == "linear"]


def pairs(names=None) -> list[tuple[str, str]]:
    """Every (entry, cell) pair the table runs: each entry with each cell it applies to."""
    names = list(ARCHITECTURES) + list(TRUNCATED) if names is None else names
    return [(a, c) for a in names for c in cells.layer_names() if applies(a, c)]


def split(batch):
    """Floating entries are differentiated; the rest (labels, lengths, flags) are not."""
    is_float = lambda v: all(jnp.issubdtype(l.dtype, jnp.floating) for l in jax.tree.leaves(v))
    return ({k: v for k, v in batch.items() if is_float(v)},
            {k: v for k, v in batch.items() if not is_float(v)})


def _arch(name: str) -> Arch:
    if name in TRUNCATED:
        return TRUNCATED[name]
    if name not in ARCHITECTURES:
        raise ValueError(f"arch: expected one of {sorted(ARCHITECTURES) + sorted(TRUNCATED)}"
                         f", got {name!r}")
    return ARCHITECTURES[name]


@functools.lru_cache(maxsize=None)
def both_value_and_grads(name: str):
    """One jitted program computing (value, gradients) by both backwards."""
    loss = _arch(name).loss

    def both(p, floats, others):
        return tuple(jax.value_and_grad(lambda p, f: loss(p, {**f, **others}, backward),
                                        argnums=(0, 1))(p, floats)
                     for backward in ("manual", "autodiff"))
    return jax.jit(both)


def relative_error(actual, expected) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64 (0 when both are zero)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-300))


def check(arch: str, cell: str, sizes: Sizes = Sizes(), dtype=jnp.float64,
          seed: int = 0) -> dict[str, float]:
    """Relative errors of the hand-written value and gradients against autodiff's.

    Returns ``{"loss": e, "params.rnn[0][0].W": e, ..., "batch['xs']": e}``:
    one entry for the loss and one per differentiated leaf (parameters and
    floating inputs). float64 needs ``jax_enable_x64``.
    """
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype: float64 needs jax.config.update('jax_enable_x64', True)")
    entry = _arch(arch)
    if not applies(arch, cell):
        raise ValueError(f"arch: entry {arch!r} does not run cell {cell!r} (it runs "
                         f"{', '.join(c for c in cells.layer_names() if applies(arch, c))})")
    params, batch = entry.build(jax.random.key(seed), cell, dtype, sizes)
    if arch in TRUNCATED:  # its loss is already (Σ loss, Σ gradients, final state)
        run = jax.jit(entry.loss, static_argnums=2)
        (J_m, g_m, h_m), (J_a, g_a, h_a) = run(params, batch, "manual"), run(params, batch,
                                                                              "autodiff")
        errors = {"loss": relative_error(J_m, J_a), "final state": relative_error(h_m, h_a)}
        for (path, leaf_m), leaf_a in zip(jax.tree_util.tree_leaves_with_path(g_m),
                                          jax.tree.leaves(g_a), strict=True):
            errors["params" + jax.tree_util.keystr(path)] = relative_error(leaf_m, leaf_a)
        return errors
    floats, others = split(batch)
    (J_m, g_m), (J_a, g_a) = both_value_and_grads(arch)(params, floats, others)
    errors = {"loss": relative_error(J_m, J_a)}
    names = ("params", "batch")
    for i, (gm, ga) in enumerate(zip(g_m, g_a)):
        for (path, leaf_m), leaf_a in zip(jax.tree_util.tree_leaves_with_path(gm),
                                          jax.tree.leaves(ga), strict=True):
            errors[names[i] + jax.tree_util.keystr(path)] = relative_error(leaf_m, leaf_a)
    return errors
