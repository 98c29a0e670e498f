"""The seeds' model: hand-written gradients against autodiff, finite differences
and the seeds' equations computed step by step in numpy."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from helpers import TOL, elman_problem, numpy_seed_loss, rel_error


@functools.lru_cache(maxsize=None)
def value_and_grads(backward: str, reduction: str = "sum"):
    """d/d(p, xs, h0) of the loss, compiled once per (backward, reduction) and shape."""
    def J(p, xs, ys, h0):
        return jrnn.elman.loss(p, xs, ys, h0, reduction=reduction, backward=backward)
    return jax.jit(jax.value_and_grad(J, argnums=(0, 1, 3)))


SHAPES = {
    # name: (T, B, D, H, C, batched)
    "seed001-unbatched": (8, 1, 4, 5, 3, False),   # seed 001's sizes, one sequence
    "T=1": (1, 3, 4, 5, 3, True),
    "B=1": (7, 1, 4, 5, 3, True),
    "batched": (12, 3, 4, 6, 5, True),
    "long": (40, 2, 3, 8, 4, True),
}


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradients_match_autodiff(shape, dtype, reduction):
    T, B, D, H, C, batched = SHAPES[shape]
    p, xs, ys, h0 = elman_problem(1, T, B, D, H, C, dtype, batched)
    J_m, g_m = value_and_grads("manual", reduction)(p, xs, ys, h0)
    J_a, g_a = value_and_grads("autodiff", reduction)(p, xs, ys, h0)
    assert rel_error(J_m, J_a) <= TOL[dtype]
    for name, gm, ga in zip(["p", "xs", "h0"], g_m, g_a):
        assert rel_error(gm, ga) <= TOL[dtype], name
    # Each field separately, so that a failure names the parameter.
    for field in jrnn.elman.Params._fields:
        assert rel_error(getattr(g_m[0], field), getattr(g_a[0], field)) <= TOL[dtype], field


def test_unbatched_equals_batched_with_one_sequence():
    p, xs, ys, h0 = elman_problem(2, 9, 1, 4, 5, 3, batched=False)
    J_u, g_u = value_and_grads("manual")(p, xs, ys, h0)
    J_b, g_b = value_and_grads("manual")(p, xs[:, None], ys[:, None], h0[None])
    assert rel_error(J_u, J_b) <= 1e-14
    assert rel_error(g_u[0], g_b[0]) <= 1e-14
    assert rel_error(g_u[1], g_b[1][:, 0]) <= 1e-14
    assert rel_error(g_u[2], g_b[2][0]) <= 1e-14


def test_forward_is_the_seeds_equations():
    """The loss equals the seeds' J computed step by step in numpy."""
    p, xs, ys, h0 = elman_problem(3, 8, 1, 4, 5, 3, batched=False)
    J = jrnn.elman.loss(p, xs, ys, h0)
    np.testing.assert_allclose(float(J), numpy_seed_loss(p, xs, ys, h0), rtol=1e-12)
    # Batched: J sums over the batch.
    p, xs, ys, h0 = elman_problem(4, 5, 3, 4, 5, 3)
    expected = sum(numpy_seed_loss(p, xs[:, i], ys[:, i], h0[i]) for i in range(3))
    np.testing.assert_allclose(float(jrnn.elman.loss(p, xs, ys, h0)), expected, rtol=1e-12)


def test_default_h0_is_zeros():
    p, xs, ys, h0 = elman_problem(5)
    assert float(jrnn.elman.loss(p, xs, ys)) == float(
        jrnn.elman.loss(p, xs, ys, jnp.zeros_like(h0)))


def test_gradients_match_central_finite_differences():
    """Directional derivatives along random directions, for every argument."""
    p, xs, ys, h0 = elman_problem(6, 5, 2, 3, 4, 3)
    _, (g_p, g_xs, g_h0) = value_and_grads("manual")(p, xs, ys, h0)
    args, grads = (p, xs, h0), (g_p, g_xs, g_h0)
    J = lambda p, xs, h0: float(jrnn.elman.loss(p, xs, ys, h0))
    eps = 1e-6
    for which in range(3):
        leaves, treedef = jax.tree.flatten(args[which])
        for i, leaf in enumerate(leaves):
            v = np.random.default_rng(i + 10 * which).standard_normal(leaf.shape)
            def shifted(s):
                new = list(leaves)
                new[i] = leaf + s * eps * jnp.asarray(v)
                a = list(args)
                a[which] = jax.tree.unflatten(treedef, new)
                return J(*a)
            fd = (shifted(1) - shifted(-1)) / (2 * eps)
            analytic = float(np.sum(np.asarray(jax.tree.leaves(grads[which])[i]) * v))
            assert abs(fd - analytic) <= 1e-7 * max(1.0, abs(analytic)), (which, i, fd, analytic)


def test_gradient_check_fails_when_a_term_is_dropped():
    """The comparison above is sharp: a cell whose VJP forgets tanh' = 1 − h² is caught."""
    import jrnn.cells.elman as tanh_cell
    broken = jrnn.cells.Cell(
        name="broken", gates=1, carry_size=1, step=tanh_cell.step,
        step_vjp=lambda c_in, c, extra, dc, params=None: ((dc[0],), None,
                                                          (jnp.zeros_like(dc[0]),), None),
        to_carry=lambda h: (h,), from_carry=lambda c: c[0])
    p, xs, ys, h0 = elman_problem(7)

    def J(U, W, b, backward, cell):
        hs, _ = jrnn.rnn(cell, U, W, b, xs, h0, backward=backward)
        return jrnn.heads.softmax_nll(p.V, p.c, hs, ys, backward=backward)

    grad = jax.grad(J, argnums=(0, 1, 2))
    reference = grad(p.U, p.W, p.b, "autodiff", "elman")
    assert rel_error(grad(p.U, p.W, p.b, "manual", "elman"), reference) <= 1e-10
    assert rel_error(grad(p.U, p.W, p.b, "manual", broken), reference) > 1e-2
