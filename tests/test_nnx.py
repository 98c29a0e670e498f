"""jrnn.nnx: Flax NNX's cells converted exactly; modules equal functional jrnn; training.

Equality is float64 at 1e-10 relative: outputs on the valid steps, the final
carry with ``seq_lengths``, and the gradient of every parameter.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx", reason="flax is an optional extra: pip install jrnn[flax]")
optax = pytest.importorskip("optax")

import jrnn.nnx  # noqa: E402
from jrnn import cells, layers  # noqa: E402
from adapter_helpers import (B, D, F64, H, LENGTHS, T, assert_layer_grads_match,  # noqa: E402
                             initial_state, loss_of, problem, randomize)
from helpers import rel_error  # noqa: E402

KINDS = ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"]


def flax_cell(kind):
    cell = getattr(nnx, kind)(D, H, param_dtype=F64, dtype=F64, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(cell, nnx.Param)
    return nnx.merge(graphdef, randomize(params))  # nonzero biases everywhere


def flax_carry(state):
    return (state.c, state.h) if isinstance(state, cells.LSTMState) else state


def split_carry(carry):
    """(h, c) of a jrnn carry; c is None for one-array states."""
    return (carry.h, carry.c) if isinstance(carry, cells.LSTMState) else (carry, None)


@pytest.mark.parametrize("kind", KINDS)
def test_converted_flax_cell_gives_the_same_outputs_and_gradients(kind):
    cell = flax_cell(kind)
    twin = jrnn.nnx.from_flax(nnx.RNN(cell, return_carry=True))
    xs, valid, w_out, w_h, w_c = problem()
    name = twin.stack[0][0].cell
    state0, lengths = initial_state(name), jnp.asarray(LENGTHS)

    def flax_loss(cell):
        carry, ys = nnx.RNN(cell, return_carry=True)(
            xs, initial_carry=flax_carry(state0), seq_lengths=lengths)
        h, c = (carry[1], carry[0]) if name == "lstm" else (carry, None)
        return loss_of(ys, h, c, valid, w_out, w_h, w_c), (ys, h, c)

    def jrnn_loss(module):
        carry, ys = module(xs, initial_carry=state0, seq_lengths=lengths)
        h, c = split_carry(carry)
        return loss_of(ys, h, c, valid, w_out, w_h, w_c), (ys, h, c)

    (J_f, (ys_f, h_f, c_f)), g_f = nnx.value_and_grad(flax_loss, has_aux=True)(cell)
    (J_j, (ys_j, h_j, c_j)), g_j = nnx.jit(nnx.value_and_grad(jrnn_loss, has_aux=True))(twin)
    assert rel_error(J_j, J_f) <= 1e-10
    assert rel_error(jnp.where(valid[..., None], ys_j, 0),
                     jnp.where(valid[..., None], ys_f, 0)) <= 1e-10
    assert rel_error((h_j, c_j), (h_f, c_f)) <= 1e-10
    grad_cell, grad_twin = nnx.clone(cell), nnx.clone(twin)
    nnx.update(grad_cell, g_f)
    nnx.update(grad_twin, g_j)
    assert_layer_grads_match(grad_twin.stack[0][0], jrnn.nnx.layer_from_cell(grad_cell))


@pytest.mark.parametrize("kind", KINDS)
def test_conversion_round_trips_exactly(kind):
    cell = flax_cell(kind)
    back = jrnn.nnx.to_flax(jrnn.nnx.from_flax(nnx.RNN(cell)), kind).cell
    for a, b in zip(jax.tree.leaves(nnx.state(cell, nnx.Param)),
                    jax.tree.leaves(nnx.state(back, nnx.Param)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_jrnn_layer_with_both_biases_converts_to_flax_with_the_same_function():
    """b_r outside r ⊙ (·) is folded into Flax's one bias (LSTM); the GRU's n block
    of b_r, which NNX's GRUCell has no place for, is refused."""
    layer = randomize(layers.init_layer(jax.random.key(0), "lstm", D, H, recurrent_bias=True,
                                        dtype=F64))
    xs = problem()[0]
    ys_j = jrnn.nnx.from_flax(jrnn.nnx.cell_from_layer(layer))  # through Flax and back
    stack_ys = layers.run_stack(((layer,),), jnp.swapaxes(xs, 0, 1))[0]
    assert rel_error(ys_j(xs), jnp.swapaxes(stack_ys, 0, 1)) <= 1e-14
    gru = layers.init_layer(jax.random.key(0), "gru", D, H, dtype=F64)
    with pytest.raises(ValueError, match=r"layer.b_r: flax.nnx.GRUCell has no recurrent bias"):
        jrnn.nnx.cell_from_layer(gru)


