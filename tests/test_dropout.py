"""Regularisation (jrnn.dropout): what each kind of noise does to the forward pass.

The gradients through every kind, in every architecture, are checked against
autodiff by the descriptor table (jrnn/gradcheck.py: the *-dropout* and
*-zoneout* rows, run by tests/test_architectures.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import dropout as jd
from jrnn import layers
from helpers import rel_error

T, B, D, H = 6, 3, 4, 5


def _stack(cell, num_layers=1, bidirectional=False):
    return layers.init_stack(jax.random.key(0), cell, D, H, num_layers=num_layers,
                             bidirectional=bidirectional, dtype=jnp.float64)


XS = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
KEY = jax.random.key(2)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_evaluation_without_zoneout_is_the_plain_stack(cell):
    stack = _stack(cell, num_layers=2)
    plain, _ = layers.run_stack(stack, XS)
    noisy = jd.Dropout(input=0.5, recurrent=0.5, weight=0.5, between=0.5)
    evaluated, _ = layers.run_stack(stack, XS, dropout=noisy, training=False)
    trained, _ = layers.run_stack(stack, XS, dropout=noisy, key=KEY, training=True)
    assert rel_error(evaluated, plain) == 0
    assert rel_error(trained, plain) > 1e-2  # training does draw masks


def test_zero_rates_in_training_are_the_plain_stack():
    stack = _stack("lstm", num_layers=2, bidirectional=True)
    plain, _ = layers.run_stack(stack, XS)
    trained, _ = layers.run_stack(stack, XS, dropout=jd.Dropout(), key=KEY, training=True)
    assert rel_error(trained, plain) == 0


def test_stack_draws_the_masks_that_the_driver_applies():
    """run_stack's recurrent dropout is jrnn.rnn with the mask layer_noise draws."""
    (layer,), = _stack("gru")
    cfg = jd.Dropout(recurrent=0.4, input=0.3, weight=0.2)
    out, _ = layers.run_stack(((layer,),), XS, dropout=cfg, key=KEY, training=True)
    noise = jd.layer_noise(cfg, jax.random.fold_in(jax.random.fold_in(KEY, 0), 0), True,
                           cell=jrnn.cells.get("gru"), num_steps=T, batch_shape=(B,),
                           input_size=D, W=layer.W)
    expected, _ = jrnn.rnn("gru", layer.U, layer.W * noise.weight_mask, layer.b,
                           XS * noise.input_mask[None], b_r=layer.b_r,
                           recurrent_mask=noise.recurrent_mask)
    assert rel_error(out, expected) == 0
    # One mask per sequence, scaled: entries are 0 or 1/(1 - p).
    values = np.unique(np.asarray(noise.recurrent_mask))
    assert set(np.round(values, 12)) <= {0.0, round(1 / 0.6, 12)} and len(values) == 2


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_a_linear_stack_takes_input_and_between_layer_dropout(cell):
    """A linear cell's input dropout is jrnn.linear.linear_rnn on the masked input (the mask
    layer_noise draws), between-layer dropout acts on the lower layer's outputs, and
    evaluation is the plain stack."""
    stack = _stack(cell, num_layers=2)
    cfg = jd.Dropout(input=0.3, between=0.4)
    out, _ = layers.run_stack(stack, XS, dropout=cfg, key=KEY, training=True)
    noise = [jd.layer_noise(cfg, jax.random.fold_in(jax.random.fold_in(KEY, l), 0), True,
                            cell=jrnn.cells.get(cell), num_steps=T, batch_shape=(B,),
                            input_size=stack[l][0].input_size, W=stack[l][0].W)
             for l in (0, 1)]
    (bottom,), (top,) = stack
    low, _ = jrnn.linear.linear_rnn(cell, bottom.U, bottom.b, XS * noise[0].input_mask[None])
    low = jd.between_layers(cfg, jax.random.fold_in(jax.random.fold_in(KEY, 0), 2), True, low)
    expected, _ = jrnn.linear.linear_rnn(cell, top.U, top.b, low * noise[1].input_mask[None])
    assert rel_error(out, expected) == 0
    plain, _ = layers.run_stack(stack, XS)
    assert rel_error(layers.run_stack(stack, XS, dropout=cfg, training=False)[0], plain) == 0
    assert rel_error(out, plain) > 1e-2


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_zoneout_keeping_every_unit_freezes_the_state(cell):
    (layer,), = _stack(cell)
    h0 = jax.tree.map(lambda a: a + 0.5, layers.zero_states(((layer,),), (B,))[0][0])
    ones = tuple(jnp.ones((T, B, H), jnp.float64) for _ in jax.tree.leaves(h0))
    hs, final = layers.run_layer(layer, XS, h0, zoneout=ones)
    assert rel_error(final, h0) == 0
    assert rel_error(hs, jnp.broadcast_to(jrnn.layers.hidden_of(cell, h0), hs.shape)) == 0
    zeros = tuple(jnp.zeros_like(z) for z in ones)
    assert rel_error(layers.run_layer(layer, XS, h0, zoneout=zeros)[0],
                     layers.run_layer(layer, XS, h0)[0]) == 0


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "layernorm_elman", "layernorm_gru",
                                  "layernorm_lstm", "slstm"])
