"""Recurrent layers that know their cell, and deep / bidirectional stacks of them.

A :class:`Layer` holds one direction of one layer: ``U`` (G·H, D), ``W``
(G·H, H), ``b`` (G·H,) and an optional recurrent bias ``b_r`` (G·H,), plus the
name of its cell as static metadata (a pytree with only the arrays as leaves,
so ``jax.grad``, optax and ``jit`` see arrays alone).

A stack is a tuple of layers, each a tuple of one (unidirectional) or two
(forward, backward) :class:`Layer` s: the deep RNN (Goodfellow et al., Deep
Learning, §10.5) and the bidirectional RNN (§10.3). Layer l > 0 reads the outputs of layer l − 1, the
two directions concatenated, [h_f; h_b], as PyTorch's ``nn.RNN`` does.

Every run goes through :func:`jrnn.rnn`, so every direction of every layer
has the hand-written backward, and gradients reach the layer below through
the cotangent of its input.

>>> import jax, jax.numpy as jnp, jrnn
>>> stack = jrnn.layers.init_stack(jax.random.key(0), "elman", input_size=3,
...                                hidden_size=4, num_layers=2, bidirectional=True)
>>> outputs, finals = jrnn.layers.run_stack(stack, jnp.ones((6, 2, 3)),
...                                         lengths=jnp.array([6, 3]))
>>> outputs.shape, len(finals), len(finals[0])
((6, 2, 8), 2, 2)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from jrnn import _checks, cells, linear, recurrence
from jrnn import dropout as _dropout

__all__ = ["Layer", "Stack", "RECURRENT_INITS", "init_layer", "run_layer", "init_stack",
           "run_stack",
           "step_stack", "zero_states", "hidden_of", "reverse_resets"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One direction of one recurrent layer.

    A_t = x_t Uᵀ + b and R_t = h_{t−1} Wᵀ + b_r feed the pointwise cell.
    """

    U: jax.Array                      # (G·H, D)
    W: jax.Array                      # (G·H, H)
    b: Optional[jax.Array]            # (G·H,), PyTorch's bias_ih; None: no bias
    b_r: Optional[jax.Array] = None   # (G·H,), PyTorch's bias_hh
    cell: str = "elman"               # static: a registered cell name
    cell_params: Any = None           # the cell's own parameters (layer-normalised cells)

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    @property
    def input_size(self) -> int:
        return self.U.shape[1]


jax.tree_util.register_dataclass(Layer, data_fields=["U", "W", "b", "b_r", "cell_params"],
                                 meta_fields=["cell"])

Stack = tuple  # tuple[tuple[Layer, ...], ...]: layers, then directions


RECURRENT_INITS = ("uniform", "orthogonal")


def init_layer(key, cell: str, input_size: int, hidden_size: int, *, bias: Optional[bool] = None,
               recurrent_bias: Optional[bool] = None, recurrent_init: str = "uniform",
               forget_bias: Optional[float] = None, dtype=jnp.float32) -> Layer:
    """PyTorch's initialisation by default: every entry uniform in ±1/√H.

    Args:
      bias: False gives a layer without biases (PyTorch's ``bias=False``); by
        default a cell gets them unless its own parameters hold biases (the
        layer-normalised cells: their normalisations' biases replace b and b_r).
      recurrent_bias: add ``b_r``; by default a cell gets it when its equations
        need it apart from ``b`` (the GRU's candidate gate).
      recurrent_init: ``"orthogonal"`` makes each gate's (H, H) block of W a
        random orthogonal matrix (Saxe et al. 2014): every singular value is 1,
        so at the start the recurrence neither shrinks nor grows gradients.
      forget_bias: LSTM only: the forget gate's block of ``b`` (Gers et al.
        2000; Jozefowicz et al. 2015 use 1.0), with ``b_r``'s block at zero,
        so that the cell starts out remembering.
    """
    spec = cells.get(cell)
    key = _checks.key("key", key)
    _checks.size("input_size", input_size)
    _checks.size("hidden_size", hidden_size)
    if recurrent_init not in RECURRENT_INITS:
        raise ValueError(f"recurrent_init: expected one of {RECURRENT_INITS}, "
                         f"got {recurrent_init!r}")
    if forget_bias is not None and spec.name != "lstm":
        raise ValueError(f"forget_bias: only the LSTM has a forget gate, got cell {spec.name!r}")
    if bias is None:
        bias = spec.default_bias
    if recurrent_bias is None:
        recurrent_bias = spec.needs_recurrent_bias
    if spec.driver == "linear":
        return _init_linear_layer(key, spec, input_size, hidden_size, bias, recurrent_bias,
                                  dtype)
    G, H = spec.gates, hidden_size
    bound = 1.0 / float(H) ** 0.5
    kU, kW, kb, kr = jax.random.split(key, 4)
    uniform = lambda k, shape: jax.random.uniform(k, shape, dtype, -bound, bound)
    if recurrent_init == "orthogonal":
        blocks = jax.vmap(lambda k: jax.nn.initializers.orthogonal()(k, (H, H), dtype))(
            jax.random.split(kW, G))
        W = blocks.reshape(G * H, H)
    else:
        W = uniform(kW, (G * H, H))
    b = uniform(kb, (G * H,)) if bias else None
    b_r = uniform(kr, (G * H,)) if bias and recurrent_bias else None
    if forget_bias is not None:
        if b is None:
            raise ValueError("forget_bias: needs bias=True")
        b = b.at[H:2 * H].set(forget_bias)  # the gate order is i, f, g, o
        b_r = None if b_r is None else b_r.at[H:2 * H].set(0)
    cell_params = None if spec.init_params is None else spec.init_params(kr, H, dtype)
    return Layer(U=uniform(kU, (G * H, input_size)), W=W, b=b, b_r=b_r, cell=spec.name,
                 cell_params=cell_params)


