"""Flax's recurrent cells' parameter layout, mapped exactly to jrnn's and back.

Flax (Linen and NNX alike) writes every cell as per-gate dense layers with
kernels laid out (in, out), named by side (``i``: the input, ``h``: the
recurrent state) and gate letter (Flax's ``flax/linen/recurrent.py``):

=====================  ==========  ==============  ==================================
Flax cell              jrnn cell   gate letters    biases
=====================  ==========  ==============  ==================================
``LSTMCell``           ``lstm``    i, f, g, o      ``h*`` only (one per gate)
``OptimizedLSTMCell``  ``lstm``    i, f, g, o      ``h*`` only
``GRUCell`` (Linen)    ``gru``     r, z, n         ``i*``, and ``hn`` inside r ⊙ (·)
``GRUCell`` (NNX)      ``gru``     r, z, n         ``i*`` only: no b_hn
``SimpleCell``         ``elman``   (one)           ``i`` only
=====================  ==========  ==============  ==================================

These are PyTorch's gate orders and GRU convention (Cho et al. 2014 with r
applied to W_hn h + b_hn, as in cuDNN), so jrnn's ``U`` is the input kernels
transposed and stacked by gate, ``W`` the recurrent ones, ``b`` the one bias
each gate has outside r ⊙ (·), and ``b_r`` holds b_hn in its n block (zeros
elsewhere). Going back, a bias of jrnn's that Flax keeps elsewhere is added
into the bias Flax has (the same function); one that Flax has no place for (a
nonzero n block of ``b_r`` for NNX's GRUCell) is refused, never dropped.

A cell here is a plain dict ``{side + letter: {"kernel": (in, H), "bias": (H,)}}``
(``"bias"`` only where Flax has one); the Linen and NNX modules read and write
it from their own objects.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jrnn import layers

__all__ = ["Kind", "KINDS", "to_layer", "from_layer"]


class Kind(NamedTuple):
    cell: str          # the jrnn cell
    letters: str       # Flax's gate letters, in jrnn's gate order ("" for one gate)
    input_bias: bool   # the i* layers have biases
    hidden_bias: str   # letters of the h* layers that have a bias


KINDS = {
    "LSTMCell": Kind("lstm", "ifgo", False, "ifgo"),
    "OptimizedLSTMCell": Kind("lstm", "ifgo", False, "ifgo"),
    "GRUCell": Kind("gru", "rzn", True, "n"),      # Linen's; NNX's: see NNX_GRU
    "SimpleCell": Kind("elman", "", True, ""),
}
NNX_GRU = Kind("gru", "rzn", True, "")


def _letters(kind: Kind):
    return tuple(kind.letters) or ("",)


def to_layer(kind: Kind, gates: dict, dtype=None) -> layers.Layer:
    """The jrnn layer with exactly the function of a Flax cell's per-gate parameters."""
    letters = _letters(kind)
    get = lambda key, what: None if gates[key].get(what) is None else jnp.asarray(
        gates[key][what])
    U = jnp.concatenate([get("i" + g, "kernel").T for g in letters])
    W = jnp.concatenate([get("h" + g, "kernel").T for g in letters])
    H = W.shape[1]
    zero = jnp.zeros((H,), W.dtype)
    b = jnp.concatenate([get("i" + g, "bias") if kind.input_bias else get("h" + g, "bias")
                         for g in letters])
    b_r = None
    if kind.cell == "gru" and kind.hidden_bias:  # b_hn sits inside r ⊙ (W_hn h + b_hn)
        b_r = jnp.concatenate([zero, zero, get("hn", "bias")])
    return layers.Layer(U=U, W=W, b=b, b_r=b_r, cell=kind.cell)


