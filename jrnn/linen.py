"""jrnn's layers as Flax Linen modules: a drop-in for ``nn.RNN(nn.LSTMCell(...))``.

:class:`RNN` (and :class:`LSTM`, :class:`GRU`, :class:`Elman`) create their
parameters with ``self.param`` at ``init`` and run them through
:func:`jrnn.layers.run_stack` at ``apply``, so gradients take jrnn's
hand-written backward. The parameters of layer l are ``params["l{l}"]`` (the
backward direction: ``"l{l}_reverse"``, as in PyTorch), each a dict of ``U``
(G·H, D), ``W`` (G·H, H) and, where the layer has them, ``b`` and ``b_r`` (G·H,).

Like ``nn.RNN``, inputs are batch-first (B, T, D) by default (``time_major``
for (T, B, D)), the input size is read from the inputs at ``init``, and a call
takes ``initial_carry``, ``seq_lengths`` and ``return_carry``; the differences
are those of :mod:`jrnn.nnx` (zeros past each length; the LSTM carry is
:class:`jrnn.cells.LSTMState` ``(h, c)``, Flax's is ``(c, h)``).

:func:`from_flax` and :func:`to_flax` convert Linen's ``LSTMCell``,
``OptimizedLSTMCell``, ``GRUCell`` and ``SimpleCell`` parameters exactly, both
ways (the table in :mod:`jrnn._flax_layout`).

>>> import jax, jax.numpy as jnp
>>> import jrnn.linen
>>> model = jrnn.linen.GRU(features=16)
>>> xs = jnp.ones((4, 10, 8))
>>> params = model.init(jax.random.key(0), xs)
>>> jax.tree.map(jnp.shape, params["params"]["l0"])
{'U': (48, 8), 'W': (48, 16), 'b': (48,), 'b_r': (48,)}
>>> model.apply(params, xs).shape
(4, 10, 16)
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from jrnn import _adapters, _checks, _flax_layout, layers

__all__ = ["RNN", "LSTM", "GRU", "Elman", "from_flax", "to_flax", "layer_from_params",
           "params_from_layer", "stack_to_params"]

_FIELDS = ("U", "W", "b", "b_r", "cell_params", "W_hr")


def _name(l: int, d: int) -> str:
    return f"l{l}" + ("_reverse" if d else "")


def stack_to_params(stack: layers.Stack) -> dict:
    """A jrnn stack as this module's ``params`` collection (absent biases left out)."""
    layers._check_stack(stack)
    return {_name(l, d): {f: getattr(p, f) for f in _FIELDS if getattr(p, f) is not None}
            for l, layer in enumerate(stack) for d, p in enumerate(layer)}


class RNN(nn.Module):
    """A (deep, bidirectional) recurrent layer of any jrnn cell, as a Linen module.

    Attributes:
      cell: ``"lstm"``, ``"gru"``, ``"elman"`` or any registered jrnn cell.
      features: the hidden size H (the input size comes from the inputs).
      num_layers, bidirectional: the stack; bidirectional outputs are ``[h_f; h_b]``.
      time_major: inputs (T, B, D) instead of (B, T, D).
      return_carry: calls return ``(carry, outputs)``.
      bias, recurrent_bias, recurrent_init, forget_bias, proj_size, heads:
        :func:`jrnn.layers.init_layer` (``proj_size=P``: an LSTM with a projection).
      param_dtype: the parameters' dtype; inputs must have the same.
      unroll, matmul_dtype, backward, kernel: passed to :func:`jrnn.rnn`.
    """

    cell: str
    features: int
    num_layers: int = 1
    bidirectional: bool = False
    time_major: bool = False
    return_carry: bool = False
    bias: bool = True
    recurrent_bias: Optional[bool] = None
    recurrent_init: str = "uniform"
    forget_bias: Optional[float] = None
    proj_size: int = 0
    heads: int = 1
    param_dtype: Any = jnp.float32
    unroll: Optional[int] = None
    matmul_dtype: Any = None
    backward: str = "manual"
    kernel: str = "auto"

    @nn.compact
    def __call__(self, inputs, *, initial_carry=None, seq_lengths=None,
                 return_carry: Optional[bool] = None):
        """Runs over ``inputs`` (B, T, D), or (T, B, D) if ``time_major``; see
        :meth:`jrnn.nnx.RNN.__call__`."""
        directions = 2 if self.bidirectional else 1
        if self.has_variable("params", "l0"):  # before Flax's own, less telling, shape check
            D = self.get_variable("params", "l0")["U"].shape[1]
            if inputs.shape[-1] != D:
                _checks.fail_shape("inputs", f"(..., {D}): the last axis is in_features = {D}",
                                   inputs.shape)
        options = dict(bias=self.bias, recurrent_bias=self.recurrent_bias,
                       recurrent_init=self.recurrent_init, forget_bias=self.forget_bias,
                       proj_size=self.proj_size, heads=self.heads, dtype=self.param_dtype)

        def init(key, input_size):
            layer = layers.init_layer(key, self.cell, input_size, self.features, **options)
            return {f: getattr(layer, f) for f in _FIELDS if getattr(layer, f) is not None}

        stack = []
        for l in range(self.num_layers):
            input_size = inputs.shape[-1] if l == 0 else directions * (self.proj_size or
                                                                       self.features)
            stack.append(tuple(
                layers.Layer(**self.param(_name(l, d), init, input_size), cell=self.cell,
                             heads=self.heads)
                for d in range(directions)))
        run = {k: getattr(self, k) for k in _adapters.RUN_OPTIONS}
        carry, outputs = _adapters.call(tuple(stack), inputs, time_major=self.time_major,
                                        initial_carry=initial_carry, seq_lengths=seq_lengths,
                                        options=run)
        wanted = self.return_carry if return_carry is None else return_carry
        return (carry, outputs) if wanted else outputs


