r"""Gradient flow through time, read from the hand-written backward pass itself.

For every recurrent layer that a loss runs (any cell, any architecture built
from :func:`jrnn.rnn`: deep, bidirectional, encoder-decoder...),
:func:`gradient_flow` returns two curves over the steps t of the sequence:

.. math::

    \Big\|\frac{\partial J}{\partial h_t}\Big\|
    \qquad\text{and}\qquad
    \big\|\nabla_W^{(t)} J\big\| = \big\|dR_t^\top h_{t-1}\big\|_F ,

the total derivative of the loss with respect to the hidden state at step t
(the BPTT recursion's δ_t, carried back from every later step), and the
contribution of step t to the recurrent weights' gradient, ∇_W J = Σ_t
∇_W^{(t)} J (the per-step ∇^{(t)} of Deep Learning §10.2.2; for the tanh cell dR_t = δ_t ⊙ (1 −
h_t²)). Norms are taken over the batch and the hidden units (Frobenius). For
an LSTM, h is the output state; the cell state c is not reported.

A layer of a linear recurrence (:mod:`jrnn.linear`: h_t = a_t ⊙ h_{t−1} + b_t) has no
recurrent matrix. Its first curve is the adjoint of its reverse scan,
∂J/∂h_t = λ_t = g_t + ā_{t+1} ⊙ λ_{t+1} (complex for the LRU: the norm is over the real
and imaginary parts); its second is the contribution of step t to the gradient of its one
weight matrix, ‖∇_U^{(t)} J‖ = ‖dP_tᵀ x_t‖_F with P = X Uᵀ (its ``weight`` is ``"U"``).

They come from the same reverse scan that computes the gradients: while
:func:`gradient_flow` runs, each layer's backward adds the two reductions and
hands them to the host with ``jax.debug.callback``. Nothing changes outside
it, and the gradients it returns are the usual ones.

Reading the curves: with a loss at the last step only, ‖∂J/∂h_t‖ falling
geometrically as t moves back from T is the vanishing gradient of
Bengio et al. (1994); rising is the exploding one. :func:`jrnn.plots.gradient_flow`
draws them on a log scale.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jrnn import _diagnostics

__all__ = ["LayerFlow", "gradient_flow"]


class LayerFlow(NamedTuple):
    """One layer's gradient flow. ``index``: the order in which the forward ran the
    layers (a deep bidirectional stack: layer 0 forward, layer 0 backward, layer 1...)."""

    index: int
    cell: str
    reverse: bool
    dh_norm: np.ndarray  # (T,) ‖∂J/∂h_t‖, t in input order
    dW_norm: np.ndarray  # (T,) ‖∇_W^(t) J‖ of the matrix named by ``weight``
    weight: str = "W"    # "W" (the recurrent matrix) or "U" (a linear layer's input matrix)

    @property
    def label(self) -> str:
        return f"layer {self.index} ({self.cell}{', reverse' if self.reverse else ''})"


@contextlib.contextmanager
def _recording():
    recorder = _diagnostics.Recorder()
    _diagnostics._ACTIVE.append(recorder)
    try:
        yield recorder
    finally:
        _diagnostics._ACTIVE.remove(recorder)


def gradient_flow(loss_fn: Callable[..., Any], *args, argnums=0,
                  **kwargs) -> tuple[Any, list[LayerFlow]]:
    """Gradients of ``loss_fn(*args, **kwargs)`` and the gradient flow of each layer.

    ``loss_fn`` returns a scalar and runs jrnn layers with the (default)
    hand-written backward; it is traced afresh here (pass the plain function,
    not a ``jax.jit`` of it, whose cached trace would not report).

    Returns ``(grads, flows)``: ``jax.grad(loss_fn, argnums)`` and one
    :class:`LayerFlow` per layer, in forward order.

    >>> grads, flows = jrnn.diagnostics.gradient_flow(tagger.loss, params, xs, ys)
    >>> flows[0].dh_norm        # (T,)
    """
    with _recording() as recorder:
        grads = jax.grad(loss_fn, argnums)(*args, **kwargs)
        jax.block_until_ready(grads)
        jax.effects_barrier()
    if not recorder.layers:
        raise ValueError("loss_fn: ran no jrnn layer with backward='manual', so there is no "
                         "hand-written backward pass to read the gradient flow from")
    missing = [i for i in range(len(recorder.layers)) if i not in recorder.flows]
    if missing:
        raise ValueError(f"loss_fn: layers {missing} ran forward but no backward reached them "
                         "(is the loss independent of them?)")
    return grads, [LayerFlow(i, info["cell"], info["reverse"], *recorder.flows[i],
                             weight=info["weight"])
                   for i, info in enumerate(recorder.layers)]