def _init_linear_layer(key, spec, input_size, hidden_size, bias, recurrent_bias, dtype):
    """A layer of a linear cell (:mod:`jrnn.linear`): U (K·H, D) and b uniform in ±1/√H
    as for the classic cells, and W empty, (0, H): there is no recurrent matrix."""
    if spec.complex_state:
        raise ValueError(f"cell: {spec.name!r} has a complex state and its own readout "
                         "(y = Re(C h) + D x); use jrnn.lru.init and jrnn.lru.apply, not a layer")
    if recurrent_bias:
        raise ValueError(f"recurrent_bias: cell {spec.name!r} has no recurrent product")
    bound = 1.0 / float(hidden_size) ** 0.5
    kU, kb = jax.random.split(key)
    rows = spec.blocks * hidden_size
    return Layer(U=jax.random.uniform(kU, (rows, input_size), dtype, -bound, bound),
                 W=jnp.zeros((0, hidden_size), dtype),
                 b=jax.random.uniform(kb, (rows,), dtype, -bound, bound) if bias else None,
                 cell=spec.name)


# run_stack's defaults, which a linear layer accepts; anything else it cannot do is named.
_LINEAR_DEFAULTS = {"unroll": None, "matmul_dtype": None, "kernel": "auto",
                    "recurrent_mask": None, "zoneout": None}


def _run_linear_layer(layer, xs, h0, options):
    for name, value in options.items():
        if name in _LINEAR_DEFAULTS and value is not _LINEAR_DEFAULTS[name] \
                and value != _LINEAR_DEFAULTS[name]:
            raise ValueError(f"{name}: the linear cell {layer.cell!r} runs on jrnn.linear, "
                             f"which has no {name}; got {value!r}")
    kept = {k: v for k, v in options.items() if k not in _LINEAR_DEFAULTS}
    return linear.linear_rnn(layer.cell, layer.U, layer.b, xs, h0,
                             cell_params=layer.cell_params, **kept)


def run_layer(layer: Layer, xs, h0=None, **options):
    """``jrnn.rnn`` with this layer's cell and weights; returns ``(hs, final)``. A layer
    of a linear cell runs on :func:`jrnn.linear.linear_rnn` (its ``mode`` may be passed)."""
    if not isinstance(layer, Layer):
        raise TypeError(f"layer: expected jrnn.layers.Layer, got {type(layer).__name__}")
    if cells.get(layer.cell).driver == "linear":
        return _run_linear_layer(layer, xs, h0, options)
    return recurrence.rnn(layer.cell, layer.U, layer.W, layer.b, xs, h0, b_r=layer.b_r,
                          cell_params=layer.cell_params, **options)