@pytest.mark.parametrize("bidirectional,time_major", [(True, False), (False, True)])
def test_stacked_module_equals_functional_jrnn(bidirectional, time_major):
    module = jrnn.nnx.GRU(D, H, num_layers=2, bidirectional=bidirectional,
                          time_major=time_major, return_carry=True, param_dtype=F64,
                          rngs=nnx.Rngs(3))
    stack = module.stack
    xs = problem()[0]
    inputs = jnp.swapaxes(xs, 0, 1) if time_major else xs
    lengths = jnp.asarray(LENGTHS)

    def via_module(m):
        carry, ys = m(inputs, seq_lengths=lengths)
        return jnp.sum(ys ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(carry))

    def functional(stack):
        ys, finals = layers.run_stack(stack, jnp.swapaxes(xs, 0, 1), lengths=lengths)
        return jnp.sum(ys ** 2) + sum(jnp.sum(s) for s in jax.tree.leaves(finals))

    g_module = nnx.grad(via_module)(module)
    twin = nnx.clone(module)
    nnx.update(twin, g_module)
    assert rel_error(via_module(module), functional(stack)) <= 1e-12
    assert rel_error(twin.stack, jax.grad(functional)(stack)) <= 1e-10


def test_training_step_with_nnx_optimizer_equals_the_functional_step():
    xs, _, _, _, _ = problem()
    ys = jnp.arange(B) % 3

    class Classifier(nnx.Module):
        def __init__(self, rngs):
            self.rnn = jrnn.nnx.LSTM(D, H, return_carry=True, param_dtype=F64, rngs=rngs)
            self.head = nnx.Linear(H, 3, param_dtype=F64, rngs=rngs)

        def __call__(self, xs, lengths):
            carry, _ = self.rnn(xs, seq_lengths=lengths)
            return self.head(carry.h)

    def nll(logits, ys):
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    model = Classifier(nnx.Rngs(0))
    stack, head = model.rnn.stack, (model.head.kernel[...], model.head.bias[...])
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xs, ys, lengths):
        loss, grads = nnx.value_and_grad(lambda m: nll(m(xs, lengths), ys))(model)
        optimizer.update(model, grads)
        return loss

    def functional_loss(params, xs, ys, lengths):
        stack, (kernel, bias) = params
        _, finals = layers.run_stack(stack, jnp.swapaxes(xs, 0, 1), lengths=lengths)
        return nll(finals[0][0].h @ kernel + bias[None], ys)

    tx = optax.adam(1e-2)
    params, opt_state = (stack, head), tx.init((stack, head))
    for _ in range(2):  # optax's bias correction raises a float to an int32 power
        with jax.numpy_dtype_promotion("standard"):
            step(model, optimizer, xs, ys, jnp.asarray(LENGTHS))
            grads = jax.grad(functional_loss)(params, xs, ys, jnp.asarray(LENGTHS))
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
    assert rel_error((model.rnn.stack, (model.head.kernel[...], model.head.bias[...])),
                     params) <= 1e-10


def test_wrong_use_is_named():
    module = jrnn.nnx.LSTM(D, H, param_dtype=F64, rngs=nnx.Rngs(0))
    xs = problem()[0]
    with pytest.raises(ValueError, match=r"inputs: expected shape \(\.\.\., 4\): the last axis "
                                         r"is in_features = 4, got \(3, 5, 7\)"):
        module(jnp.ones((B, T, 7), F64))
    with pytest.raises(ValueError, match=r"seq_lengths: expected values in \[0, 5\].*"
                                         r"got values in \[1, 9\]"):
        module(xs, seq_lengths=jnp.array([9, 3, 1]))
    with pytest.raises(TypeError, match=r"initial_carry: expected jrnn.cells.LSTMState\(h, c\)"):
        module(xs, initial_carry=(jnp.zeros((B, H), F64),) * 2)
    class PeepholeLSTMCell(nnx.LSTMCell):  # a user's cell: its equations are unknown
        pass

    with pytest.raises(TypeError, match=r"cell: expected one of Flax's LSTMCell, "
                                        r"OptimizedLSTMCell, GRUCell, SimpleCell, "
                                        r"got PeepholeLSTMCell"):
        jrnn.nnx.from_flax(PeepholeLSTMCell(D, H, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"got Linear"):
        jrnn.nnx.from_flax(nnx.Linear(D, H, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"cell.residual"):
        jrnn.nnx.layer_from_cell(nnx.SimpleCell(D, H, residual=True, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"cell.activation_fn: .* uses tanh, got 'relu'"):
        jrnn.nnx.layer_from_cell(nnx.SimpleCell(D, H, activation_fn=jax.nn.relu,
                                                rngs=nnx.Rngs(0)))
