"""Recurrent layers that know their cell, and deep / bidirectional stacks of them.

A :class:`Layer` holds one direction of one layer: ``U`` (G·H, D), ``W``
(G·H, H), ``b`` (G·H,) and an optional recurrent bias ``b_r`` (G·H,), for an
LSTM optionally a projection ``W_hr`` (P, H) (then W is (G·H, P): LSTMP, made
by ``proj_size=P``), plus the name of its cell and the number of heads of a
block-diagonal W (``heads``; W is then (G·H, H/heads), or (G·H, P/heads) with a
projection) as static metadata (a pytree with only the arrays as leaves, so
``jax.grad``, optax and ``jit`` see arrays alone).

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
import numpy as np

from jrnn import _checks, cells, linear, recurrence
from jrnn import dropout as _dropout

__all__ = ["Layer", "Stack", "RECURRENT_INITS", "init_layer", "run_layer", "init_stack",
           "run_stack", "output_size", "check_proj_size",
           "step_stack", "step_weights", "zero_states", "hidden_of", "reverse_resets"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One direction of one recurrent layer.

    A_t = x_t Uᵀ + b and R_t = h_{t−1} Wᵀ + b_r feed the pointwise cell. With
    ``W_hr`` (LSTMP) the emitted and fed-back h_t is the cell's h-output times
    W_hrᵀ: h_t = (o_t ⊙ tanh c_t) W_hrᵀ, of width P = ``output_size``.
    """

    U: jax.Array                      # (G·H, D)
    W: jax.Array                      # (G·H, H), or (G·H, P) with W_hr
    b: Optional[jax.Array]            # (G·H,), PyTorch's bias_ih; None: no bias
    b_r: Optional[jax.Array] = None   # (G·H,), PyTorch's bias_hh
    cell: str = "elman"               # static: a registered cell name
    cell_params: Any = None           # the cell's own parameters (layer-normalised cells)
    W_hr: Optional[jax.Array] = None  # (P, H), PyTorch's weight_hr: LSTMP's projection
    heads: int = 1                    # static: NH, W block-diagonal (G·H, H/NH or P/NH); 1: dense

    @property
    def hidden_size(self) -> int:
        """H, the width of the cell's state (the LSTM's c)."""
        return self.W.shape[1] * self.heads if self.W_hr is None else self.W_hr.shape[1]

    @property
    def output_size(self) -> int:
        """The width of the emitted h: P with a projection, else H."""
        return self.W.shape[1] * self.heads

    @property
    def proj_size(self) -> int:
        """P with a projection, 0 without (PyTorch's ``proj_size``)."""
        return 0 if self.W_hr is None else self.W_hr.shape[0]

    @property
    def input_size(self) -> int:
        return self.U.shape[1]


jax.tree_util.register_dataclass(Layer, data_fields=["U", "W", "b", "b_r", "cell_params",
                                                   "W_hr"],
                                 meta_fields=["cell", "heads"])

Stack = tuple  # tuple[tuple[Layer, ...], ...]: layers, then directions


RECURRENT_INITS = ("uniform", "orthogonal")


