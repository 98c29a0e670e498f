"""Bad input: a clear error at trace time, naming the argument, expected and actual."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from helpers import elman_problem

P, XS, YS, H0 = elman_problem(0, T=6, B=3, D=4, H=5, C=3)


def test_wrong_input_size():
    with pytest.raises(ValueError, match=r"xs: expected shape \(\.\.\., 4\).*got \(6, 3, 7\)"):
        jrnn.elman.loss(P, jnp.ones((6, 3, 7)), YS, H0)


def test_wrong_rank_of_xs():
    with pytest.raises(ValueError, match=r"xs: expected shape .*got \(4,\)"):
        jrnn.elman.loss(P, jnp.ones(4), YS, H0)


def test_ys_of_another_length():
    with pytest.raises(ValueError, match=r"ys: expected shape \(6, 3\) = xs.shape\[:-1\].*got \(7, 3\)"):
        jrnn.elman.loss(P, XS, jnp.zeros((7, 3), jnp.int32), H0)


def test_float_ys():
    with pytest.raises(TypeError, match=r"ys: expected an integer dtype .*got float64"):
        jrnn.elman.loss(P, XS, YS.astype(jnp.float64), H0)


def test_h0_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"h0: expected shape \(3, 5\).*got \(3, 4\)"):
        jrnn.elman.loss(P, XS, YS, jnp.zeros((3, 4)))


def test_h0_without_batch_axis_for_batched_xs():
    with pytest.raises(ValueError, match=r"h0: expected shape \(3, 5\).*got \(5,\)"):
        jrnn.elman.loss(P, XS, YS, jnp.zeros(5))


def test_ys_out_of_range_when_concrete():
    with pytest.raises(ValueError, match=r"ys: expected class indices in \[0, 3\).*\[0, 3\]"):
        jrnn.elman.loss(P, XS, YS.at[2, 1].set(3), H0)


def test_negative_ys():
    with pytest.raises(ValueError, match=r"ys: expected class indices in \[0, 3\)"):
        jrnn.elman.loss(P, XS, YS.at[0, 0].set(-1), H0)


def test_ys_out_of_range_under_jit_gives_nan():
    """Values are unknown at trace time; the loss turns NaN, which training reports."""
    J = jax.jit(jrnn.elman.loss)(P, XS, YS.at[2, 1].set(3), H0)
    assert np.isnan(float(J))
    g = jax.jit(jax.grad(jrnn.elman.loss))(P, XS, YS.at[2, 1].set(3), H0)
    assert np.isnan(np.asarray(g.V)).any()


def test_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"xs: expected shape \(\.\.\., 4\)"):
        jax.jit(jax.grad(jrnn.elman.loss))(P, jnp.ones((6, 3, 7)), YS, H0)


def test_integer_xs():
    with pytest.raises(TypeError, match=r"xs: expected a floating dtype, got int"):
        jrnn.elman.loss(P, XS.astype(jnp.int32), YS, H0)


def test_parameters_of_inconsistent_shapes():
    with pytest.raises(ValueError, match=r"p.V: expected shape \(C, 5\).*got \(3, 6\)"):
        jrnn.elman.loss(P._replace(V=jnp.zeros((3, 6))), XS, YS, H0)


def test_parameters_of_mixed_dtypes():
    with pytest.raises(TypeError, match=r"p.U: expected dtype float64 \(the dtype of p.W\), got float32"):
        jrnn.elman.loss(P._replace(U=P.U.astype(jnp.float32)), XS, YS, H0)


def test_unknown_backward():
    with pytest.raises(ValueError, match=r"backward: expected one of \('manual', 'autodiff'\), got 'manul'"):
        jrnn.elman.loss(P, XS, YS, H0, backward="manul")


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"reduction: expected one of \('sum', 'mean'\), got 'avg'"):
        jrnn.elman.loss(P, XS, YS, H0, reduction="avg")


def test_unknown_cell():
    with pytest.raises(ValueError, match=r"cell: expected one of \[.*'elman'.*\], got 'tanh'"):
        jrnn.rnn("tanh", P.U, P.W, P.b, XS)


def test_mask_of_the_wrong_dtype():
    with pytest.raises(TypeError, match=r"mask: expected dtype bool, got int"):
        jrnn.elman.loss(P, XS, YS, H0, mask=jnp.ones((6, 3), jnp.int32))


def test_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"mask: expected shape \(6, 3\).*got \(6,\)"):
        jrnn.elman.loss(P, XS, YS, H0, mask=jnp.ones(6, bool))


def test_reset_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"reset: expected shape \(6, 3\).*got \(3, 6\)"):
        jrnn.rnn("elman", P.U, P.W, P.b, XS, H0, reset=jnp.ones((3, 6), bool))


def test_empty_sequence():
    with pytest.raises(ValueError, match=r"xs: expected shape \(T, \.\.\.\) with T >= 1, got \(0, 3, 4\)"):
        jrnn.elman.loss(P, jnp.ones((0, 3, 4)), jnp.zeros((0, 3), jnp.int32), H0)


def test_sample_needs_a_character_model():
    with pytest.raises(ValueError, match=r"p: sample feeds outputs back as inputs"):
        jrnn.elman.sample(P, jax.random.key(0), jnp.array([0]), 5)


# Layers, stacks and architectures.
from jrnn import layers  # noqa: E402
from jrnn.models import classifier, seq2seq, tagger  # noqa: E402

TAGGER = tagger.init(jax.random.key(0), "elman", 4, 5, 3, num_layers=2, dtype=jnp.float64)


def test_lengths_out_of_range():
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 6\].*\[1, 7\]"):
        jrnn.rnn("elman", P.U, P.W, P.b, XS, lengths=jnp.array([7, 1, 2]))


def test_lengths_of_any_integer_dtype():
    for dtype in (jnp.int32, jnp.int64, jnp.uint8):
        hs, _ = jrnn.rnn("elman", P.U, P.W, P.b, XS, lengths=jnp.array([6, 1, 2], dtype))
        assert not np.any(np.asarray(hs[1:, 1]))


def test_float_lengths():
    with pytest.raises(TypeError, match=r"lengths: expected an integer dtype"):
        jrnn.rnn("elman", P.U, P.W, P.b, XS, lengths=jnp.array([6.0, 1.0, 2.0]))


def test_lengths_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\).*got \(2,\)"):
        jrnn.rnn("elman", P.U, P.W, P.b, XS, lengths=jnp.array([6, 1]))


def test_tagger_labels_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"ys: expected shape \(6, 3\) = xs.shape\[:-1\].*got \(6, 2\)"):
        tagger.loss(TAGGER, XS, YS[:, :2])


def test_classifier_needs_one_label_per_sequence():
    p = classifier.init(jax.random.key(0), "elman", 4, 5, 3, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"ys: expected shape \(3,\): one label per sequence.*got \(6, 3\)"):
        classifier.loss(p, XS, YS)


def test_stack_with_inconsistent_sizes():
    bad = (TAGGER.rnn[0], (layers.init_layer(jax.random.key(1), "elman", 7, 5),))
    with pytest.raises(ValueError, match=r"stack\[1\]\[0\].U: expected shape \(G·H, 5\).*got \(5, 7\)"):
        layers.run_stack(bad, XS)


def test_stack_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"stack\[1\]: expected a tuple of 1 jrnn.layers.Layer .*got a Layer"):
        layers.run_stack((TAGGER.rnn[0], TAGGER.rnn[1][0]), XS)


def test_stepping_a_bidirectional_stack():
    stack = layers.init_stack(jax.random.key(0), "elman", 4, 5, bidirectional=True)
    with pytest.raises(ValueError, match=r"step_stack .* needs a unidirectional stack"):
        layers.step_stack(stack, ((jnp.zeros((1, 5)),),), jnp.zeros((1, 4)))


def test_initial_states_of_the_wrong_nesting():
    with pytest.raises(ValueError, match=r"h0: expected one initial state per layer and direction"):
        layers.run_stack(TAGGER.rnn, XS, (H0,))


def test_decoder_targets_out_of_range():
    p = seq2seq.init(jax.random.key(0), "elman", 4, 5, 3, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"ys: expected class indices in \[0, 3\)"):
        seq2seq.loss(p, XS, jnp.full((4, 3), 3, jnp.int32))


def test_regression_targets_of_the_wrong_shape():
    p = classifier.init(jax.random.key(0), "elman", 4, 5, 2, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 2\).*got \(3,\)"):
        classifier.regression_loss(p, XS, jnp.zeros(3))


def test_concrete_lengths_closed_over_under_jit():
    """A constant lengths array inside a jitted function is checked with numpy, not traced."""
    lengths = jnp.array([6, 1, 2])
    hs = jax.jit(lambda xs: jrnn.rnn("elman", P.U, P.W, P.b, xs, lengths=lengths)[0])(XS)
    assert not np.any(np.asarray(hs[1:, 1]))
    too_long = lengths + 5
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 6\]"):
        jax.jit(lambda xs: jrnn.rnn("elman", P.U, P.W, P.b, xs, lengths=too_long))(XS)
