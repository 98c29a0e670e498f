"""The bad-input table: every public entry point × each class of bad input.

One source for two things: ``tests/test_bad_inputs.py`` runs every cell of
the table, and :func:`render` writes it as ``docs/bad_inputs.md`` (a test
fails when that file differs from what :func:`render` gives, so the published
table cannot go stale). Regenerate it with::

    python tests/bad_input_table.py > docs/bad_inputs.md

Each cell expects either an error (its type, and a message that names the
argument, the expected and the actual value) or an accepted input with a
correct result, said in words and checked by a function.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import layers, remat
from jrnn.models import classifier, generator, seq2seq, tagger

T, B, D, H, C = 4, 3, 2, 3, 3
F32 = jnp.float32
XS = jax.random.normal(jax.random.key(1), (T, B, D), F32)
YS = jax.random.randint(jax.random.key(2), (T, B), 0, C)
LENGTHS = jnp.array([4, 2, 1])
PADDED = np.arange(T)[:, None] >= np.asarray(LENGTHS)[None, :]
KEY = jax.random.key(0)


@dataclasses.dataclass(frozen=True)
class Error:
    type: type
    match: str   # a regex the message must match (re.search)
    text: str    # the expectation in words, for the docs

    def describe(self) -> str:
        return f"{self.type.__name__}: {self.text}"


@dataclasses.dataclass(frozen=True)
class Accepted:
    text: str
    check: Callable  # (result, reference) -> None, raises AssertionError

    def describe(self) -> str:
        return f"accepted: {self.text}"


def _finite_and_equal(result, reference):
    for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(reference), strict=True):
        assert np.all(np.isfinite(a)), "non-finite"
        np.testing.assert_array_equal(a, b)


def _nan(result, reference):
    assert np.isnan(float(result[0])), "loss not NaN"


# The classes of bad input, in the order of the table's columns:
# name -> (description, generic expectation).
CLASSES = {
    "rank": ("xs of rank 4", Error(ValueError, r"xs: expected shape .*got \(4, 3, 2, 1\)",
                                   "names xs, the expected shape and (4, 3, 2, 1)")),
    "features": ("xs with D + 1 features", Error(
        ValueError, r"xs: expected shape \(\.\.\., 2\).*got \(4, 3, 3\)",
        "names xs, the input size 2 and (4, 3, 3)")),
    "batch": ("labels of another batch size", Error(
        ValueError, r"ys: expected shape \(4, 3\).*got \(4, 4\)",
        "names ys, (4, 3) and (4, 4)")),
    "integer": ("integer xs", Error(TypeError, r"xs: expected a floating dtype, got int32",
                                    "names xs, a floating dtype and int32")),
    "complex": ("complex xs", Error(TypeError, r"xs: expected a floating dtype, got complex64",
                                    "names xs, a floating dtype and complex64")),
    "T0": ("T = 0", Error(ValueError, r"xs: expected shape \(T, \.\.\.\) with T >= 1, got "
                                      r"\(0, 3, 2\)", "names xs, T >= 1 and (0, 3, 2)")),
    "B0": ("B = 0", Error(ValueError, r"xs: expected shape \(T, B, \.\.\.\) with B >= 1, got "
                                      r"\(4, 0, 2\)", "names xs, B >= 1 and (4, 0, 2)")),
    "lengths>T": ("lengths above T", Error(
        ValueError, r"lengths: expected values in \[0, 4\] \(T = 4 steps\), got values in "
                    r"\[1, 5\]", "names lengths, [0, 4] and the values [1, 5]")),
    "lengths<0": ("lengths below 0", Error(
        ValueError, r"lengths: expected values in \[0, 4\].*got values in \[-1, 4\]",
        "names lengths, [0, 4] and the values [-1, 4]")),
    "lengths float": ("float lengths", Error(
        TypeError, r"lengths: expected an integer dtype \(one length per sequence\), got float32",
        "names lengths, an integer dtype and float32")),
    "lengths shape": ("lengths of shape (B + 1,)", Error(
        ValueError, r"lengths: expected shape \(3,\).*got \(4,\)",
        "names lengths, (3,) and (4,)")),
    "lengths list": ("lengths as a Python list", Accepted(
        "the same result as the array", _finite_and_equal)),
    "lengths torch": ("lengths as a torch tensor", Error(
        TypeError, r"lengths: expected a JAX or numpy array \(or a list\), got torch.Tensor",
        "names lengths, the accepted kinds and torch.Tensor")),
    "NaN valid": ("NaN in a valid step", Accepted(
        "the loss is NaN (training's non-finite check then skips the step)", _nan)),
    "NaN padded": ("NaN/Inf in padded steps", Accepted(
        "finite: the same loss and gradients as zeros there", _finite_and_equal)),
}
NA = None  # not applicable: the entry point has no such argument


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    params: Callable[[], object]
    loss: Callable  # (params, **inputs) -> scalar
    inputs: Callable[[str], Optional[dict]]  # class name -> inputs (None: not applicable)
    reference: Callable[[str], Optional[dict]] = lambda cls: None  # inputs of the right result
    expect: dict = dataclasses.field(default_factory=dict)  # overrides of CLASSES

    def expectation(self, cls: str):
        if self.inputs(cls) is None:
            return NA
        return self.expect.get(cls, CLASSES[cls][1])


def _torch_tensor(values):
    import torch
    return torch.tensor(values)


def _sequence_inputs(cls: str, lengths_name="lengths", with_ys=True, with_lengths=True):
    """The inputs of an entry that reads xs (T, B, D), ys (T, B) and lengths (B,)."""
    xs, ys, extra = XS, YS, {}
    if cls == "rank":
        xs = XS[..., None]
    elif cls == "features":
        xs = jnp.concatenate([XS, XS[..., :1]], -1)
    elif cls == "batch":
        if not with_ys:
            return None
        ys = jnp.concatenate([YS, YS[:, :1]], 1)
    elif cls == "integer":
        xs = XS.astype(jnp.int32)
    elif cls == "complex":
        xs = XS.astype(jnp.complex64)
    elif cls == "T0":
        xs, ys = XS[:0], YS[:0]
    elif cls == "B0":
        xs, ys = XS[:, :0], YS[:, :0]
    elif cls == "NaN valid":
        xs = XS.at[0, 0, 0].set(jnp.nan)
    elif cls.startswith("lengths") or cls == "NaN padded":
        if not with_lengths:
            return None
        lengths = {"lengths>T": jnp.array([5, 2, 1]), "lengths<0": jnp.array([4, -1, 1]),
                   "lengths float": LENGTHS.astype(F32), "lengths shape": jnp.array([4, 2, 1, 1]),
                   "lengths list": [4, 2, 1], "NaN padded": LENGTHS}.get(cls)
        if cls == "lengths torch":
            lengths = _torch_tensor([4, 2, 1])
        if cls == "NaN padded":
            xs = jnp.where(PADDED[..., None], jnp.nan, XS).at[3, 2, 1].set(jnp.inf)
        extra = {lengths_name: lengths}
    inputs = {"xs": xs, **extra}
    return {**inputs, "ys": ys} if with_ys else inputs


def _sequence_reference(cls, lengths_name="lengths", with_ys=True):
    if cls not in ("lengths list", "NaN padded"):
        return None
    inputs = {"xs": jnp.where(PADDED[..., None], 0, XS), lengths_name: LENGTHS}
    if cls == "lengths list":
        inputs["xs"] = XS
    return {**inputs, "ys": YS} if with_ys else inputs


def _layer_entry(name, params, run):
    return Entry(name, params, lambda p, xs, lengths=None: jnp.sum(run(p, xs, lengths)),
                 functools.partial(_sequence_inputs, with_ys=False),
                 functools.partial(_sequence_reference, with_ys=False))


def _generator_inputs(cls: str):
    """generator.loss reads a context (B, D) in place of xs, and ys (T, B) with lengths."""
    if cls == "NaN padded":
        return None  # no padded float input: the inputs after t = 0 are the labels
    inputs = _sequence_inputs(cls)
    context = XS[0]
    if cls in ("rank", "features", "integer", "complex", "NaN valid"):
        context = inputs.pop("xs")[0]
    else:
        inputs.pop("xs")
    if cls == "B0":
        context = XS[0, :0]
    return {"context": context, **inputs}


def _generator_reference(cls: str):
    reference = _sequence_reference(cls)
    return None if reference is None else {"context": XS[0], "ys": YS, "lengths": LENGTHS}


def _hs(out):
    return out[0]


ENTRIES = [
    _layer_entry("jrnn.rnn", lambda: layers.init_layer(KEY, "lstm", D, H),
                 lambda p, xs, n: _hs(jrnn.rnn("lstm", p.U, p.W, p.b, xs, lengths=n))),
    _layer_entry("layers.run_layer", lambda: layers.init_layer(KEY, "gru", D, H),
                 lambda p, xs, n: _hs(layers.run_layer(p, xs, lengths=n))),
    _layer_entry("linear.linear_rnn", lambda: layers.init_layer(KEY, "mingru", D, H),
                 lambda p, xs, n: _hs(jrnn.linear.linear_rnn("mingru", p.U, p.b, xs, lengths=n,
                                                             mode="parallel"))),
    _layer_entry("lru.apply", lambda: jrnn.lru.init(KEY, D, H),
                 lambda p, xs, n: _hs(jrnn.lru.apply(p, xs, lengths=n))),
    _layer_entry("layers.run_stack",
                 lambda: layers.init_stack(KEY, "elman", D, H, num_layers=2, bidirectional=True),
                 lambda p, xs, n: _hs(layers.run_stack(p, xs, lengths=n))),
    Entry("elman.loss", lambda: jrnn.elman.init(KEY, D, H, C),
          lambda p, xs, ys: jrnn.elman.loss(p, xs, ys),
          functools.partial(_sequence_inputs, with_lengths=False)),
    Entry("tagger.loss", lambda: tagger.init(KEY, "lstm", D, H, C, bidirectional=True),
          lambda p, xs, ys, lengths=None: tagger.loss(p, xs, ys, lengths=lengths),
          _sequence_inputs, _sequence_reference),
    Entry("classifier.loss", lambda: classifier.init(KEY, "gru", D, H, C),
          lambda p, xs, ys, lengths=None: classifier.loss(p, xs, ys.sum(0) % C,
                                                          lengths=lengths),
          _sequence_inputs, _sequence_reference,
          expect={"batch": Error(ValueError, r"ys: expected shape \(3,\): one label per "
                                 r"sequence, got \(4,\)", "names ys, (3,) and (4,)")}),
    Entry("classifier.regression_loss", lambda: classifier.init(KEY, "elman", D, H, 2),
          lambda p, xs, ys, lengths=None: classifier.regression_loss(
              p, xs, jnp.ones((ys.shape[1], 2), F32), lengths=lengths),
          _sequence_inputs, _sequence_reference,
          expect={"batch": Error(ValueError, r"targets: expected shape \(3, 2\), got \(4, 2\)",
                                 "names targets, (3, 2) and (4, 2)")}),
    Entry("generator.loss", lambda: generator.init(KEY, "gru", D, H, C),
          lambda p, context, ys, lengths=None: generator.loss(p, context, ys, lengths=lengths),
          _generator_inputs, _generator_reference,
          expect={
              "rank": Error(ValueError, r"context: expected shape \(B, 2\), got \(3, 2, 1\)",
                            "names context (the xs of this model), (B, 2) and (3, 2, 1)"),
              "features": Error(ValueError, r"context: expected shape \(B, 2\), got \(3, 3\)",
                                "names context, (B, 2) and (3, 3)"),
              "integer": Error(TypeError, r"context: expected a floating dtype, got int32",
                               "names context, a floating dtype and int32"),
              "complex": Error(TypeError, r"context: expected a floating dtype, got complex64",
                               "names context, a floating dtype and complex64"),
              "T0": Error(ValueError, r"ys: expected shape \(T, B\) with T >= 1, got \(0, 3\)",
                          "names ys (its length is T), T >= 1 and (0, 3)"),
              "B0": Error(ValueError, r"context: expected shape \(B, 2\) with B >= 1, got "
                                      r"\(0, 2\)", "names context, B >= 1 and (0, 2)")}),
    Entry("seq2seq.loss", lambda: seq2seq.init(KEY, "lstm", D, H, C),
          lambda p, xs, ys, x_lengths=None: seq2seq.loss(p, xs, ys, x_lengths=x_lengths),
          functools.partial(_sequence_inputs, lengths_name="x_lengths"),
          functools.partial(_sequence_reference, lengths_name="x_lengths"),
          expect={
              "rank": Error(ValueError, r"xs: expected shape \(T_x, B, D\), got \(4, 3, 2, 1\)",
                            "names xs, (T_x, B, D) and (4, 3, 2, 1)"),
              "batch": Error(ValueError, r"ys: expected shape \(4, 3\), got \(4, 4\)",
                             "names ys, (T_y, B) = (4, 3) and (4, 4)"),
              "T0": Error(ValueError, r"ys: expected shape \(T_y, 3\) with T_y >= 1, got "
                                      r"\(0, 3\)", "names ys (the targets are checked "
                                                   "first), T_y >= 1 and (0, 3)"),
              "B0": Error(ValueError, r"expected shape \(T, B, \.\.\.\) with B >= 1",
                          "names the first input with B = 0, B >= 1 and its shape"),
              **{cls: dataclasses.replace(
                  CLASSES[cls][1], match=CLASSES[cls][1].match.replace("lengths", "x_lengths"),
                  text=CLASSES[cls][1].text.replace("lengths", "x_lengths"))
                 for cls in ("lengths>T", "lengths<0", "lengths float", "lengths shape",
                             "lengths torch")}}),
    Entry("remat.segmented(tagger.loss_and_state)",
          lambda: tagger.init(KEY, "gru", D, H, C),
          lambda p, xs, ys: remat.segmented(tagger.loss_and_state, 2)(p, xs, ys, None)[0],
          functools.partial(_sequence_inputs, with_lengths=False),
          expect={"T0": Error(ValueError, r"xs: expected shape \(T, \.\.\.\) with T >= 1, "
                                          r"got T = 0", "names xs, T >= 1 and T = 0")}),
]


# Keys: every function that takes a PRNG key.
KEYS = {
    "elman.init": lambda key: jrnn.elman.init(key, D, H, C),
    "layers.init_layer": lambda key: layers.init_layer(key, "gru", D, H),
    "layers.init_stack": lambda key: layers.init_stack(key, "lstm", D, H, num_layers=2),
    "lru.init": lambda key: jrnn.lru.init(key, D, H),
    "heads.init_head": lambda key: jrnn.heads.init_head(key, H, C),
    "tagger.init": lambda key: tagger.init(key, "lstm", D, H, C),
    "classifier.init": lambda key: classifier.init(key, "gru", D, H, C),
    "generator.init": lambda key: generator.init(key, "elman", D, H, C),
    "seq2seq.init": lambda key: seq2seq.init(key, "lstm", D, H, C),
    "generator.sample": lambda key: generator.sample(generator.init(jax.random.key(0), "gru",
                                                                    D, H, C), key,
                                                     jnp.ones((B, D), F32), 3),
    "tagger.sample": lambda key: tagger.sample(tagger.init(jax.random.key(0), "gru", C, H, C),
                                               key, jnp.array([0, 1]), 3),
}
KEY_CLASSES = {
    "legacy key": ("jax.random.PRNGKey(0)", Accepted(
        "the same numbers as jax.random.key(0)", _finite_and_equal)),
    "float key": ("a float array as the key", Error(
        TypeError, r"key: expected a PRNG key, jax.random.key\(seed\) or the legacy "
                   r"jax.random.PRNGKey\(seed\) \(uint32 of shape \(2,\)\), got an array of "
                   r"dtype float32 and shape \(2,\)", "names key, both accepted kinds, "
                                                       "float32 and (2,)")),
}
KEY_INPUTS = {"legacy key": lambda: jax.random.PRNGKey(0),
              "float key": lambda: jnp.zeros(2, F32)}


# Regularisation (jrnn.dropout): every entry point that takes dropout=, key=, training=.
CTX = jnp.ones((B, D), F32)
REGULARISED = {
    "layers.run_stack": lambda **r: layers.run_stack(
        layers.init_stack(KEY, "lstm", D, H, num_layers=2), XS, **r)[0],
    "tagger.loss": lambda **r: tagger.loss(tagger.init(KEY, "lstm", D, H, C), XS, YS, **r),
    "classifier.loss": lambda **r: classifier.loss(classifier.init(KEY, "gru", D, H, C), XS,
                                                   YS[0], **r),
    "generator.loss": lambda **r: generator.loss(generator.init(KEY, "elman", D, H, C), CTX,
                                                 YS, **r),
    "seq2seq.loss": lambda **r: seq2seq.loss(seq2seq.init(KEY, "gru", D, H, C), XS, YS, **r),
    "remat.segmented(tagger.loss_and_state)": lambda dropout, training, key=None:
        remat.segmented(functools.partial(tagger.loss_and_state, dropout=dropout,
                                          training=training), 2)(
            tagger.init(KEY, "gru", D, H, C), XS, YS, None, key=key)[0],
}
Dropout = jrnn.dropout.Dropout
# What an accepted regularisation input must give: evaluation with zoneout alone.
REGULARISATION_REFERENCE = dict(dropout=Dropout(zoneout=0.1), training=False)
REGULARISATION_CLASSES = {  # name -> (description, keywords, expectation)
    "p = 1": ("a probability of 1", dict(dropout=Dropout(recurrent=1.0), key=KEY,
                                          training=True),
              Error(ValueError, r"dropout.recurrent: expected a probability in \[0, 1\), "
                                r"got 1.0", "names dropout.recurrent, [0, 1) and 1.0")),
    "p < 0": ("a negative probability", dict(dropout=Dropout(zoneout=-0.1), key=KEY,
                                             training=True),
              Error(ValueError, r"dropout.zoneout: expected a probability in \[0, 1\), "
                                r"got -0.1", "names dropout.zoneout, [0, 1) and -0.1")),
    "no key": ("training=True without a key", dict(dropout=Dropout(input=0.2), training=True),
               Error(ValueError, r"key: training with dropout draws random masks and needs a "
                                 r"PRNG key", "names key, what needs it and training=False as "
                                              "the alternative")),
    "no key, evaluation": ("training=False without a key", dict(
        dropout=Dropout(input=0.2, zoneout=0.1), training=False), Accepted(
        "deterministic: the same result as zoneout alone (its expectation), the rest off",
        _finite_and_equal)),
    "a dict": ("a dict instead of a Dropout", dict(dropout={"input": 0.2}, key=KEY,
                                                   training=True),
               Error(TypeError, r"dropout: expected jrnn.dropout.Dropout, got dict",
                     "names dropout, jrnn.dropout.Dropout and dict")),
}
# The masks jrnn.rnn takes itself (a test passes fixed ones).
_LSTM = layers.init_layer(KEY, "lstm", D, H)
MASKS = {  # name -> (description, keywords of jrnn.rnn, expectation)
    "recurrent_mask shape": ("recurrent_mask (B, H + 1)", dict(
        recurrent_mask=jnp.ones((B, H + 1), F32)), Error(
        ValueError, r"recurrent_mask: expected shape \(3, 3\).*got \(3, 4\)",
        "names recurrent_mask, (B, H) = (3, 3) and (3, 4)")),
    "zoneout shape": ("zoneout masks (T − 1, B, H)", dict(
        zoneout=(jnp.ones((T - 1, B, H), F32),) * 2), Error(
        ValueError, r"zoneout\[0\]: expected shape \(4, 3, 3\).*got \(3, 3, 3\)",
        "names zoneout[0], (T, B, H) = (4, 3, 3) and (3, 3, 3)")),
    "zoneout entries": ("one zoneout mask for the LSTM's (h, c)", dict(
        zoneout=(jnp.ones((T, B, H), F32),)), Error(
        ValueError, r"zoneout: expected one entry per carry entry of cell 'lstm' \(2\), got 1",
        "names zoneout, the LSTM's 2 carry entries and 1")),
    "zoneout dtype": ("integer zoneout masks", dict(
        zoneout=(jnp.ones((T, B, H), jnp.int32),) * 2), Error(
        TypeError, r"zoneout\[0\]: expected a boolean mask \(True: keep\) or a floating one, "
                   r"got dtype int32", "names zoneout[0], boolean or floating, and int32")),
    "zoneout p = 1": ("zoneout probability 1 (evaluation)", dict(zoneout=(1.0, 0.1)), Error(
        ValueError, r"zoneout: expected probabilities in \[0, 1\), got 1.0",
        "names zoneout, [0, 1) and 1.0")),
    "mask dtype": ("a float64 recurrent_mask for float32 weights", dict(
        recurrent_mask=np.ones((B, H), np.float64)), Error(
        TypeError, r"recurrent_mask: expected dtype float32.*got float64",
        "names recurrent_mask, float32 and float64")),
}


def run_masks(keywords):
    return jrnn.rnn("lstm", _LSTM.U, _LSTM.W, _LSTM.b, XS, b_r=_LSTM.b_r, **keywords)[0]


# Options of the layers: (what is passed, the call, the expected error).
def _projected_layer():
    return layers.init_layer(KEY, "lstm", D, H, proj_size=2)


OPTIONS = {
    "proj_size = H": ("`layers.init_layer(..., \"lstm\", hidden_size=3, proj_size=3)`",
                      lambda: layers.init_layer(KEY, "lstm", D, H, proj_size=H), Error(
        ValueError, r"proj_size: expected 0 < proj_size < hidden_size = 3 .*got 3",
        "names proj_size, 0 < proj_size < hidden_size = 3 and 3")),
    "proj_size < 0": ("`layers.init_stack(..., \"lstm\", proj_size=-1)`",
                      lambda: layers.init_stack(KEY, "lstm", D, H, proj_size=-1), Error(
        ValueError, r"proj_size: expected 0 < proj_size < hidden_size = 3 .*got -1",
        "names proj_size, 0 < proj_size < hidden_size = 3 and -1")),
    "proj_size float": ("`layers.init_layer(..., proj_size=2.0)`",
                        lambda: layers.init_layer(KEY, "lstm", D, H, proj_size=2.0), Error(
        TypeError, r"proj_size: expected an int \(0 for no projection\), got float",
        "names proj_size, an int and float")),
    "proj_size GRU": ("`tagger.init(..., \"gru\", ..., proj_size=2)`",
                      lambda: tagger.init(KEY, "gru", D, H, C, proj_size=2), Error(
        ValueError, r"proj_size: a projection needs a cell .*\(layernorm_lstm, lstm\), got "
                    r"cell 'gru'", "names proj_size, the cells that take one and 'gru'")),
    "W_hr shape": ("`jrnn.rnn(\"lstm\", ..., W_hr=)` of shape (3, 3)",
                   lambda: jrnn.rnn("lstm", _projected_layer().U, _projected_layer().W,
                                    _projected_layer().b, XS, W_hr=jnp.zeros((H, H), F32)),
                   Error(ValueError, r"W_hr: expected shape \(P, H\) with 1 <= P < H.*got "
                                     r"\(3, 3\)", "names W_hr, (P, H) with P < H and (3, 3)")),
    "projection zoneout width": ("zoneout masks on a layer with a projection (P = 2), h's "
                                 "(4, 3, 3) as wide as c",
                                 lambda: layers.run_layer(_projected_layer(), XS, zoneout=(
                                     jnp.ones((T, B, H), F32), jnp.ones((T, B, H), F32))), Error(
        ValueError, r"zoneout\[0\]: expected shape \(4, 3, 2\).*h: P = 2.*got \(4, 3, 3\)",
        "names zoneout[0], (4, 3, 2) with h's width P and (4, 3, 3)")),
    "projection persistent": ("`kernel=\"persistent\"` on a layer with a projection",
                              lambda: layers.run_layer(_projected_layer(), XS,
                                                       kernel="persistent"), Error(
        ValueError, r"kernel='persistent' cannot run this layer: a projection W_hr",
        "names kernel='persistent' and the projection")),
    "linear recurrent dropout": (
        "`layers.run_stack` of a minGRU stack with `Dropout(recurrent=0.2)`",
        lambda: layers.run_stack(layers.init_stack(KEY, "mingru", D, H), XS,
                                 dropout=Dropout(recurrent=0.2), key=KEY, training=True),
        Error(ValueError, r"dropout.recurrent: the linear cell 'mingru' takes input and "
                          r"between-layer dropout only: .* has none .*got 0.2",
              "names dropout.recurrent, 'mingru', what it takes, why (no W) and 0.2")),
    "linear zoneout": (
        "`layers.run_stack` of a minLSTM stack with `Dropout(zoneout=0.1)`",
        lambda: layers.run_stack(layers.init_stack(KEY, "minlstm", D, H), XS,
                                 dropout=Dropout(zoneout=0.1), training=False),
        Error(ValueError, r"dropout.zoneout: the linear cell 'minlstm' takes input and "
                          r"between-layer dropout only: zoneout is not implemented by the "
                          r"linear driver .*got 0.1",
              "names dropout.zoneout, 'minlstm', what it takes, why and 0.1")),
    "heads not dividing H": ("`layers.init_stack(..., hidden_size=3, heads=2)`",
                             lambda: layers.init_stack(KEY, "lstm", D, H, heads=2), Error(
        ValueError, r"heads: expected a divisor of hidden_size = 3, got 2",
        "names heads, a divisor of hidden_size = 3 and 2")),
    "heads = 0": ("`layers.init_layer(..., heads=0)`",
                  lambda: layers.init_layer(KEY, "gru", D, H, heads=0), Error(
        ValueError, r"heads: expected an int >= 1 \(1: a dense W\), got 0",
        "names heads, an int >= 1 and 0")),
    "heads W shape": ("`jrnn.rnn(\"gru\", ..., heads=3)` with a dense W (9, 3)",
                      lambda: jrnn.rnn("gru", *(lambda l: (l.U, l.W, l.b))(
                          layers.init_layer(KEY, "gru", D, H)), XS, heads=3), Error(
        ValueError, r"W: expected shape \(3·H, H/heads\) = \(9, 1\) with heads=3.*got "
                    r"\(9, 3\)", "names W, (G·H, H/heads) = (9, 1) and (9, 3)")),
    "heads not dividing proj_size": ("`layers.init_layer(..., \"lstm\", hidden_size=3, heads=3, "
                                     "proj_size=2)`",
                                     lambda: layers.init_layer(KEY, "lstm", D, H, heads=3,
                                                               proj_size=2), Error(
        ValueError, r"heads: with a projection each head reads its own proj_size/heads units "
                    r"of h, so heads must divide proj_size = 2; got 3",
        "names heads, a divisor of proj_size = 2 and 3")),
    "heads projection W shape": ("`jrnn.rnn(\"lstm\", ..., W_hr=, heads=2)` on a layer with a "
                                 "projection (H = 3, P = 2)",
                                 lambda: jrnn.rnn("lstm", *(lambda l: (l.U, l.W, l.b))(
                                     _projected_layer()), XS, W_hr=_projected_layer().W_hr,
                                     heads=2), Error(
        ValueError, r"heads: with a projection each head maps its P/heads units of h to its "
                    r"H/heads units of every gate, so heads must divide both H = 3 and P = 2; "
                    r"got heads=2", "names heads, divisors of H = 3 and P = 2, and 2")),
}


def render() -> str:
    """The table as Markdown (docs/bad_inputs.md)."""
    lines = ["# What each entry point does with bad input", "",
             "Generated from `tests/bad_input_table.py` by "
             "`python tests/bad_input_table.py > docs/bad_inputs.md`; "
             "`tests/test_bad_inputs.py` runs every cell and fails when this file differs.",
             "",
             "Every error is raised while the call is traced (under `jax.jit` too), and its "
             "message names the argument, the expected and the actual value. Shapes below are "
             f"for T = {T}, B = {B}, D = {D}. Values that are traced under `jit` (lengths, "
             "labels) are checked there only through `jrnn.checked` (jax.experimental."
             "checkify); without it a length above T acts as T and one below 0 as 0. "
             "\"n/a\": the entry point has no such argument.", ""]
    for entry in ENTRIES:
        lines += [f"## `{entry.name}`", "", "| input | outcome |", "|---|---|"]
        for cls, (description, _) in CLASSES.items():
            outcome = entry.expectation(cls)
            lines.append(f"| {description} | {'n/a' if outcome is NA else outcome.describe()} |")
        lines.append("")
    lines += ["## PRNG keys", "", "| entry point | " + " | ".join(
        d for d, _ in KEY_CLASSES.values()) + " |", "|---" * (1 + len(KEY_CLASSES)) + "|"]
    for name in KEYS:
        lines.append(f"| `{name}` | " + " | ".join(e.describe() for _, e in
                                                   KEY_CLASSES.values()) + " |")
    lines += ["", "## Regularisation (`dropout=`, `key=`, `training=`)", "",
              "The same outcome at every entry point that takes them: " + ", ".join(
                  f"`{name}`" for name in REGULARISED) + ".", "",
              "| input | outcome |", "|---|---|"]
    for description, _, outcome in REGULARISATION_CLASSES.values():
        lines.append(f"| {description} | {outcome.describe()} |")
    lines += ["", "## Regularisation masks of `jrnn.rnn` (an LSTM layer)", "",
              "| input | outcome |", "|---|---|"]
    for description, _, outcome in MASKS.values():
        lines.append(f"| {description} | {outcome.describe()} |")
    lines += ["", "## Options of the layers", "", "| input | outcome |", "|---|---|"]
    for description, _, outcome in OPTIONS.values():
        lines.append(f"| {description} | {outcome.describe()} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
