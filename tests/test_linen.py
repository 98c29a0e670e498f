"""jrnn.linen: Linen's cells converted exactly; the module equals functional jrnn; training.

float64, 1e-10 relative: valid outputs, the carry with ``seq_lengths``, every
parameter's gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nn = pytest.importorskip("flax.linen", reason="flax is an optional extra: pip install jrnn[flax]")
optax = pytest.importorskip("optax")

import jrnn.linen  # noqa: E402
from jrnn import cells, layers  # noqa: E402
from adapter_helpers import (B, F64, H, LENGTHS, T, assert_layer_grads_match,  # noqa: E402
                             initial_state, loss_of, problem, randomize)
from helpers import rel_error  # noqa: E402

KINDS = ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"]


@pytest.mark.parametrize("kind", KINDS)
def test_converted_linen_cell_gives_the_same_outputs_and_gradients(kind):
    flax_rnn = nn.RNN(getattr(nn, kind)(features=H, param_dtype=F64), return_carry=True)
    xs, valid, w_out, w_h, w_c = problem()
    params = randomize(flax_rnn.init(jax.random.key(0), xs))
    module, twin_params = jrnn.linen.from_flax(flax_rnn, params)
    name = module.cell
    state0, lengths = initial_state(name), jnp.asarray(LENGTHS)
    flax_state0 = (state0.c, state0.h) if name == "lstm" else state0

    def flax_loss(params):
        carry, ys = flax_rnn.apply(params, xs, initial_carry=flax_state0, seq_lengths=lengths)
        h, c = (carry[1], carry[0]) if name == "lstm" else (carry, None)
        return loss_of(ys, h, c, valid, w_out, w_h, w_c), (ys, h, c)

    def jrnn_loss(params):
        carry, ys = module.apply(params, xs, initial_carry=state0, seq_lengths=lengths)
        h, c = (carry.h, carry.c) if name == "lstm" else (carry, None)
        return loss_of(ys, h, c, valid, w_out, w_h, w_c), (ys, h, c)

    (J_f, (ys_f, *carry_f)), g_f = jax.value_and_grad(flax_loss, has_aux=True)(params)
    (J_j, (ys_j, *carry_j)), g_j = jax.jit(jax.value_and_grad(jrnn_loss, has_aux=True))(
        twin_params)
    assert rel_error(J_j, J_f) <= 1e-10
    mask = valid[..., None]
    assert rel_error(jnp.where(mask, ys_j, 0), jnp.where(mask, ys_f, 0)) <= 1e-10
    assert rel_error(carry_j, carry_f) <= 1e-10
    grad_twin = layers.Layer(**g_j["params"]["l0"], cell=name)
    assert_layer_grads_match(grad_twin, jrnn.linen.layer_from_params(flax_rnn.cell, g_f))

    # Back to Linen: exactly the original parameters.
    _, back = jrnn.linen.to_flax(module, twin_params, kind)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stacked_bidirectional_module_and_its_training_step_equal_functional_jrnn():
    model = jrnn.linen.LSTM(features=H, num_layers=2, bidirectional=True, return_carry=True,
                            param_dtype=F64, forget_bias=1.0)
    xs = problem()[0]
    ys = jnp.arange(B) % 3
    lengths = jnp.asarray(LENGTHS)
    params = model.init(jax.random.key(0), xs)
    stack = tuple(tuple(layers.Layer(**params["params"][f"l{l}" + ("_reverse" if d else "")],
                                     cell="lstm") for d in range(2)) for l in range(2))
    head = jax.random.normal(jax.random.key(1), (2 * H, 3), F64)

    def linen_loss(params, head):
        carry, _ = model.apply(params, xs, seq_lengths=lengths)
        features = jnp.concatenate([carry[-1][0].h, carry[-1][1].h], axis=-1)
        return optax.softmax_cross_entropy_with_integer_labels(features @ head, ys).mean()

    def functional_loss(stack, head):
        _, finals = layers.run_stack(stack, jnp.swapaxes(xs, 0, 1), lengths=lengths)
        features = jnp.concatenate([finals[-1][0].h, finals[-1][1].h], axis=-1)
        return optax.softmax_cross_entropy_with_integer_labels(features @ head, ys).mean()

    tx = optax.sgd(0.1, momentum=0.9)

    def step(loss, params, state):
        grads = jax.grad(loss, argnums=(0, 1))(*params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    a, b = (params, head), (stack, head)
    sa, sb = tx.init(a), tx.init(b)
    for _ in range(2):
        a, sa = step(linen_loss, a, sa)
        b, sb = step(functional_loss, b, sb)
    assert rel_error(jrnn.linen.stack_to_params(b[0]), a[0]["params"]) <= 1e-10
    assert rel_error(a[1], b[1]) <= 1e-10


def test_wrong_use_is_named():
    model = jrnn.linen.GRU(features=H, param_dtype=F64)
    xs = problem()[0]
    params = model.init(jax.random.key(0), xs)
    with pytest.raises(ValueError, match=r"inputs: expected shape \(\.\.\., 4\): the last axis "
                                         r"is in_features = 4, got \(3, 5, 2\)"):
        model.apply(params, jnp.ones((B, T, 2), F64))
    with pytest.raises(ValueError, match=r"seq_lengths: expected values in \[0, 5\]"):
        model.apply(params, xs, seq_lengths=jnp.array([5, -1, 2]))
    for cell in (nn.MGUCell(features=H), nn.ConvLSTMCell(features=H, kernel_size=(3,))):
        with pytest.raises(TypeError, match=rf"cell: expected one of Flax's LSTMCell, "
                                            rf".*got {type(cell).__name__}"):
            jrnn.linen.layer_from_params(cell, {})
    with pytest.raises(ValueError, match=r"cell.gate_fn: .* uses sigmoid, got 'hard_sigmoid'"):
        jrnn.linen.layer_from_params(nn.LSTMCell(features=H, gate_fn=jax.nn.hard_sigmoid), {})
    assert cells.names()  # the registry is untouched by the adapters