def from_layer(kind: Kind, layer: layers.Layer, name: str = "layer") -> dict:
    """A Flax cell's per-gate parameters with exactly the function of ``layer``.

    Raises ValueError, naming ``name``, when the layer's cell differs from the
    kind's or when it has a bias that the Flax cell has no place for.
    """
    if layer.cell != kind.cell:
        raise ValueError(f"{name}: expected a {kind.cell!r} layer for this Flax cell, "
                         f"got cell {layer.cell!r}")
    if layer.heads != 1:
        raise ValueError(f"{name}: Flax's cells have a dense recurrent matrix, so this "
                         f"layer's block-diagonal W (heads={layer.heads}) has no counterpart "
                         "there; keep the jrnn module (jrnn.nnx.RNN / jrnn.linen.RNN take heads)")
    if layer.W_hr is not None:
        raise ValueError(f"{name}: Flax's cells have no projection, so this layer's W_hr "
                         f"(proj_size={layer.proj_size}) has no place there; keep the jrnn "
                         "module (jrnn.nnx.RNN / jrnn.linen.RNN take proj_size)")
    letters = _letters(kind)
    G, H = len(letters), layer.hidden_size
    split = lambda a: [None] * G if a is None else list(jnp.split(a, G))
    b, b_r = split(layer.b), split(layer.b_r)
    gates = {}
    for k, g in enumerate(letters):
        U_g, W_g = (jnp.split(a, G)[k] for a in (layer.U, layer.W))
        gates["i" + g], gates["h" + g] = {"kernel": U_g.T}, {"kernel": W_g.T}
        inside_r = kind.cell == "gru" and g == "n"  # b_r's n block is not outside r ⊙ (·)
        total = [x for x in (b[k], None if inside_r else b_r[k]) if x is not None]
        total = sum(total[1:], total[0]) if total else jnp.zeros((H,), layer.W.dtype)
        gates[("i" if kind.input_bias else "h") + g]["bias"] = total
        if inside_r:
            own = b_r[k] if b_r[k] is not None else jnp.zeros((H,), layer.W.dtype)
            if "n" in kind.hidden_bias:
                gates["hn"]["bias"] = own
            elif np.any(np.asarray(own) != 0):
                raise ValueError(
                    f"{name}.b_r: flax.nnx.GRUCell has no recurrent bias b_hn inside "
                    "r ⊙ (W_hn h + b_hn), and this layer's (b_r[2H:3H]) is nonzero, so no "
                    "exact conversion exists; use flax.linen.GRUCell, or a layer without it")
    return gates


def check_activations(cell, kind_name: str, name: str = "cell") -> None:
    """Refuses a Flax cell whose gate or activation function is not jrnn's."""
    import jax
    expected = {"gate_fn": jax.nn.sigmoid, "activation_fn": jax.numpy.tanh}
    for attr, fn in expected.items():
        actual = getattr(cell, attr, fn)
        if actual is not fn and getattr(actual, "__name__", None) != fn.__name__:
            raise ValueError(f"{name}.{attr}: jrnn's {KINDS[kind_name].cell} cell uses "
                             f"{fn.__name__}, got {getattr(actual, '__name__', actual)!r}")
    if getattr(cell, "residual", False):
        raise ValueError(f"{name}.residual: jrnn's elman cell has no residual connection "
                         "(h' = tanh(W_i x + b_i + W_h h)), got residual=True")
    dtype, param_dtype = getattr(cell, "dtype", None), getattr(cell, "param_dtype", None)
    if dtype is not None and param_dtype is not None and jax.numpy.dtype(dtype) != \
            jax.numpy.dtype(param_dtype):
        raise ValueError(f"{name}.dtype: jrnn computes in the parameters' dtype "
                         f"({jax.numpy.dtype(param_dtype)}), got dtype={jax.numpy.dtype(dtype)}")


def kind_of(cell, supported=KINDS) -> str:
    """The Flax class name of ``cell`` if jrnn can convert it, else a TypeError."""
    name = type(cell).__name__
    if name not in supported or not type(cell).__module__.startswith("flax."):
        raise TypeError(f"cell: expected one of Flax's {', '.join(supported)}, "
                        f"got {name} (jrnn has no cell with its equations)")
    return name
