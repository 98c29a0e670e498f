r"""The contract of a *linear* recurrent cell, run by :mod:`jrnn.linear`.

A linear cell maps the projected input of one step to the two coefficients of

.. math::

    h_t = a_t \odot h_{t-1} + b_t ,

pointwise, from x_t alone: the driver computes P = X Uᵀ + bias once for the
whole sequence (``blocks`` H-sized blocks, like the gates of a classic cell), and
the cell does

    a, b = coefficients(P, params)             a: (T, B, N), or (N,) when constant in time
    dP, dparams = coefficients_vjp(P, params, da, db)

where ``da``, ``db`` are the cotangents of a and b that the driver's reverse scan
produces, of the shape of P's blocks (a cell whose ``a`` is constant sums its
gradient over every axis but the last; the driver may call it on one step (B, N) and
sum the parameter gradients itself). With a complex
state (the LRU), cotangents follow the convention ∂J/∂Re z + i ∂J/∂Im z, under which
the adjoint of z ↦ a z is z ↦ conj(a) z; the driver converts to and from JAX's.
There is no recurrent matmul, so the whole sequence runs as one scan
(:func:`jrnn.linear.linear_rnn`).

A cell whose a is constant and whose b is its projection times a gain of its own
parameters (the LRU: b = γ ⊙ (P_re + i P_im)) may also give a :class:`GainForm`.
The backward (either mode) then never recomputes P: its loop needs only a, the cell
maps each db_t to dP_t without P, and the gain's gradient, Σ dP ⊙ P, is taken after
the loop from the weights, Σ_{t,b} dP ⊙ (x Uᵀ + bias) = Σ_d dU ⊙ U + dbias ⊙ bias
(row by row).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

__all__ = ["LinearCell", "GainForm", "register", "get", "names"]


class GainForm(NamedTuple):
    """A constant-a cell with b = gain(params) ⊙ P, in the three pieces its backward needs.

    Attributes:
      a: ``params -> a`` (N,), the constant coefficient.
      input_vjp: ``(params, db) -> dP``, the projection's cotangent without P.
      params_vjp: ``(params, da, U, dU, bias, dbias) -> dparams``: ``da`` summed over
        every step and row (N,); U, dU, bias, dbias as tuples of the cell's blocks
        (bias, dbias None without a bias).
    """

    a: Callable[..., Any]
    input_vjp: Callable[..., Any]
    params_vjp: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class LinearCell:
    """A pointwise map from a step's projected input to (a_t, b_t), and its VJP.

    Attributes:
      name: registry name, e.g. ``"mingru"``.
      blocks: number of N-sized row blocks of U (and of the bias).
      coefficients: ``(P, params) -> (a, b)``; P is a tuple of ``blocks`` arrays.
      coefficients_vjp: ``(P, params, da, db) -> (dP, dparams)``.
      complex_state: the state h is complex (a and b complex) though P is real.
      constant_a: a does not depend on x_t (shape (N,)).
      init_params: ``(key, N, dtype) -> params`` for a cell with parameters of its
        own (the LRU's ν, θ, γ), else None.
      default_bias: layers of this cell get a bias by default.
      gain_form: a :class:`GainForm` (constant a, b = gain ⊙ P), or None.
    """

    name: str
    blocks: int
    coefficients: Callable[..., Any]
    coefficients_vjp: Callable[..., Any]
    complex_state: bool = False
    constant_a: bool = False
    init_params: Any = None
    default_bias: bool = True
    driver: str = "linear"
    needs_recurrent_bias: bool = False  # no recurrent product, so never a b_r
    projectable: bool = False  # no LSTM projection (jrnn.cells.Cell.projectable)
    carry_size: int = 1        # the state is h alone (jrnn.cells.Cell.carry_size)
    gain_form: Optional[GainForm] = None  # the LRU's b = γ ⊙ P (module doc)

    def __repr__(self) -> str:
        return f"LinearCell({self.name!r}, blocks={self.blocks})"


_REGISTRY: dict[str, LinearCell] = {}


def register(cell: LinearCell) -> LinearCell:
    _REGISTRY[cell.name] = cell
    return cell


def get(cell: "str | LinearCell") -> LinearCell:
    """Looks a linear cell up by name; a :class:`LinearCell` is returned unchanged."""
    if isinstance(cell, LinearCell):
        return cell
    try:
        return _REGISTRY[cell]
    except KeyError:
        raise ValueError(
            f"cell: expected one of the linear cells {sorted(_REGISTRY)}, got {cell!r}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)
