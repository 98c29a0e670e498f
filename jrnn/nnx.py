"""jrnn's layers as Flax NNX modules: a drop-in for ``nnx.RNN(nnx.LSTMCell(...))``.

:class:`RNN` (and :class:`LSTM`, :class:`GRU`, :class:`Elman`) hold one
``nnx.Param`` per array of a :data:`jrnn.layers.Stack`, built with ``rngs=``,
and run it through :func:`jrnn.layers.run_stack`, so every layer, direction and
option has jrnn's hand-written backward. They train under ``nnx.jit``,
``nnx.grad`` / ``nnx.value_and_grad`` and ``nnx.Optimizer`` like any NNX module.

Like ``nnx.RNN``, inputs are batch-first (B, T, D) by default (``time_major=True``
for (T, B, D)), and a call takes ``initial_carry``, ``seq_lengths`` and
``return_carry``. Differences: past each sequence's length jrnn's outputs are
zeros (Flax's are the cell run on the padding); the LSTM's carry is
:class:`jrnn.cells.LSTMState` ``(h, c)`` where Flax's is the tuple ``(c, h)``;
a stack's carry is nested ``[layer][direction]``.

:func:`from_flax` and :func:`to_flax` convert Flax's own cells (``LSTMCell``,
``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``) exactly, both ways
(the table in :mod:`jrnn._flax_layout`). Flax is imported by this module only,
never by ``import jrnn`` (``pip install jrnn[flax]``).

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> import jrnn.nnx
>>> lstm = jrnn.nnx.LSTM(8, 16, rngs=nnx.Rngs(0))
>>> lstm(jnp.ones((4, 10, 8))).shape                      # (B, T, H)
(4, 10, 16)
>>> flax_rnn = nnx.RNN(nnx.GRUCell(8, 16, rngs=nnx.Rngs(0)))
>>> gru = jrnn.nnx.from_flax(flax_rnn)                     # the same function, exactly
>>> carry, ys = gru(jnp.ones((4, 10, 8)), seq_lengths=jnp.array([10, 7, 3, 1]),
...                 return_carry=True)
>>> carry.shape, ys.shape
((4, 16), (4, 10, 16))
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jrnn import _adapters, _flax_layout, layers

__all__ = ["RNN", "LSTM", "GRU", "Elman", "from_flax", "to_flax", "layer_from_cell",
           "cell_from_layer"]


class Direction(nnx.Module):
    """One direction of one layer: ``U`` (G·H, D), ``W`` (G·H, H), ``b``, ``b_r`` (G·H,),
    and for an LSTM with a projection ``W_hr`` (P, H)."""

    def __init__(self, layer: layers.Layer):
        self.U, self.W = nnx.Param(layer.U), nnx.Param(layer.W)
        self.b = None if layer.b is None else nnx.Param(layer.b)
        self.b_r = None if layer.b_r is None else nnx.Param(layer.b_r)
        self.W_hr = None if layer.W_hr is None else nnx.Param(layer.W_hr)
        self.cell_params = (None if layer.cell_params is None else
                            nnx.data(jax.tree.map(nnx.Param, layer.cell_params)))
        self.cell, self.heads = layer.cell, layer.heads

    def layer(self) -> layers.Layer:
        value = lambda p: None if p is None else p[...]
        cell_params = None if self.cell_params is None else jax.tree.map(
            value, self.cell_params, is_leaf=lambda x: isinstance(x, nnx.Param))
        return layers.Layer(U=self.U[...], W=self.W[...], b=value(self.b), b_r=value(self.b_r),
                            cell=self.cell, cell_params=cell_params, W_hr=value(self.W_hr),
                            heads=self.heads)


class RNN(nnx.Module):
    """A (deep, bidirectional) recurrent layer of any jrnn cell, as an NNX module.

    Args:
      cell: ``"lstm"``, ``"gru"``, ``"elman"`` or any registered jrnn cell.
      in_features, hidden_features: D and H.
      num_layers, bidirectional: the stack (:func:`jrnn.layers.init_stack`); the
        outputs of a bidirectional layer are ``[h_forward; h_backward]``.
      time_major: inputs (T, B, D) instead of (B, T, D).
      return_carry: calls return ``(carry, outputs)`` instead of outputs.
      bias, recurrent_bias, recurrent_init, forget_bias, proj_size, heads:
        :func:`jrnn.layers.init_layer` (PyTorch's initialisation, uniform in ±1/√H, by
        default; ``proj_size=P`` gives an LSTM with a projection, outputs of width P).
      param_dtype: the parameters' dtype; inputs must have the same.
      unroll, matmul_dtype, backward, kernel: passed to :func:`jrnn.rnn`.
      rngs: ``nnx.Rngs``; the parameters are drawn from ``rngs.params()``.
    """

    def __init__(self, cell: str, in_features: int, hidden_features: int, *,
                 num_layers: int = 1, bidirectional: bool = False, time_major: bool = False,
                 return_carry: bool = False, bias: bool = True,
                 recurrent_bias: Optional[bool] = None, recurrent_init: str = "uniform",
                 forget_bias: Optional[float] = None, proj_size: int = 0, heads: int = 1,
                 param_dtype=jnp.float32,
                 unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
                 kernel: str = "auto", rngs: nnx.Rngs):
        stack = layers.init_stack(rngs.params(), cell, in_features, hidden_features,
                                  num_layers=num_layers, bidirectional=bidirectional,
                                  dtype=param_dtype, bias=bias, recurrent_bias=recurrent_bias,
                                  recurrent_init=recurrent_init, forget_bias=forget_bias,
                                  proj_size=proj_size, heads=heads)
        self.time_major, self.return_carry = time_major, return_carry
        self.unroll, self.matmul_dtype, self.backward, self.kernel = (
            unroll, matmul_dtype, backward, kernel)
        self.load_stack(stack)

    def load_stack(self, stack: layers.Stack) -> None:
        """Replaces every parameter by the arrays of a jrnn stack (of any shape)."""
        layers._check_stack(stack)
        self.layers = nnx.List([nnx.List([Direction(part) for part in layer])
                                for layer in stack])

    @property
    def stack(self) -> layers.Stack:
        """The parameters as a :data:`jrnn.layers.Stack` (the Params' current values)."""
        return tuple(tuple(d.layer() for d in layer) for layer in self.layers)

    def __call__(self, inputs, *, initial_carry=None, seq_lengths=None,
                 return_carry: Optional[bool] = None):
        """Runs over ``inputs`` (B, T, D), or (T, B, D) if ``time_major``.

        ``seq_lengths`` (B,) int: right-padded batches; the carry is the state at
        each sequence's last valid step. Returns outputs (B, T, directions·H),
        or ``(carry, outputs)`` with ``return_carry``.
        """
        options = {k: getattr(self, k) for k in _adapters.RUN_OPTIONS}
        carry, outputs = _adapters.call(self.stack, inputs, time_major=self.time_major,
                                        initial_carry=initial_carry, seq_lengths=seq_lengths,
                                        options=options)
        wanted = self.return_carry if return_carry is None else return_carry
        return (carry, outputs) if wanted else outputs


class LSTM(RNN):
    """:class:`RNN` with jrnn's LSTM cell (PyTorch's gate order i, f, g, o)."""

    def __init__(self, in_features: int, hidden_features: int, **options):
        super().__init__("lstm", in_features, hidden_features, **options)


class GRU(RNN):
    """:class:`RNN` with jrnn's GRU cell (r, z, n; r applied to W_hn h + b_hn)."""

    def __init__(self, in_features: int, hidden_features: int, **options):
        super().__init__("gru", in_features, hidden_features, **options)


class Elman(RNN):
    """:class:`RNN` with the tanh cell (Flax's ``SimpleCell``)."""

    def __init__(self, in_features: int, hidden_features: int, **options):
        super().__init__("elman", in_features, hidden_features, **options)


# -- conversion from and to Flax NNX's own cells -------------------------------------------

_FUSED = ("OptimizedLSTMCell", "GRUCell", "SimpleCell")  # one Linear per side, gates as columns


def _kind(name: str) -> _flax_layout.Kind:
    return _flax_layout.NNX_GRU if name == "GRUCell" else _flax_layout.KINDS[name]


def _dense(linear, G: int = 1) -> list:
    """An nnx.Linear as G per-gate ``{"kernel", "bias"}`` dicts (its columns split)."""
    kernels = jnp.split(linear.kernel[...], G, axis=1)
    biases = [None] * G if linear.bias is None else jnp.split(linear.bias[...], G)
    return [{"kernel": k} if b is None else {"kernel": k, "bias": b}
            for k, b in zip(kernels, biases)]


def layer_from_cell(cell) -> layers.Layer:
    """The jrnn layer with exactly the parameters' function of an NNX cell."""
    name = _flax_layout.kind_of(cell)
    _flax_layout.check_activations(cell, name)
    kind = _kind(name)
    letters = tuple(kind.letters) or ("",)
    if name in _FUSED:
        gates = {}
        for side in "ih":
            for g, part in zip(letters, _dense(getattr(cell, f"dense_{side}"), len(letters))):
                gates[side + g] = part
    else:  # LSTMCell: one Linear per side and gate (``if_``: ``if`` is a keyword)
        gates = {side + g: _dense(getattr(cell, side + g + ("_" if side + g == "if" else "")))[0]
                 for side in "ih" for g in letters}
    return _flax_layout.to_layer(kind, gates)


def cell_from_layer(layer: layers.Layer, kind: Optional[str] = None, *,
                    rngs: Optional[nnx.Rngs] = None):
    """A new NNX cell of class ``kind`` with exactly the function of ``layer``.

    ``kind`` defaults to ``LSTMCell``, ``GRUCell`` or ``SimpleCell`` by the layer's cell.
    """
    defaults = {"lstm": "LSTMCell", "gru": "GRUCell", "elman": "SimpleCell"}
    if kind is None:
        if layer.cell not in defaults:
            raise ValueError(f"layer: Flax has no cell for jrnn's {layer.cell!r}")
        kind = defaults[layer.cell]
    if kind not in _flax_layout.KINDS:
        raise ValueError(f"kind: expected one of {sorted(_flax_layout.KINDS)}, got {kind!r}")
    gates = _flax_layout.from_layer(_kind(kind), layer)
    cell = getattr(nnx, kind)(layer.input_size, layer.hidden_size, param_dtype=layer.W.dtype,
                              dtype=layer.W.dtype,
                              rngs=rngs if rngs is not None else nnx.Rngs(0))
    letters = tuple(_kind(kind).letters) or ("",)
    if kind in _FUSED:
        for side in "ih":
            linear = getattr(cell, f"dense_{side}")
            linear.kernel[...] = jnp.concatenate([gates[side + g]["kernel"] for g in letters], 1)
            if linear.bias is not None:
                linear.bias[...] = jnp.concatenate([gates[side + g]["bias"] for g in letters])
    else:
        for key, part in gates.items():
            linear = getattr(cell, key + ("_" if key == "if" else ""))
            linear.kernel[...] = part["kernel"]
            if "bias" in part:
                linear.bias[...] = part["bias"]
    return cell


def from_flax(module, **options) -> RNN:
    """An :class:`RNN` with exactly the function of an ``nnx.RNN`` or an NNX cell.

    ``options`` go to :class:`RNN` (``time_major`` and ``return_carry`` default
    to those of an ``nnx.RNN``).
    """
    if isinstance(module, nnx.RNN):
        if module.reverse:
            raise ValueError("module.reverse: a right-to-left nnx.RNN has no single-direction "
                             "twin here; use bidirectional=True, or reverse the inputs")
        options = {"time_major": module.time_major, "return_carry": module.return_carry,
                   **options}
        module = module.cell
    layer = layer_from_cell(module)
    rnn = RNN(layer.cell, layer.input_size, layer.hidden_size, param_dtype=layer.W.dtype,
              rngs=nnx.Rngs(0), **options)
    rnn.load_stack(((layer,),))
    return rnn


def to_flax(module: RNN, kind: Optional[str] = None) -> nnx.RNN:
    """An ``nnx.RNN`` of Flax's own cell with exactly the function of ``module``
    (one layer, one direction: what an ``nnx.RNN`` holds)."""
    stack = module.stack
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError(f"module: nnx.RNN holds one layer of one direction, got "
                         f"{len(stack)} layer(s) of {len(stack[0])} direction(s)")
    return nnx.RNN(cell_from_layer(stack[0][0], kind), time_major=module.time_major,
                   return_carry=module.return_carry)
