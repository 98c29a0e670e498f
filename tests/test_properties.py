"""Property-based: hand-written gradients equal autodiff's (float64, 1e-10 relative)
for configurations that hypothesis draws.

Two properties:

* random cell × architecture × options: one layer (reverse, h0 given or not,
  lengths, mask, reset), a stack (deep, bidirectional, learned or given h0,
  lengths including 0, 1 and T in any order, mask, reset, sum or mean),
  memory-bounded BPTT (any segment, h0 given or None) and truncated BPTT (any
  chunk), × random small shapes B, T, D, H, C from 1 upwards; the reference
  is ``jax.grad`` of the same forward (``backward="autodiff"``; for
  memory-bounded BPTT, autodiff of the uncut loss);
* every entry of the descriptor table (jrnn.gradcheck) at random sizes.

Examples are drawn deterministically (``derandomize``). The number is a
hypothesis profile chosen by ``JRNN_HYPOTHESIS_PROFILE``: ``ci`` (default,
about a minute on a 2-core CPU) or ``thorough`` (ten times as many).
"""
import functools
import os

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the [test] extra")
from hypothesis import given, settings, strategies as st  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jrnn  # noqa: E402
from jrnn import layers, remat, train  # noqa: E402
from jrnn.gradcheck import Sizes, check, pairs  # noqa: E402
from jrnn.models import tagger  # noqa: E402
from helpers import TOL, rel_error  # noqa: E402

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True,
                          print_blob=True)
settings.register_profile("thorough", max_examples=200, deadline=None, derandomize=True,
                          print_blob=True)
