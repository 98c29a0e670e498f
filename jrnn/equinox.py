"""jrnn's layers as Equinox modules, in place of ``eqx.nn.LSTMCell`` under ``lax.scan``.

:class:`RNN` (and :class:`LSTM`, :class:`GRU`, :class:`Elman`) is an
``eqx.Module`` whose one array field is ``stack``, a :data:`jrnn.layers.Stack`
(``stack[l][d].U``, ``.W``, ``.b``, ``.b_r``), so ``eqx.filter_jit``,
``eqx.filter_grad`` and ``eqx.tree_at`` see jrnn's arrays directly, and a call
runs the whole sequence with jrnn's hand-written backward: no scan to write.

Inputs are batch-first (B, T, D) by default (``time_major=True`` for
(T, B, D)), or one unbatched sequence (T, D), which also works under
``jax.vmap``. A call takes ``initial_carry``, ``seq_lengths`` and
``return_carry``; outputs past each sequence's length are zeros, and the LSTM
carry is :class:`jrnn.cells.LSTMState` ``(h, c)`` (Equinox's order too).

:func:`from_equinox` and :func:`to_equinox` convert ``eqx.nn.LSTMCell`` and
``eqx.nn.GRUCell`` exactly, both ways: both use PyTorch's layout (``weight_ih``
(G·H, D), gates i, f, g, o and r, z, n, the GRU's r applied to
``W_hn h + bias_n``), so ``U = weight_ih``, ``W = weight_hh``, ``b = bias``
and the GRU's ``bias_n`` is the n block of ``b_r``. Equinox is imported by
this module only (``pip install jrnn[equinox]``).

>>> import equinox as eqx, jax, jax.numpy as jnp
>>> import jrnn.equinox
>>> cell = eqx.nn.LSTMCell(8, 16, key=jax.random.key(0))
>>> lstm = jrnn.equinox.from_equinox(cell)                 # the same function, exactly
>>> lstm(jnp.ones((4, 10, 8))).shape
(4, 10, 16)
>>> lstm = eqx.tree_at(lambda m: m.stack[0][0].b, lstm, jnp.zeros(64))
"""
from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from jrnn import _adapters, layers

__all__ = ["RNN", "LSTM", "GRU", "Elman", "from_stack", "from_equinox", "to_equinox", "layer_from_cell",
           "cell_from_layer"]


class RNN(eqx.Module):
    """A (deep, bidirectional) recurrent layer of any jrnn cell, as an Equinox module.

    Args:
      cell: ``"lstm"``, ``"gru"``, ``"elman"`` or any registered jrnn cell.
      input_size, hidden_size: D and H.
      num_layers, bidirectional: the stack; bidirectional outputs are ``[h_f; h_b]``.
      time_major: inputs (T, B, D) instead of (B, T, D).
      return_carry: calls return ``(carry, outputs)``.
      bias, recurrent_bias, recurrent_init, forget_bias, proj_size, heads:
        :func:`jrnn.layers.init_layer` (``proj_size=P``: an LSTM with a projection).
      dtype: the parameters' dtype; inputs must have the same.
      unroll, matmul_dtype, backward, kernel: passed to :func:`jrnn.rnn`.
      key: a ``jax.random`` key for the initialisation.
    """

    stack: tuple
    time_major: bool = eqx.field(static=True)
    return_carry: bool = eqx.field(static=True)
    unroll: Optional[int] = eqx.field(static=True)
    matmul_dtype: object = eqx.field(static=True)
    backward: str = eqx.field(static=True)
    kernel: str = eqx.field(static=True)

    def __init__(self, cell: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bidirectional: bool = False, time_major: bool = False,
                 return_carry: bool = False, bias: bool = True,
                 recurrent_bias: Optional[bool] = None, recurrent_init: str = "uniform",
                 forget_bias: Optional[float] = None, proj_size: int = 0, heads: int = 1,
                 dtype=jnp.float32,
                 unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
                 kernel: str = "auto", key):
        self.stack = layers.init_stack(key, cell, input_size, hidden_size,
                                       num_layers=num_layers, bidirectional=bidirectional,
                                       dtype=dtype, bias=bias, recurrent_bias=recurrent_bias,
                                       recurrent_init=recurrent_init, forget_bias=forget_bias,
                                       proj_size=proj_size, heads=heads)
        self.time_major, self.return_carry = time_major, return_carry
        self.unroll, self.matmul_dtype, self.backward, self.kernel = (
            unroll, matmul_dtype, backward, kernel)

    def __call__(self, inputs, *, initial_carry=None, seq_lengths=None,
                 return_carry: Optional[bool] = None, key=None):
        """Runs over ``inputs`` (B, T, D), (T, B, D) if ``time_major``, or (T, D).

        ``seq_lengths`` (B,) int (a scalar for (T, D)): right-padded batches; the
        carry is the state at each sequence's last valid step. ``key`` is
        accepted for Equinox's calling convention and unused.
        """
        options = {k: getattr(self, k) for k in _adapters.RUN_OPTIONS}
        carry, outputs = _adapters.call(self.stack, inputs, time_major=self.time_major,
                                        initial_carry=initial_carry, seq_lengths=seq_lengths,
                                        options=options)
        wanted = self.return_carry if return_carry is None else return_carry
        return (carry, outputs) if wanted else outputs