class LSTM(RNN):
    """:class:`RNN` with jrnn's LSTM cell (PyTorch's gate order i, f, g, o)."""

    cell: str = "lstm"
    features: int = None  # required; given by keyword: LSTM(features=H)


class GRU(RNN):
    """:class:`RNN` with jrnn's GRU cell (r, z, n; r applied to W_hn h + b_hn)."""

    cell: str = "gru"
    features: int = None


class Elman(RNN):
    """:class:`RNN` with the tanh cell (Flax's ``SimpleCell``)."""

    cell: str = "elman"
    features: int = None


# -- conversion from and to Linen's own cells ----------------------------------------------

def layer_from_params(cell: nn.Module, params) -> layers.Layer:
    """The jrnn layer with exactly the function of Linen ``cell`` with ``params``
    (its own collection: ``variables["params"]`` of the cell, or of ``nn.RNN``'s
    ``"cell"`` entry)."""
    name = _flax_layout.kind_of(cell)
    _flax_layout.check_activations(cell, name)
    params = params.get("params", params)
    params = params.get("cell", params)
    return _flax_layout.to_layer(_flax_layout.KINDS[name], dict(params))


def params_from_layer(layer: layers.Layer, kind: Optional[str] = None):
    """``(cell, params)``: a Linen cell of class ``kind`` and its params with
    exactly the function of ``layer``."""
    defaults = {"lstm": "LSTMCell", "gru": "GRUCell", "elman": "SimpleCell"}
    kind = kind or defaults.get(layer.cell)
    if kind not in _flax_layout.KINDS:
        raise ValueError(f"kind: expected one of {sorted(_flax_layout.KINDS)}, got {kind!r}")
    gates = _flax_layout.from_layer(_flax_layout.KINDS[kind], layer)
    cell = getattr(nn, kind)(features=layer.hidden_size, param_dtype=layer.W.dtype)
    return cell, {"params": gates}


def from_flax(rnn_or_cell: nn.Module, params, **options):
    """``(module, params)``: an :class:`RNN` with exactly the function of an
    ``nn.RNN`` (or a cell) with ``params``; ``options`` go to :class:`RNN`."""
    cell = rnn_or_cell
    if isinstance(rnn_or_cell, nn.RNN):
        if rnn_or_cell.reverse:
            raise ValueError("rnn_or_cell.reverse: a right-to-left nn.RNN has no "
                             "single-direction twin here; use bidirectional=True")
        options = {"time_major": rnn_or_cell.time_major,
                   "return_carry": rnn_or_cell.return_carry, **options}
        cell = rnn_or_cell.cell
    layer = layer_from_params(cell, params)
    module = RNN(cell=layer.cell, features=layer.hidden_size, param_dtype=layer.W.dtype,
                 **options)
    return module, {"params": stack_to_params(((layer,),))}


def to_flax(module: RNN, params, kind: Optional[str] = None):
    """``(nn.RNN, params)`` of Linen's own cell with exactly the function of
    ``module`` with ``params`` (one layer, one direction)."""
    params = params.get("params", params)
    if set(params) != {"l0"} or module.num_layers != 1 or module.bidirectional:
        raise ValueError(f"module: nn.RNN holds one layer of one direction, got "
                         f"parameters for {sorted(params)}")
    layer = layers.Layer(**params["l0"], cell=module.cell)
    cell, cell_params = params_from_layer(layer, kind)
    return (nn.RNN(cell, time_major=module.time_major, return_carry=module.return_carry),
            {"params": {"cell": cell_params["params"]}})