def init_layer(key, cell: str, input_size: int, hidden_size: int, *, bias: Optional[bool] = None,
               recurrent_bias: Optional[bool] = None, recurrent_init: str = "uniform",
               forget_bias: Optional[float] = None, proj_size: int = 0, heads: int = 1,
               dtype=jnp.float32) -> Layer:
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
      forget_bias: LSTM and sLSTM only: the forget gate's block of ``b`` (Gers et
        al. 2000; Jozefowicz et al. 2015 use 1.0; Beck et al. 2024 start the sLSTM's
        higher), with ``b_r``'s block at zero, so that the cell starts out remembering.
      proj_size: P, 0 < P < H, for an LSTM with a projection (LSTMP, Sak et al.
        2014; PyTorch's ``proj_size``): the layer gets ``W_hr`` (P, H), its W is
        (G·H, P), and it emits and feeds back h_t = (o_t ⊙ tanh c_t) W_hrᵀ. 0:
        none. Cells: :func:`jrnn.recurrence.projectable_cells`.
      heads: NH dividing H: a block-diagonal recurrent matrix, per gate NH blocks
        of (H/NH, H/NH) (multi-head recurrence; Beck et al. 2024), stored as W
        (G·H, H/NH) (:func:`jrnn.rnn`'s ``heads``). 1: dense. Every block is
        uniform in ±1/√H like the dense W (orthogonal per block with
        ``recurrent_init="orthogonal"``). With ``proj_size`` P (NH dividing P too)
        the blocks are (H/NH, P/NH): each head's gates read its own P/NH units of
        the projected h, W is (G·H, P/NH), and W_hr stays dense.
    """
    spec = cells.get(cell)
    key = _checks.key("key", key)
    _checks.size("input_size", input_size)
    _checks.size("hidden_size", hidden_size)
    if recurrent_init not in RECURRENT_INITS:
        raise ValueError(f"recurrent_init: expected one of {RECURRENT_INITS}, "
                         f"got {recurrent_init!r}")
    if forget_bias is not None and spec.name not in ("lstm", "slstm"):
        raise ValueError(f"forget_bias: only the LSTM and the sLSTM have a forget gate (their "
                         f"gate order puts it second), got cell {spec.name!r}")
    P = check_proj_size(proj_size, spec.name, hidden_size)
    heads = recurrence.check_heads(heads)
    if hidden_size % heads:
        raise ValueError(f"heads: expected a divisor of hidden_size = {hidden_size}, got {heads}")
    if P % heads:
        raise ValueError(f"heads: with a projection each head reads its own proj_size/heads "
                         f"units of h, so heads must divide proj_size = {P}; got {heads}")
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
    width = (P or H) // heads  # what each row of W reads: h, or its own head of h
    if recurrent_init == "orthogonal":
        rows = H // heads
        blocks = jax.vmap(lambda k: jax.nn.initializers.orthogonal()(k, (rows, width), dtype))(
            jax.random.split(kW, G * heads))
        W = blocks.reshape(G * H, width)
    else:
        W = uniform(kW, (G * H, width))
    b = uniform(kb, (G * H,)) if bias else None
    b_r = uniform(kr, (G * H,)) if bias and recurrent_bias else None
    if forget_bias is not None:
        if b is None:
            raise ValueError("forget_bias: needs bias=True")
        b = b.at[H:2 * H].set(forget_bias)  # the gate order is i, f, g, o (sLSTM: i, f, z, o)
        b_r = None if b_r is None else b_r.at[H:2 * H].set(0)
    cell_params = None if spec.init_params is None else spec.init_params(kr, H, dtype)
    W_hr = uniform(jax.random.fold_in(kW, 1), (P, H)) if P else None
    return Layer(U=uniform(kU, (G * H, input_size)), W=W, b=b, b_r=b_r, cell=spec.name,
                 cell_params=cell_params, W_hr=W_hr, heads=heads)


def check_proj_size(proj_size, cell: str, hidden_size: int) -> int:
    """``proj_size`` as an int: 0 (no projection), or 0 < P < hidden_size for a cell
    that takes a projection."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size: expected an int (0 for no projection), got "
                        f"{type(proj_size).__name__}")
    if proj_size == 0:
        return 0
    if not cells.get(cell).projectable:
        raise ValueError(f"proj_size: a projection needs a cell whose h_(t-1) enters only "
                         f"through the recurrent product ({', '.join(recurrence.projectable_cells())}"
                         f"), got cell {cell!r} with proj_size={proj_size}")
    if not 0 < proj_size < hidden_size:
        raise ValueError(f"proj_size: expected 0 < proj_size < hidden_size = {hidden_size} "
                         f"(0 for no projection, as in PyTorch), got {proj_size}")
    return int(proj_size)


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
_LINEAR_DEFAULTS = {"matmul_dtype": None, "kernel": "auto",
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
                          cell_params=layer.cell_params, W_hr=layer.W_hr, heads=layer.heads,
                          **options)


def init_stack(key, cell: str, input_size: int, hidden_size: int, *, num_layers: int = 1,
               bidirectional: bool = False, dtype=jnp.float32, **layer_options) -> Stack:
    """``num_layers`` layers of one or two directions, all of hidden size H.

    ``layer_options`` go to :func:`init_layer` for every layer: ``bias``,
    ``recurrent_bias``, ``recurrent_init``, ``forget_bias``, ``heads``, ``proj_size`` (then
    layer l > 0 reads directions·P features).
    """
    key = _checks.key("key", key)
    _checks.size("num_layers", num_layers)
    _checks.size("input_size", input_size)
    _checks.size("hidden_size", hidden_size)
    directions = 2 if bidirectional else 1
    width = check_proj_size(layer_options.get("proj_size", 0), cells.get(cell).name,
                            hidden_size) or hidden_size
    keys = jax.random.split(key, num_layers * directions).reshape(num_layers, directions)
    return tuple(
        tuple(init_layer(keys[l, d], cell, input_size if l == 0 else directions * width,
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
            H, P = stack[0][0].hidden_size, stack[0][0].output_size
            if (part.hidden_size, part.output_size) != (H, P):
                _checks.fail_shape(f"stack[{l}][{d}].W", f"(G·{H}, {P}): one hidden size "
                                   "(and projection) for the whole stack", part.W.shape)
            if l > 0 and part.input_size != directions * P:
                _checks.fail_shape(f"stack[{l}][{d}].U", f"(G·H, {directions * P}): layer "
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
    """The layer with DropConnect applied, its input, and jrnn.rnn's noise arguments (a
    linear cell: its input alone; :func:`jrnn.dropout.check_cell` refuses the rest)."""
    spec = cells.get(part.cell)
    _dropout.check_cell(dropout, spec)
    noise = _dropout.layer_noise(
        dropout, None if key is None else _fold(key, l, d), training,
        cell=cells.get(part.cell), num_steps=x.shape[0], batch_shape=x.shape[1:-1],
        input_size=x.shape[-1], W=part.W, hidden_size=part.output_size,
        cell_size=part.hidden_size)
    if noise.weight_mask is not None:
        part = dataclasses.replace(part, W=part.W * noise.weight_mask)
    if noise.input_mask is not None:
        x = x * noise.input_mask[None]
    if spec.driver == "linear":
        return part, x, {}
    return part, x, dict(recurrent_mask=noise.recurrent_mask, zoneout=noise.zoneout)


def zero_states(stack: Stack, batch_shape: Sequence[int] = ()) -> tuple:
    """Zero initial states nested like the stack, each of shape (*batch_shape, H)
    (h of shape (*batch_shape, P) with a projection)."""
    def zero(part: Layer):
        spec = cells.get(part.cell)
        if spec.driver == "linear":
            return jnp.zeros(tuple(batch_shape) + (part.hidden_size,), part.W.dtype)
        widths = (part.output_size,) + (part.hidden_size,) * (spec.carry_size - 1)
        return spec.from_carry(tuple(jnp.zeros(tuple(batch_shape) + (n,), part.W.dtype)
                                     for n in widths))
    return tuple(tuple(zero(part) for part in layer) for layer in stack)


def output_size(stack: Stack) -> int:
    """The width of the stack's outputs: directions · (P or H) of its top layer."""
    return len(stack[-1]) * stack[-1][0].output_size


def hidden_of(cell: str, state) -> jax.Array:
    """The hidden state h of a cell's public state (an array, or LSTM's (h, c))."""
    spec = cells.get(cell)
    return state if spec.driver == "linear" else spec.to_carry(state)[0]


def step_weights(stack: Stack) -> tuple:
    """Each layer's weights arranged once for :func:`step_stack`: per layer ``(Uᵀ, Wᵀ,
    W_hrᵀ)`` ((D, G·H), W as :func:`jrnn.recurrence.arranged` makes it, (H, P) or None).

    A generation loop computes them before the loop and passes them to every step: XLA:CPU
    multiplies x (B, D) by a (D, G·H) matrix faster than by the stored (G·H, D) one, which
    it would otherwise repack at every step (benchmarks/NOTES.md).
    """
    def arrange(part):
        spec = cells.get(part.cell)
        if spec.driver == "linear":
            return None
        return (part.U.T, recurrence.arranged(part.W, spec.gates, part.heads),
                None if part.W_hr is None else part.W_hr.T)
    return tuple(arrange(part) for (part,) in stack)


def step_stack(stack: Stack, states, x, dropout: Optional[_dropout.Dropout] = None,
               weights: Optional[tuple] = None):
    """One time step of a unidirectional stack, for generation.

    ``states[l]`` is layer l's state (B, H) (LSTM: its ``(h, c)``); x (B, D).
    Returns the new states and the top layer's h (B, H). The same pointwise
    cells as the scan, so sampling follows exactly the trained equations;
    with ``dropout``, in evaluation mode as :func:`run_stack` with
    ``training=False``: zoneout's expectation p ⊙ carry_{t−1} + (1 − p) ⊙ carry_t,
    every other kind of noise off. ``weights``: :func:`step_weights` of the stack, computed
    once before a loop of steps (None: computed here).
    """
    if _check_stack(stack) != 1:
        raise ValueError("stack: step_stack runs left to right one step at a time, so it "
                         "needs a unidirectional stack; got a bidirectional one")
    weights = step_weights(stack) if weights is None else weights
    new_states = []
    for (part,), state, transposed in zip(stack, states, weights):
        spec = cells.get(part.cell)
        if spec.driver == "linear":
            x = linear.linear_step(part.cell, part.U, part.b, x, state, part.cell_params)
            new_states.append(x)
            continue
        carry = tuple(spec.to_carry(state))
        U_t, W_t, W_hr_t = transposed
        A = recurrence.gate_affine(x, U_t, part.b, spec.gates)
        R = (recurrence.gate_affine(carry[0], W_t, part.b_r, spec.gates) if part.heads == 1 else
             recurrence.gate_blocks(recurrence.recurrent(carry[0], W_t, part.b_r, spec.gates,
                                                         part.heads, transposed=True),
                                    spec.gates))
        new, _ = spec.step(A, R, carry, part.cell_params)
        if W_hr_t is not None:  # LSTMP: the emitted h is the projected one
            new = (recurrence.affine_t(new[0], W_hr_t),) + tuple(new[1:])
        rates = () if dropout is None else _dropout.zoneout_rates(dropout, spec)
        if any(rates):
            new = tuple(p * c + (1 - p) * n for p, c, n in zip(rates, carry, new))
        carry = new
        new_states.append(spec.from_carry(carry))
        x = carry[0]
    return tuple(new_states), x
