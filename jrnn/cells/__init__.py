"""Pointwise recurrent cells and the contract the driver expects of them.

Every cell in jrnn has the same skeleton. With G gates and
hidden size H, the driver computes

    A_t = U x_t + b                 (B, G·H)   hoisted: one matmul for all t
    R_t = W h_{t-1} + b_r           (B, G·H)   the only matmul inside the loop

and the cell does everything else, pointwise:

    carry_t, extra_t = step(A_t, R_t, carry_{t-1}, params)

A_t and R_t arrive as tuples of G arrays (B, H), one per gate, in the cell's
gate order (the driver computes each gate's block of the hoisted projection
as its own array: slicing gate blocks inside the loop keeps XLA:CPU from
vectorising the pointwise kernel).

A carry is a tuple of (B, H) arrays whose first entry is the hidden state h
that feeds the recurrent matmul (tanh and GRU: ``(h,)``; LSTM: ``(h, c)``;
sLSTM: ``(h, c, n, m)``).
``extra_t`` is whatever the hand-written backward needs beyond the carries,
which the driver stores for every step. The backward is the mirror image:

    dA_t, dR_t, dcarry_in, dparams_t = step_vjp(carry_in, carry_t, extra_t, dcarry_t, params)

where ``dcarry_t`` is the total cotangent of ``carry_t`` and ``dcarry_in`` the
part of the cotangent of ``carry_{t-1}`` that flows through the cell's
pointwise path (the path through ``R_t`` is the driver's: ``dR_t W``).

``params`` are the cell's own parameters (the gains and biases of a layer
normalisation, say), a pytree made by ``init_params`` and None for a cell that
has none. Row-wise operations across the hidden units, like a normalisation,
are still "pointwise" in time, so they belong to the cell. ``dparams_t`` is
this step's share of their gradient (None without parameters); the driver sums
it over the steps in the reverse scan's carry.
A cell whose backward reads the step's input, ``Cell.vjp_reads_inputs``, gets it as
``step_vjp(..., params, A=A_t)``: the driver keeps A, which it computed before the loop
anyway, instead of the cell storing what it derives from A_t at every step (a normalised
cell recomputes x̂ from A_t and two numbers a row, rather than storing G·H of them).
dA_t and dR_t are tuples of G blocks. A cell returns ``dR_t = None`` when it
equals ``dA_t`` (A and R enter only as a sum); a block of dR_t that *is* the
same array as dA_t's (GRU's r and z) is stored once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["Cell", "LSTMState", "LayerNormParams", "SLSTMState", "get", "layer_names", "names",
           "register"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """A pointwise recurrent cell: its forward step and the step's VJP.

    Attributes:
      name: registry name, e.g. ``"elman"``.
      gates: G, the number of H-sized blocks in A_t and R_t.
      carry_size: number of (B, H) arrays in the carry (h first).
      step: ``(A_t, R_t, carry_in, params) -> (carry_t, extra_t)``, pointwise; A_t
        and R_t are tuples of G (B, H) blocks.
      step_vjp: ``(carry_in, carry_t, extra_t, dcarry_t, params) ->
        (dA_t, dR_t, dcarry_in, dparams_t)``.
      to_carry: public initial state (an array or a NamedTuple) -> carry tuple.
      from_carry: carry tuple -> public state.
      needs_recurrent_bias: the equations use ``b_r`` apart from ``b`` (GRU), so
        layers of this cell get one by default.
      init_params: ``(key, hidden_size, dtype) -> params`` for a cell with
        parameters of its own; None for a cell without (then ``params`` is None).
      default_bias: whether layers of this cell get the biases b (and b_r) by
        default; a normalised cell's own biases replace them.
      projectable: h_{t−1} reaches the cell only through R_t, so the driver may
        project the cell's h-output u_t (H) to h_t = u_t W_hrᵀ (P < H) before it
        is emitted and fed back (LSTMP, Sak et al. 2014). Such a cell's
        ``step_vjp`` returns, for h_{t−1}, zeros shaped like ``carry_in[0]`` (P).
      vjp_reads_inputs: ``step_vjp`` takes the keyword ``A``, the step's A_t (G blocks, the
        bias b included), which the driver keeps from before the loop.
      carry_from_extra: ``(carry_in, extra_t) -> carry_t``: the step's own carry again from
        its input carry and what it stored (the LSTM's c_t = f ⊙ c_{t−1} + i ⊙ g), or None.
        With zoneout the carry the driver stores is the zoned one, and the cell's backward
        reads its own output: a cell that can recompute it spares the driver storing it too.
      vjp_reads_carry_pointwise: ``step_vjp`` reads ``carry_t``, if at all, unit by unit
        and only in products with that unit's cotangent ``dcarry_t`` (tanh: dh ⊙ (1 − h²);
        the GRU: not at all). With a boolean zoneout mask the zoned carry equals the cell's
        own wherever a unit did not keep its old value, and where it did the cell's
        cotangent is zero, so the driver passes the zoned carry and stores nothing more.
    """

    name: str
    gates: int
    carry_size: int
    step: Callable[..., Any]
    step_vjp: Callable[..., Any]
    to_carry: Callable[[Any], tuple]
    from_carry: Callable[[tuple], Any]
    needs_recurrent_bias: bool = False
    init_params: Any = None
    default_bias: bool = True
    driver: str = "recurrence"  # the module that runs it: jrnn.recurrence (linear cells: jrnn.linear)
    projectable: bool = False
    vjp_reads_inputs: bool = False
    carry_from_extra: Any = None
    vjp_reads_carry_pointwise: bool = False

    def __repr__(self) -> str:
        return f"Cell({self.name!r}, gates={self.gates})"


_REGISTRY: dict[str, Cell] = {}


def register(cell: Cell) -> Cell:
    """Adds ``cell`` to the registry that tests and models iterate over."""
    _REGISTRY[cell.name] = cell
    return cell


def get(cell: "str | Cell") -> Cell:
    """Looks a cell up by name; a :class:`Cell` is returned unchanged. Linear cells
    (``linear_contract.names()``: minGRU, minLSTM, LRU) are found too: their ``driver``
    attribute, ``"linear"``, says that :mod:`jrnn.linear` runs them."""
    if isinstance(cell, (Cell, linear_contract.LinearCell)):
        return cell
    try:
        return _REGISTRY[cell] if cell in _REGISTRY else linear_contract.get(cell)
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"cell: expected one of {sorted(_REGISTRY)} or the linear cells "
                         f"{linear_contract.names()}, got {cell!r}") from None


def names() -> list[str]:
    """Names of the registered cells of the classic driver (:func:`jrnn.rnn`)."""
    return sorted(_REGISTRY)


def layer_names() -> list[str]:
    """Every cell a layer (:mod:`jrnn.layers`) can run: the classic ones and the real-state
    linear ones (minGRU, minLSTM; the LRU has its own readout, :mod:`jrnn.lru`)."""
    return sorted(_REGISTRY) + [name for name in linear_contract.names()
                                if not linear_contract.get(name).complex_state]


# Each module registers its cell on import.
from jrnn.cells import elman, gru, layernorm, lstm, slstm  # noqa: E402,F401
from jrnn.cells import linear_contract, lru, mingru, minlstm  # noqa: E402,F401
from jrnn.cells.layernorm import LayerNormParams  # noqa: E402
from jrnn.cells.lstm import LSTMState  # noqa: E402
from jrnn.cells.slstm import SLSTMState  # noqa: E402
