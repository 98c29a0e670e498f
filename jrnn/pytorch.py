"""Conversion between PyTorch's recurrent modules and jrnn stacks, both ways.

``torch.nn.RNN`` (tanh), ``torch.nn.LSTM`` and ``torch.nn.GRU``, with any
``num_layers``, ``bidirectional``, ``bias`` and ``batch_first``. jrnn keeps
PyTorch's layout and conventions (gate orders i, f, g, o and r, z, n; the
GRU's r applied to W_hn h + b_hn), so every parameter is a copy, never a
transpose or a permutation:

=========================  ==========================
PyTorch                    jrnn ``stack[l][d]``
=========================  ==========================
``weight_ih_l{l}{sfx}``    ``U``  (G·H, D)
``weight_hh_l{l}{sfx}``    ``W``  (G·H, H)
``bias_ih_l{l}{sfx}``      ``b``  (G·H,) (None if ``bias=False``)
``bias_hh_l{l}{sfx}``      ``b_r`` (G·H,) (None if ``bias=False``)
``weight_hr_l{l}{sfx}``    ``W_hr`` (P, H) (LSTM with ``proj_size=P``; W is then (G·H, P))
=========================  ==========================

with ``sfx = "_reverse"`` for the backward direction (d = 1). Both biases are
kept, so ``to_torch(from_torch(m))`` has exactly the parameters of ``m``.
Inputs are time-major in jrnn; for a ``batch_first`` module, transpose them.
PyTorch has no counterpart of jrnn's other cells (the layer-normalised ones, the
sLSTM) nor of a block-diagonal recurrent matrix (``heads`` > 1): :func:`to_torch`
refuses those stacks and says so.

torch is imported only inside these functions: it is an optional extra,
never a dependency of jrnn (the example below runs in the torch tests).

>>> import torch, jax.numpy as jnp, jrnn
>>> lstm = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
>>> stack = jrnn.pytorch.from_torch(lstm)
>>> outputs, finals = jrnn.layers.run_stack(stack, jnp.ones((5, 3, 8), jnp.float32))
>>> jrnn.pytorch.to_torch(stack)                               # back, losslessly
LSTM(8, 16, num_layers=2, bidirectional=True)
"""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from jrnn import cells, layers
from jrnn import dropout as _dropout

__all__ = ["from_torch", "to_torch", "states_from_torch", "states_to_torch", "from_torch_named"]

_CELL_OF = {"RNN": "elman", "LSTM": "lstm", "GRU": "gru"}
_MODULE_OF = {cell: name for name, cell in _CELL_OF.items()}


def _kind(module, allow_dropout: bool = False) -> str:
    import torch
    for name in _CELL_OF:
        if type(module) is getattr(torch.nn, name):
            break
    else:
        raise TypeError(f"module: expected torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, "
                        f"got {type(module).__name__}")
    if name == "RNN" and module.nonlinearity != "tanh":
        raise ValueError(f"module: jrnn's elman cell is the tanh RNN, got "
                         f"nonlinearity={module.nonlinearity!r}")
    if module.dropout and module.num_layers > 1 and not allow_dropout:
        raise ValueError(f"module: dropout={module.dropout} between layers is not part of a "
                         "jrnn stack, so the conversion would drop it silently; pass "
                         "with_dropout=True to get it as jrnn.dropout.Dropout(between=...), or "
                         "set module.dropout = 0 to convert the same function without it")
    return _CELL_OF[name]


def _to_jax(tensor):
    """A torch tensor as a JAX array of the same dtype (bfloat16, which numpy lacks,
    goes through float32: every bfloat16 value is a float32 value, so exactly)."""
    import torch
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return jnp.asarray(tensor.float().numpy()).astype(jnp.bfloat16)
    return jnp.asarray(tensor.numpy())