def init_stack(key, cell: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
               bidirectional: bool = False, dtype=jnp.float32, **layer_options) -> Stack:
    """``num_layers`` layers of one or two directions, all of hidden size H.

    ``layer_options`` go to :func:`init_layer` for every layer: ``bias``,
    ``recurrent_bias``, ``recurrent_init``, ``forget_bias``.
    """
    key = _checks.key("key", key)
    _checks.size("num_layers", num_layers)
    _checks.size("input_size", input_size)
    _checks.size("hidden_size", hidden_size)
    directions = 2 if bidirectional else 1
    keys = jax.random.split(key, num_layers * directions).reshape(num_layers, directions)
    return tuple(
        tuple(init_layer(keys[l, d], cell, input_size if l == 0 else directions * hidden_size,
                         hidden_size, dtype=dtype, **layer_options)
              for d in range(directions))
        for l in range(num_layers))


def _describe(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(type(v).__name__ for v in value) + ")"
    return f"a {type(value).__name__}"


def _check_stack(stack) -> int:
    """Validates the nesting and the sizes between layers; returns the directions."""
    if not isinstance(stack, tuple) or not stack:
        raise TypeError(f"stack: expected a non-empty tuple of layers (each a tuple of "
                        f"jrnn.layers.Layer), got {type(stack).__name__}")
    directions = len(stack[0]) if isinstance(stack[0], tuple) else 0
    for l, layer in enumerate(stack):
        if not (isinstance(layer, tuple) and len(layer) == directions in (1, 2)
                and all(isinstance(d, Layer) for d in layer)):
            raise TypeError(f"stack[{l}]: expected a tuple of {directions or '1 or 2'} "
                            f"jrnn.layers.Layer (one per direction), got {_describe(layer)}")
        for d, part in enumerate(layer):
            H = stack[0][0].hidden_size
            if part.hidden_size != H:
                _checks.fail_shape(f"stack[{l}][{d}].W", f"(G·{H}, {H}): one hidden size "
                                   "for the whole stack", part.W.shape)
            if l > 0 and part.input_size != directions * H:
                _checks.fail_shape(f"stack[{l}][{d}].U", f"(G·H, {directions * H}): layer "
                                   f"{l} reads the {directions} direction(s) of layer {l - 1}",
                                   part.U.shape)
    return directions


def reverse_resets(reset):
    """Restart flags for the right-to-left direction.

    ``reset[t]`` means that a new episode starts at t, so the state restarts
    before step t. Read right to left, the episode that ends at t − 1 then
    starts, so the flag moves to t − 1: ``reversed[t] = reset[t + 1]``.
    """
    return jnp.concatenate([reset[1:], jnp.zeros_like(reset[:1])])


def run_stack(stack: Stack, xs, h0=None, *, mask=None, lengths=None, reset=None,
              unroll: Optional[int] = None, matmul_dtype=None, backward: str = "manual",
              kernel: str = "auto", dropout: Optional[_dropout.Dropout] = None, key=None,
              training: bool = False):
    """Runs a (deep, possibly bidirectional) stack over xs (T, B, D).

    ``h0`` is None (zeros) or nested like the stack: ``h0[l][d]`` is the
    initial state of direction d of layer l. Restart flags apply to both
    directions, moved one step for the backward one (:func:`reverse_resets`).

    ``dropout`` (a :class:`jrnn.dropout.Dropout`) regularises every layer and
    direction with masks drawn from ``key`` when ``training`` is True (each
    layer and direction from its own fold of the key); in evaluation only
    zoneout acts, as its expectation.

    Returns ``(outputs, finals)``: the top layer's outputs (T, B, directions·H)
    and ``finals[l][d]``, the final state of each layer and direction (for
    the backward direction: its state after reading the sequence back to t = 0).
    """
    directions = _check_stack(stack)
    xs, mask, reset = _checks.arrays(xs=xs, mask=mask, reset=reset)
    if h0 is not None and (len(h0) != len(stack) or any(len(s) != directions for s in h0)):
        raise ValueError(f"h0: expected one initial state per layer and direction, nested "
                         f"({len(stack)}, {directions}), got {jax.tree.structure(h0)}")
    if dropout is not None:
        _dropout.check(dropout, key, training)
    options = dict(mask=mask, lengths=lengths, unroll=unroll, matmul_dtype=matmul_dtype,
                   backward=backward, kernel=kernel)
    x, finals = xs, []
    for l, layer in enumerate(stack):
        outputs, layer_finals = [], []
        for d, part in enumerate(layer):
            flags = reset if reset is None or d == 0 else reverse_resets(reset)
            noise = {}
            if dropout is not None:
                part, x_in, noise = _regularised(part, x, dropout, key, training, l, d)
            else:
                x_in = x
            hs, final = run_layer(part, x_in, None if h0 is None else h0[l][d],
                                  reset=flags, reverse=d == 1, **options, **noise)
            outputs.append(hs)
            layer_finals.append(final)
        x = outputs[0] if directions == 1 else jnp.concatenate(outputs, axis=-1)
        if dropout is not None and l < len(stack) - 1:
            x = _dropout.between_layers(dropout, None if key is None else _fold(key, l, 2),
                                        training, x)
        finals.append(tuple(layer_finals))
    return x, tuple(finals)


def _fold(key, *indices):
    for i in indices:
        key = jax.random.fold_in(key, i)
    return key


def _regularised(part: Layer, x, dropout, key, training: bool, l: int, d: int):
    """The layer with DropConnect applied, its input, and jrnn.rnn's noise arguments."""
    if cells.get(part.cell).driver == "linear":
        raise ValueError(f"dropout: the linear cell {part.cell!r} runs on jrnn.linear, which "
                         "has no dropout or zoneout; got a Dropout")
    noise = _dropout.layer_noise(
        dropout, None if key is None else _fold(key, l, d), training,
        cell=cells.get(part.cell), num_steps=x.shape[0], batch_shape=x.shape[1:-1],
        input_size=x.shape[-1], W=part.W)
    if noise.weight_mask is not None:
        part = dataclasses.replace(part, W=part.W * noise.weight_mask)
    if noise.input_mask is not None:
        x = x * noise.input_mask[None]
    return part, x, dict(recurrent_mask=noise.recurrent_mask, zoneout=noise.zoneout)


def zero_states(stack: Stack, batch_shape: Sequence[int] = ()) -> tuple:
    """Zero initial states nested like the stack, each of shape (*batch_shape, H)."""
    def zero(part: Layer):
        spec = cells.get(part.cell)
        shape = tuple(batch_shape) + (part.hidden_size,)
        if spec.driver == "linear":
            return jnp.zeros(shape, part.W.dtype)
        return spec.from_carry((jnp.zeros(shape, part.W.dtype),) * spec.carry_size)
    return tuple(tuple(zero(part) for part in layer) for layer in stack)


def hidden_of(cell: str, state) -> jax.Array:
    """The hidden state h of a cell's public state (an array, or LSTM's (h, c))."""
    spec = cells.get(cell)
    return state if spec.driver == "linear" else spec.to_carry(state)[0]


def step_stack(stack: Stack, states, x, dropout: Optional[_dropout.Dropout] = None):
    """One time step of a unidirectional stack, for generation.

    ``states[l]`` is layer l's state (B, H) (LSTM: its ``(h, c)``); x (B, D).
    Returns the new states and the top layer's h (B, H). The same pointwise
    cells as the scan, so sampling follows exactly the trained equations;
    with ``dropout``, in evaluation mode as :func:`run_stack` with
    ``training=False``: zoneout's expectation p ⊙ carry_{t−1} + (1 − p) ⊙ carry_t,
    every other kind of noise off.
    """
    if _check_stack(stack) != 1:
        raise ValueError("stack: step_stack runs left to right one step at a time, so it "
                         "needs a unidirectional stack; got a bidirectional one")
    new_states = []
    for (part,), state in zip(stack, states):
        spec = cells.get(part.cell)
        if spec.driver == "linear":
            x = linear.linear_step(part.cell, part.U, part.b, x, state, part.cell_params)
            new_states.append(x)
            continue
        carry = tuple(spec.to_carry(state))
        A = recurrence.gate_blocks(recurrence.affine(x, part.U, part.b), spec.gates)
        R = recurrence.gate_blocks(recurrence.affine(carry[0], part.W, part.b_r), spec.gates)
        new, _ = spec.step(A, R, carry, part.cell_params)
        rates = () if dropout is None else _dropout.zoneout_rates(dropout, spec)
        if any(rates):
            new = tuple(p * c + (1 - p) * n for p, c, n in zip(rates, carry, new))
        carry = new
        new_states.append(spec.from_carry(carry))
        x = carry[0]
    return tuple(new_states), x