class LSTM(RNN):
    """:class:`RNN` with jrnn's LSTM cell (PyTorch's gate order i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int, **options):
        super().__init__("lstm", input_size, hidden_size, **options)


class GRU(RNN):
    """:class:`RNN` with jrnn's GRU cell (r, z, n; r applied to W_hn h + b_hn)."""

    def __init__(self, input_size: int, hidden_size: int, **options):
        super().__init__("gru", input_size, hidden_size, **options)


class Elman(RNN):
    """:class:`RNN` with the tanh cell."""

    def __init__(self, input_size: int, hidden_size: int, **options):
        super().__init__("elman", input_size, hidden_size, **options)


def from_stack(stack: layers.Stack, **options) -> RNN:
    """An :class:`RNN` holding ``stack`` (any jrnn stack) as its parameters."""
    layers._check_stack(stack)
    first = stack[0][0]
    module = RNN(first.cell, first.input_size, first.hidden_size, dtype=first.W.dtype,
                 key=jax.random.key(0), **options)
    return eqx.tree_at(lambda m: m.stack, module, stack)


# -- conversion from and to Equinox's own cells --------------------------------------------

_CELLS = {"LSTMCell": "lstm", "GRUCell": "gru"}


def layer_from_cell(cell) -> layers.Layer:
    """The jrnn layer with exactly the function of ``eqx.nn.LSTMCell`` / ``GRUCell``."""
    if type(cell) not in (eqx.nn.LSTMCell, eqx.nn.GRUCell):
        raise TypeError(f"cell: expected eqx.nn.LSTMCell or eqx.nn.GRUCell, got "
                        f"{type(cell).__name__} (jrnn has no cell with its equations)")
    name = _CELLS[type(cell).__name__]
    b_r = None
    if name == "gru" and cell.bias_n is not None:  # new = tanh(i_n + r ⊙ (W_hn h + bias_n))
        zero = jnp.zeros_like(cell.bias_n)
        b_r = jnp.concatenate([zero, zero, cell.bias_n])
    return layers.Layer(U=cell.weight_ih, W=cell.weight_hh, b=cell.bias, b_r=b_r, cell=name)


def cell_from_layer(layer: layers.Layer):
    """A new ``eqx.nn.LSTMCell`` / ``GRUCell`` with exactly the function of ``layer``.

    A recurrent bias outside the GRU's r ⊙ (·) (every block of an LSTM's
    ``b_r``, the r and z blocks of a GRU's) is added into ``bias``.
    """
    kinds = {v: getattr(eqx.nn, k) for k, v in _CELLS.items()}
    if layer.cell not in kinds:
        raise ValueError(f"layer: Equinox has no cell for jrnn's {layer.cell!r} "
                         f"(it has {sorted(kinds)})")
    if layer.heads != 1:
        raise ValueError(f"layer: Equinox's cells have a dense recurrent matrix, so this "
                         f"layer's block-diagonal W (heads={layer.heads}) has no counterpart "
                         "there; keep the jrnn module (jrnn.equinox.RNN takes heads)")
    if layer.W_hr is not None:
        raise ValueError(f"layer: Equinox's cells have no projection, so this layer's W_hr "
                         f"(proj_size={layer.proj_size}) has no place there; keep the jrnn "
                         "module (jrnn.equinox.RNN takes proj_size)")
    G, H = layer.W.shape[0] // layer.hidden_size, layer.hidden_size
    has_bias = layer.b is not None or layer.b_r is not None
    cell = kinds[layer.cell](layer.input_size, H, use_bias=has_bias, dtype=layer.W.dtype,
                             key=jax.random.key(0))
    zeros = jnp.zeros((G * H,), layer.W.dtype)
    b = zeros if layer.b is None else layer.b
    b_r = zeros if layer.b_r is None else layer.b_r
    if layer.cell == "gru":
        bias, bias_n = b + b_r.at[2 * H:].set(0), b_r[2 * H:]
        arrays = (layer.U, layer.W, bias if has_bias else None, bias_n if has_bias else None)
        return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n), cell, arrays,
                           is_leaf=lambda x: x is None)
    bias = b + b_r if layer.b_r is not None else b
    return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell,
                       (layer.U, layer.W, bias if has_bias else None), is_leaf=lambda x: x is None)


def from_equinox(cell, **options) -> RNN:
    """An :class:`RNN` with exactly the function of ``cell`` run over a sequence."""
    return from_stack(((layer_from_cell(cell),),), **options)


def to_equinox(module: RNN):
    """The Equinox cell with exactly the function of a one-layer, one-direction module."""
    if len(module.stack) != 1 or len(module.stack[0]) != 1:
        raise ValueError(f"module: an Equinox cell is one layer of one direction, got "
                         f"{len(module.stack)} layer(s) of {len(module.stack[0])} direction(s)")
    return cell_from_layer(module.stack[0][0])