def _to_tensor(array):
    """A JAX array as a torch tensor of the same dtype (bfloat16 exactly, via float32)."""
    import torch
    if array.dtype == jnp.bfloat16:
        return torch.from_numpy(np.asarray(array, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def from_torch_named(module, tensors: Callable[[str], Any], *,
                     allow_dropout: bool = False) -> layers.Stack:
    """A stack laid out like ``module``, with each array read as ``tensors(torch_name)``.

    :func:`from_torch` reads the parameters; passing ``lambda n:
    getattr(module, n).grad`` reads their gradients into the same structure.
    """
    cell = _kind(module, allow_dropout)
    directions = 2 if module.bidirectional else 1
    stack = []
    for l in range(module.num_layers):
        parts = []
        for d in range(directions):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            bias = (lambda n: _to_jax(tensors(n))) if module.bias else (lambda n: None)
            W_hr = (_to_jax(tensors("weight_hr" + sfx)) if getattr(module, "proj_size", 0)
                    else None)
            parts.append(layers.Layer(U=_to_jax(tensors("weight_ih" + sfx)),
                                      W=_to_jax(tensors("weight_hh" + sfx)),
                                      b=bias("bias_ih" + sfx), b_r=bias("bias_hh" + sfx),
                                      cell=cell, W_hr=W_hr))
        stack.append(tuple(parts))
    return tuple(stack)


def from_torch(module, *, with_dropout: bool = False):
    """The jrnn stack with the parameters of a ``torch.nn.RNN``/``LSTM``/``GRU``.

    A multi-layer module with ``dropout > 0`` is refused unless ``with_dropout``:
    then the result is ``(stack, jrnn.dropout.Dropout(between=module.dropout))``,
    PyTorch's dropout between layers as jrnn's (pass both to
    :func:`jrnn.layers.run_stack` with ``key`` and ``training``).
    """
    stack = from_torch_named(module, lambda name: getattr(module, name),
                             allow_dropout=with_dropout)
    if not with_dropout:
        return stack
    between = float(module.dropout) if module.num_layers > 1 else 0.0
    return stack, _dropout.Dropout(between=between)


def to_torch(stack: layers.Stack, *, batch_first: bool = False):
    """A new ``torch.nn`` module with the stack's parameters (dtype kept).

    A layer that has ``b`` but no ``b_r`` (jrnn's default for tanh and LSTM)
    gets ``bias_hh`` = 0: the same function. A stack without any bias gives
    ``bias=False``.
    """
    import torch
    directions = layers._check_stack(stack)
    first = stack[0][0]
    cell = cells.get(first.cell).name
    if cell not in _MODULE_OF:  # minGRU, minLSTM, the normalised cells: torch.nn has none
        raise ValueError(f"stack: cell {cell!r} has no torch.nn counterpart (torch.nn has "
                         f"RNN, LSTM and GRU: cells {sorted(_MODULE_OF)}), so it cannot be "
                         "converted")
    for l, layer in enumerate(stack):
        for d, part in enumerate(layer):
            if part.heads != 1:
                raise ValueError(f"stack[{l}][{d}]: heads={part.heads}: PyTorch's recurrent "
                                 "modules have no block-diagonal (multi-head) recurrent matrix, "
                                 "so it has no counterpart there")
    has_bias = any(p.b is not None or p.b_r is not None for layer in stack for p in layer)
    dtype = getattr(torch, np.dtype(first.W.dtype).name)
    kwargs = dict(num_layers=len(stack), bias=has_bias, batch_first=batch_first,
                  bidirectional=directions == 2, dtype=dtype)
    if first.W_hr is not None:
        kwargs["proj_size"] = first.proj_size
    module = getattr(torch.nn, _MODULE_OF[cell])(first.input_size, first.hidden_size, **kwargs)
    tensor = _to_tensor
    with torch.no_grad():
        for l, layer in enumerate(stack):
            for d, part in enumerate(layer):
                if part.cell != cell:
                    raise ValueError(f"stack[{l}][{d}]: expected cell {cell!r} like stack[0][0], "
                                     f"got {part.cell!r}")
                sfx = f"_l{l}" + ("_reverse" if d else "")
                getattr(module, "weight_ih" + sfx).copy_(tensor(part.U))
                getattr(module, "weight_hh" + sfx).copy_(tensor(part.W))
                if part.W_hr is not None:
                    getattr(module, "weight_hr" + sfx).copy_(tensor(part.W_hr))
                if has_bias:
                    for name, value in (("bias_ih", part.b), ("bias_hh", part.b_r)):
                        target = getattr(module, name + sfx)
                        target.copy_(torch.zeros_like(target) if value is None else tensor(value))
    return module


def states_from_torch(stack: layers.Stack, h_n, c_n=None) -> tuple:
    """PyTorch's (num_layers·directions, B, H) final or initial states, nested
    like the stack: ``states[l][d]`` (an ``LSTMState`` for the LSTM; with
    ``proj_size`` h_n is (num_layers·directions, B, P))."""
    directions = layers._check_stack(stack)
    h = _to_jax(h_n)
    c = None if c_n is None else _to_jax(c_n)
    state = lambda i: h[i] if c is None else cells.LSTMState(h[i], c[i])
    return tuple(tuple(state(l * directions + d) for d in range(directions))
                 for l in range(len(stack)))


def states_to_torch(states) -> tuple:
    """Nested jrnn states -> ``(h_n,)``, or ``(h_n, c_n)`` for the LSTM, as torch tensors."""
    flat = [s for layer in states for s in layer]
    stacked = lambda arrays: _to_tensor(jnp.stack(arrays))
    if isinstance(flat[0], cells.LSTMState):
        return stacked([s.h for s in flat]), stacked([s.c for s in flat])
    return (stacked(flat),)