def test_boolean_zoneout_masks_act_as_the_same_masks_in_floats(cell):
    """The driver selects with a boolean mask and mixes with a floating one: the same
    outputs and, by the hand-written backward, the same parameter and input gradients,
    which equal autodiff's. With boolean masks the tanh and GRU cells (plain and
    normalised) are handed the zoned carry for their own (Cell.vjp_reads_carry_pointwise),
    the LSTM recomputes its own (Cell.carry_from_extra), the others store it."""
    (layer,), = _stack(cell)
    n = len(jax.tree.leaves(layers.zero_states(((layer,),), (B,))[0][0]))
    masks = tuple(jax.random.bernoulli(k, 0.4, (T, B, H)) for k in jax.random.split(KEY, n))

    def loss(layer, xs, z, backward="manual"):
        hs, final = layers.run_layer(layer, xs, zoneout=z, backward=backward)
        return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(c ** 3) for c in jax.tree.leaves(final))
    as_bool = jax.value_and_grad(loss, argnums=(0, 1))(layer, XS, masks)
    as_float = jax.value_and_grad(loss, argnums=(0, 1))(
        layer, XS, tuple(m.astype(jnp.float64) for m in masks))
    autodiff = jax.value_and_grad(loss, argnums=(0, 1))(layer, XS, masks, "autodiff")
    assert rel_error(as_bool, as_float) < 1e-13
    assert rel_error(as_bool, autodiff) < 1e-10
    assert rel_error(as_bool[0], loss(layer, XS, None)) > 1e-3  # the masks act


def test_a_cell_recomputes_its_own_carry_from_what_it_stored():
    """Cell.carry_from_extra (the LSTM's, from its gates) gives the carry its step made."""
    cell = jrnn.cells.get("lstm")
    k = jax.random.split(KEY, 4)
    A, R = (tuple(jax.random.normal(kk, (B, H), jnp.float64) for kk in jax.random.split(k_, 4))
            for k_ in k[:2])
    carry_in = tuple(jax.random.normal(kk, (B, H), jnp.float64) for kk in k[2:])
    carry, extra = cell.step(A, R, carry_in)
    assert rel_error(cell.carry_from_extra(carry_in, extra), carry) < 1e-15


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "layernorm_lstm"])
def test_zoneout_in_evaluation_is_its_expectation(cell):
    """carry_t = p carry_{t−1} + (1 − p) cell(...), step by step with the cells' own step."""
    (layer,), = _stack(cell)
    spec = jrnn.cells.get(cell)
    p = (0.3, 0.2)[:spec.carry_size]
    hs, _ = layers.run_layer(layer, XS, zoneout=p)
    carry = (jnp.zeros((B, H), jnp.float64),) * spec.carry_size
    for t in range(T):
        A = jrnn.recurrence.gate_blocks(jrnn.recurrence.affine(XS[t], layer.U, layer.b),
                                        spec.gates)
        R = jrnn.recurrence.gate_blocks(jrnn.recurrence.affine(carry[0], layer.W, layer.b_r),
                                        spec.gates)
        new, _ = spec.step(A, R, carry, layer.cell_params)
        carry = tuple(q * c + (1 - q) * n for q, c, n in zip(p, carry, new))
        assert rel_error(hs[t], carry[0]) < 1e-14


@pytest.mark.parametrize("cell", ["gru", "layernorm_lstm"])
def test_a_generation_step_in_evaluation_is_the_stack_in_evaluation(cell):
    """step_stack(dropout=) follows run_stack(training=False): zoneout's expectation."""
    stack = _stack(cell, num_layers=2)
    cfg = jd.Dropout(zoneout=0.3, zoneout_cell=0.1, between=0.5, recurrent=0.5)
    hs, _ = layers.run_stack(stack, XS, dropout=cfg, training=False)
    states = layers.zero_states(stack, (B,))
    states = tuple(s for (s,) in states)
    for t in range(T):
        states, h = layers.step_stack(stack, states, XS[t], dropout=cfg)
        assert rel_error(h, hs[t]) < 1e-13
    plain = layers.run_stack(stack, XS)[0]
    assert rel_error(hs, plain) > 1e-2  # the expectation does change the recurrence


