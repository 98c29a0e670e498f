"""The driver's options, each with its hand-written backward: mask, reset, reverse."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from helpers import TOL, rel_error

T, B, D, H = 7, 3, 4, 5


def problem(dtype, seed=0):
    k = jax.random.split(jax.random.key(seed), 7)
    U = jax.random.normal(k[0], (H, D), dtype) / 2
    W = jax.random.normal(k[1], (H, H), dtype) / 2
    b = jax.random.normal(k[2], (H,), dtype) / 4
    b_r = jax.random.normal(k[3], (H,), dtype) / 4
    xs = jax.random.normal(k[4], (T, B, D), dtype)
    h0 = jax.random.normal(k[5], (B, H), dtype) / 2
    lengths = jnp.array([T, 4, 1])
    mask = jnp.arange(T)[:, None] < lengths[None, :]
    reset = jax.random.bernoulli(k[6], 0.3, (T, B))
    return (U, W, b, b_r, xs, h0), mask, reset


def downstream(hs, final):
    """A loss that reads every output and the final state nonlinearly."""
    weights = jnp.arange(1, hs.shape[-1] + 1, dtype=hs.dtype).reshape(1, 1, -1)
    return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(final ** 3)


@functools.lru_cache(maxsize=None)
def grads_fn(backward, use_mask, use_reset, reverse, use_b_r):
    def J(args, mask, reset):
        U, W, b, b_r, xs, h0 = args
        hs, final = jrnn.rnn("elman", U, W, b, xs, h0, b_r=b_r if use_b_r else None,
                             mask=mask if use_mask else None,
                             reset=reset if use_reset else None,
                             reverse=reverse, backward=backward)
        return downstream(hs, final)
    return jax.jit(jax.value_and_grad(J))


OPTIONS = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("use_mask,use_reset,reverse,use_b_r", OPTIONS,
                         ids=[f"mask{int(m)}-reset{int(r)}-rev{int(v)}-br{int(b)}"
                              for m, r, v, b in OPTIONS])
def test_options_match_autodiff(use_mask, use_reset, reverse, use_b_r, dtype):
    args, mask, reset = problem(dtype)
    J_m, g_m = grads_fn("manual", use_mask, use_reset, reverse, use_b_r)(args, mask, reset)
    J_a, g_a = grads_fn("autodiff", use_mask, use_reset, reverse, use_b_r)(args, mask, reset)
    assert rel_error(J_m, J_a) <= TOL[dtype]
    for name, gm, ga in zip(["U", "W", "b", "b_r", "xs", "h0"], g_m, g_a):
        if name == "b_r" and not use_b_r:
            assert not np.any(np.asarray(gm))
            continue
        assert rel_error(gm, ga) <= TOL[dtype], name


def test_masked_steps_emit_zeros_and_keep_the_state():
    (U, W, b, _, xs, h0), mask, _ = problem(jnp.float64)
    hs, final = jrnn.rnn("elman", U, W, b, xs, h0, mask=mask)
    assert not np.any(np.asarray(hs)[~np.asarray(mask)])
    # Sequence 1 has length 4: its final state is its state at step 3.
    np.testing.assert_array_equal(final[1], hs[3, 1])
    np.testing.assert_array_equal(final[0], hs[T - 1, 0])


def test_padding_never_changes_a_valid_output_or_gradient():
    """Garbage in the padded steps moves nothing that is valid, forward or backward."""
    (U, W, b, _, xs, h0), mask, _ = problem(jnp.float64)
    garbage = jnp.where(mask[..., None], xs, 1e3 * jax.random.normal(jax.random.key(9), xs.shape))
    for reverse in (False, True):
        def J(U, W, b, xs):
            hs, final = jrnn.rnn("elman", U, W, b, xs, h0, mask=mask, reverse=reverse)
            return downstream(hs, final)
        g_clean = jax.grad(J, argnums=(0, 1, 2, 3))(U, W, b, xs)
        g_dirty = jax.grad(J, argnums=(0, 1, 2, 3))(U, W, b, garbage)
        assert rel_error(g_dirty[:3], g_clean[:3]) <= 1e-14
        assert not np.any(np.asarray(g_dirty[3])[~np.asarray(mask)])
        assert float(J(U, W, b, garbage)) == float(J(U, W, b, xs))


def test_reverse_with_lengths_reverses_each_sequence_within_its_length():
    (U, W, b, _, xs, h0), mask, _ = problem(jnp.float64)
    hs, final = jrnn.rnn("elman", U, W, b, xs, h0, mask=mask, reverse=True)
    for i, n in enumerate([T, 4, 1]):
        ref, ref_final = jrnn.rnn("elman", U, W, b, xs[:n, i][::-1], h0[i])
        np.testing.assert_allclose(hs[:n, i], ref[::-1], rtol=1e-13)
        np.testing.assert_allclose(final[i], ref_final, rtol=1e-13)


def test_reset_restarts_from_the_initial_state():
    (U, W, b, _, xs, h0), _, _ = problem(jnp.float64)
    reset = jnp.zeros((T, B), bool).at[4, 0].set(True)
    hs, _ = jrnn.rnn("elman", U, W, b, xs, h0, reset=reset)
    restarted, _ = jrnn.rnn("elman", U, W, b, xs[4:, 0], h0[0])
    np.testing.assert_allclose(hs[4:, 0], restarted, rtol=1e-13)
    unchanged, _ = jrnn.rnn("elman", U, W, b, xs[:, 1:], h0[1:])
    np.testing.assert_allclose(hs[:, 1:], unchanged, rtol=1e-13)


def test_stacked_layers_pass_gradients_through_inputs():
    """The layer's dxs feeds a layer below it: two stacked layers match autodiff."""
    (U, W, b, _, xs, h0), _, _ = problem(jnp.float64)
    U2 = jax.random.normal(jax.random.key(3), (H, H)) / 2

    def J(U, W, U2, backward):
        hs, _ = jrnn.rnn("elman", U, W, b, xs, h0, backward=backward)
        hs2, f2 = jrnn.rnn("elman", U2, W, b, hs, h0, backward=backward)
        return downstream(hs2, f2)
    grad = jax.grad(J, argnums=(0, 1, 2))
    assert rel_error(grad(U, W, U2, "manual"), grad(U, W, U2, "autodiff")) <= 1e-10
