"""jrnn.equinox: Equinox's cells converted exactly; filter transforms; training.

The reference is what an Equinox user writes: the cell under ``lax.scan``,
vmapped over the batch, with the state held past each sequence's length.
float64, 1e-10 relative.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox", reason="equinox is an optional extra: "
                                            "pip install jrnn[equinox]")
optax = pytest.importorskip("optax")

import jrnn.equinox  # noqa: E402
from jrnn import cells, layers  # noqa: E402
from adapter_helpers import (B, D, F64, H, LENGTHS, T, assert_layer_grads_match,  # noqa: E402
                             initial_state, loss_of, problem, randomize)
from helpers import rel_error  # noqa: E402


def scan_cell(cell, xs, state0, length):
    """One sequence (T, D) through an Equinox cell; the state stops at ``length``."""
    def step(state, inputs):
        x, t = inputs
        new = cell(x, state)
        new = jax.tree.map(lambda a, b: jnp.where(t < length, a, b), new, state)
        h = new[0] if isinstance(new, tuple) else new
        return new, jnp.where(t < length, h, 0)
    return jax.lax.scan(step, state0, (xs, jnp.arange(xs.shape[0])))


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_converted_equinox_cell_gives_the_same_outputs_and_gradients(kind):
    cell = getattr(eqx.nn, kind)(D, H, dtype=F64, key=jax.random.key(0))
    cell = eqx.tree_at(lambda c: c.bias, cell, randomize(cell.bias, seed=2))
    twin = jrnn.equinox.from_equinox(cell, return_carry=True)
    name = twin.stack[0][0].cell
    xs, valid, w_out, w_h, w_c = problem()
    state0, lengths = initial_state(name), jnp.asarray(LENGTHS)
    eqx_state0 = (state0.h, state0.c) if name == "lstm" else state0

    def eqx_loss(cell):
        carry, ys = jax.vmap(scan_cell, in_axes=(None, 0, 0, 0))(cell, xs, eqx_state0, lengths)
        h, c = carry if name == "lstm" else (carry, None)
        return loss_of(ys, h, c, valid, w_out, w_h, w_c), (ys, h, c)

    def jrnn_loss(module):
        carry, ys = module(xs, initial_carry=state0, seq_lengths=lengths)
        h, c = (carry.h, carry.c) if name == "lstm" else (carry, None)
        return loss_of(ys, h, c, valid, w_out, w_h, w_c), (ys, h, c)

    (J_e, aux_e), g_e = eqx.filter_value_and_grad(eqx_loss, has_aux=True)(cell)
    (J_j, aux_j), g_j = eqx.filter_jit(eqx.filter_value_and_grad(jrnn_loss, has_aux=True))(twin)
    assert rel_error(J_j, J_e) <= 1e-10
    assert rel_error(aux_j, aux_e) <= 1e-10  # every output (zeros past the length), carry
    assert_layer_grads_match(g_j.stack[0][0], jrnn.equinox.layer_from_cell(g_e))

    back = jrnn.equinox.to_equinox(twin)  # exactly the original arrays
    for a, b in zip(jax.tree.leaves(cell), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unbatched_calls_vmap_to_the_batched_call():
    module = jrnn.equinox.LSTM(D, H, num_layers=2, dtype=F64, key=jax.random.key(0))
    xs = problem()[0]
    assert rel_error(jax.vmap(module)(xs), module(xs)) <= 1e-12


def test_training_step_with_filter_transforms_equals_the_functional_step():
    module = jrnn.equinox.GRU(D, H, bidirectional=True, time_major=True, dtype=F64,
                              key=jax.random.key(0))
    module = eqx.tree_at(lambda m: m.stack[0][0].b, module, jnp.zeros(3 * H, F64))
    xs = jnp.swapaxes(problem()[0], 0, 1)  # (T, B, D)
    lengths = jnp.asarray(LENGTHS)
    target = jax.random.normal(jax.random.key(3), (T, B, 2 * H), F64)

    def loss(stack_or_module, xs):
        ys = (stack_or_module(xs, seq_lengths=lengths) if isinstance(stack_or_module, eqx.Module)
              else layers.run_stack(stack_or_module, xs, lengths=lengths)[0])
        return jnp.mean((ys - target) ** 2)

    tx = optax.sgd(0.05, momentum=0.9)

    @eqx.filter_jit
    def step(model, state, xs):
        grads = eqx.filter_grad(loss)(model, xs)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state

    stack = module.stack
    m_state, s_state = tx.init(eqx.filter(module, eqx.is_array)), tx.init(stack)
    for _ in range(2):
        module, m_state = step(module, m_state, xs)
        updates, s_state = tx.update(jax.grad(loss)(stack, xs), s_state, stack)
        stack = optax.apply_updates(stack, updates)
    assert rel_error(module.stack, stack) <= 1e-10


def test_wrong_use_is_named():
    module = jrnn.equinox.LSTM(D, H, dtype=F64, key=jax.random.key(0))
    xs = problem()[0]
    with pytest.raises(ValueError, match=r"inputs: expected shape \(\.\.\., 4\): the last axis "
                                         r"is in_features = 4, got \(3, 5, 3\)"):
        module(jnp.ones((B, T, 3), F64))
    with pytest.raises(ValueError, match=r"seq_lengths: expected values in \[0, 5\].*"
                                         r"got values in \[0, 6\]"):
        module(xs, seq_lengths=jnp.array([6, 0, 2]))
    with pytest.raises(TypeError, match=r"inputs: expected dtype float64 .*got float32"):
        module(jnp.ones((B, T, D), jnp.float32))
    with pytest.raises(ValueError, match=r"initial_carry: expected shape \(3, 6\), got \(3, 5\)"):
        module(xs, initial_carry=cells.LSTMState(*jnp.zeros((2, B, 5), F64)))
    with pytest.raises(TypeError, match=r"cell: expected eqx.nn.LSTMCell or eqx.nn.GRUCell, "
                                        r"got Linear"):
        jrnn.equinox.layer_from_cell(eqx.nn.Linear(D, H, key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"layer: Equinox has no cell for jrnn's 'elman'"):
        jrnn.equinox.cell_from_layer(layers.init_layer(jax.random.key(0), "elman", D, H))