def test_no_dropout_between_after_the_top_layer():
    stack = _stack("elman")
    plain, _ = layers.run_stack(stack, XS)
    between, _ = layers.run_stack(stack, XS, dropout=jd.Dropout(between=0.9), key=KEY,
                                  training=True)
    assert rel_error(between, plain) == 0
    deep = _stack("elman", num_layers=2)
    assert rel_error(layers.run_stack(deep, XS, dropout=jd.Dropout(between=0.9), key=KEY,
                                      training=True)[0], layers.run_stack(deep, XS)[0]) > 1e-2


def test_a_legacy_uint32_key_draws_masks_too():
    stack = _stack("lstm", num_layers=2)
    cfg = jd.Dropout(recurrent=0.3, zoneout=0.2, between=0.2)
    out, _ = layers.run_stack(stack, XS, dropout=cfg, key=jax.random.PRNGKey(0), training=True)
    assert out.shape == (T, B, H) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(dropout=jd.Dropout(recurrent=1.0), key=KEY, training=True), r"dropout.recurrent: .*\[0, 1\)"),
    (dict(dropout=jd.Dropout(zoneout=-0.1), key=KEY, training=True), r"dropout.zoneout"),
    (dict(dropout=jd.Dropout(input=0.2), training=True), r"key: training with dropout"),
    (dict(dropout=jd.Dropout(input=0.2), key=KEY, training=1), r"training: expected True"),
    (dict(dropout={"input": 0.2}, key=KEY, training=True), r"dropout: expected jrnn.dropout"),
])
def test_bad_regularisation_is_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        layers.run_stack(_stack("elman"), XS, **kwargs)


def test_bad_masks_are_named():
    (layer,), = _stack("lstm")
    with pytest.raises(ValueError, match=r"recurrent_mask: expected shape \(3, 5\)"):
        layers.run_layer(layer, XS, recurrent_mask=jnp.ones((B, H + 1), jnp.float64))
    with pytest.raises(ValueError, match=r"zoneout: expected one entry per carry entry"):
        layers.run_layer(layer, XS, zoneout=(jnp.ones((T, B, H), jnp.float64),))
    with pytest.raises(ValueError, match=r"zoneout\[1\]: expected shape \(6, 3, 5\)"):
        layers.run_layer(layer, XS, zoneout=(jnp.ones((T, B, H), jnp.float64),
                                             jnp.ones((T, B), jnp.float64)))
    with pytest.raises(ValueError, match=r"zoneout: expected probabilities in \[0, 1\)"):
        layers.run_layer(layer, XS, zoneout=1.5)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_per_step_masks_have_the_quantised_probability(p):
    """Two units per random word: the share of ones is quantised(p) within 5 standard
    errors over 3·5·7·1001 units (an odd count: the last word's second half is unused),
    and neighbouring units (the two halves of a word) are uncorrelated."""
    shape = (3, 5, 7, 1001)
    ones = np.asarray(jd._per_step_bernoulli(jax.random.key(11), p, shape), np.float64)
    q, n = jd.quantised(p), ones.size
    assert abs(q - p) <= 2.0 ** -17
    assert abs(ones.mean() - q) <= 5 * np.sqrt(q * (1 - q) / n)
    flat = ones.reshape(-1)[: n - n % 2].reshape(-1, 2)
    assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) <= 5 / np.sqrt(n / 2)
    keep = np.asarray(jd._per_step_keep(jax.random.key(11), p, shape, jnp.float64))
    assert set(np.unique(keep)) == {0.0, 1 / (1 - q)}
    assert abs(keep.mean() - 1) <= 5 * np.sqrt(q / (1 - q) / n)


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_per_step_masks_are_uncorrelated_across_words_steps_and_keys(p):
    """The counter-based hash: units of consecutive words, the same unit at consecutive
    steps, and the masks of two keys are uncorrelated (within 5 standard errors)."""
    shape = (40, 8, 256)
    ones = np.asarray(jd._per_step_bernoulli(jax.random.key(12), p, shape), np.float64)
    other = np.asarray(jd._per_step_bernoulli(jax.random.key(13), p, shape), np.float64)
    flat = ones.reshape(-1)
    pairs = {"consecutive words": (flat[:-2], flat[2:]),
             "consecutive steps": (ones[:-1].reshape(-1), ones[1:].reshape(-1)),
             "two keys": (flat, other.reshape(-1))}
    for what, (a, b) in pairs.items():
        assert abs(np.corrcoef(a, b)[0, 1]) <= 5 / np.sqrt(a.size), what
    assert abs(other.mean() - jd.quantised(p)) <= 5 * np.sqrt(p * (1 - p) / other.size)