PROFILE = os.environ.get("JRNN_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
F64 = jnp.float64
TABLE_EXAMPLES = {"ci": 8, "thorough": 80}[PROFILE]


@st.composite
def configurations(draw):
    """A cell, an architecture with its options, sizes and a seed."""
    arch = draw(st.sampled_from(["layer", "stack", "memory-bounded", "truncated"]))
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    c = dict(arch=arch, cell=draw(st.sampled_from(jrnn.cells.names())), T=T, B=B,
             D=draw(st.integers(1, 3)), H=draw(st.integers(1, 4)), C=draw(st.integers(1, 4)),
             seed=draw(st.integers(0, 2**16)))
    lengths = st.lists(st.integers(0, T), min_size=B, max_size=B)  # unsorted; 0, 1 and T
    if arch in ("layer", "stack"):
        c["lengths"] = draw(st.none() | lengths)
        c["mask"] = draw(st.booleans())
        c["reset"] = draw(st.booleans())
        c["h0"] = draw(st.sampled_from(["zeros", "given"] + (["learned"] if arch == "stack"
                                                              else [])))
    if arch == "layer":
        c["reverse"] = draw(st.booleans())
    if arch == "stack":
        c["num_layers"] = draw(st.integers(1, 2))
        c["bidirectional"] = draw(st.booleans())
        c["reduction"] = draw(st.sampled_from(["sum", "mean"]))
    if arch == "memory-bounded":
        c["segment"] = draw(st.integers(1, T))
        c["h0"] = draw(st.sampled_from(["none", "given"]))
        c["reduction"] = draw(st.sampled_from(["sum", "mean"]))
    if arch == "truncated":
        c["chunk"] = draw(st.integers(1, T))
    return c


def build(c):
    """Parameters, the differentiated inputs, and a loss(params, floats, backward)."""
    k = jax.random.split(jax.random.key(c["seed"]), 8)
    T, B, D, H, C = c["T"], c["B"], c["D"], c["H"], c["C"]
    xs = jax.random.normal(k[1], (T, B, D), F64)
    ys = jax.random.randint(k[2], (T, B), 0, C)
    flags = {}
    if c.get("lengths") is not None:
        flags["lengths"] = jnp.array(c["lengths"])
    if c.get("mask"):
        flags["mask"] = jax.random.bernoulli(k[3], 0.7, (T, B))
    if c.get("reset"):
        flags["reset"] = jax.random.bernoulli(k[4], 0.3, (T, B))
    state = lambda stack: jax.tree.map(lambda a: 0.5 * jax.random.normal(k[5], a.shape, F64),
                                       layers.zero_states(stack, (B,)))
    if c["arch"] == "layer":
        p = layers.init_layer(k[0], c["cell"], D, H, recurrent_bias=True, dtype=F64)
        floats = {"xs": xs, "h0": state(((p,),))[0][0] if c["h0"] == "given" else None}

        def loss(p, f, backward):
            hs, final = layers.run_layer(p, f["xs"], f["h0"], reverse=c["reverse"],
                                         backward=backward, **flags)
            weights = jnp.arange(1, H + 1, dtype=F64)[None, None, :]
            return jnp.sum(jnp.sin(hs) * weights) + sum(jnp.sum(s ** 3)
                                                        for s in jax.tree.leaves(final))
        return p, floats, loss
    if c["arch"] == "stack":
        p = tagger.init(k[0], c["cell"], D, H, C, num_layers=c["num_layers"],
                        bidirectional=c["bidirectional"], learn_h0=c["h0"] == "learned",
                        dtype=F64)
        if c["h0"] == "learned":
            p = p._replace(h0=jax.tree.map(lambda a: a + 0.5, p.h0))
        floats = {"xs": xs, "h0": state(p.rnn) if c["h0"] == "given" else None}

        def loss(p, f, backward):
            return tagger.loss(p, f["xs"], ys, f["h0"], reduction=c["reduction"],
                               backward=backward, **flags)
        return p, floats, loss
    p = tagger.init(k[0], c["cell"], D, H, C, dtype=F64)
    h0 = state(p.rnn)
    if c["arch"] == "memory-bounded":
        floats = {"xs": xs, "h0": h0 if c["h0"] == "given" else None}

        def loss(p, f, backward):
            fn = functools.partial(tagger.loss_and_state, reduction=c["reduction"],
                                   backward=backward)
            if backward == "manual":
                fn = remat.segmented(fn, c["segment"])
            J, finals = fn(p, f["xs"], ys, f["h0"])
            return J + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(finals))
        return p, floats, loss

    def loss(p, f, backward):  # truncated BPTT: (Σ chunk losses, Σ chunk gradients, h_T)
        def loss_and_state(p, xs, ys, h):
            J, finals = tagger.loss_and_state(p, xs, ys, ((h,),), backward=backward)
            return J, finals[0][0]
        return train.tbptt_value_and_grad(loss_and_state, p, f["xs"], ys, h0[0][0],
                                          c["chunk"])
    return p, {"xs": xs}, loss


@given(configurations())
def test_hand_written_gradients_equal_autodiff(c):
    p, floats, loss = build(c)
    if c["arch"] == "truncated":
        run = jax.jit(lambda p, f, backward: loss(p, f, backward), static_argnums=2)
        manual, autodiff = run(p, floats, "manual"), run(p, floats, "autodiff")
    else:
        value_and_grad = lambda backward: jax.jit(jax.value_and_grad(
            lambda p, f: loss(p, f, backward), argnums=(0, 1)))(p, floats)
        manual, autodiff = value_and_grad("manual"), value_and_grad("autodiff")
    assert rel_error(manual, autodiff) <= TOL[F64], c


PAIRS = pairs()  # (entry, cell): each entry of the table with each cell it accepts


@settings(max_examples=TABLE_EXAMPLES)
@given(pair=st.sampled_from(PAIRS),
       T=st.integers(1, 7), B=st.integers(1, 4), D=st.integers(1, 3), H=st.integers(1, 5),
       C=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_descriptor_table_at_random_sizes(pair, T, B, D, H, C, seed):
    arch, cell = pair
    errors = check(arch, cell, Sizes(T, B, D, H, C), F64, seed)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL[F64], (worst, errors[worst])
