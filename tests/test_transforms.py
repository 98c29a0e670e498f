"""jit, vmap, reverse-over-reverse, and forward mode's pointer to the switch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from helpers import elman_problem, rel_error

P, XS, YS, H0 = elman_problem(11, 6, 2, 3, 4, 3)


def J(p, xs, h0, backward="manual"):
    return jrnn.elman.loss(p, xs, YS, h0, backward=backward)


def test_jit_equals_eager():
    eager = jax.grad(J)(P, XS, H0)
    jitted = jax.jit(jax.grad(J))(P, XS, H0)
    assert rel_error(jitted, eager) <= 1e-13


def test_vmap_over_an_extra_leading_axis():
    """vmap over N problems of (T, B, D) equals N separate calls."""
    N = 3
    xs = jax.random.normal(jax.random.key(0), (N,) + XS.shape, XS.dtype)
    ys = jax.random.randint(jax.random.key(1), (N,) + YS.shape, 0, 3)
    grad = jax.jit(jax.grad(lambda p, xs, ys: jrnn.elman.loss(p, xs, ys, H0)))
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0, 0)))(P, xs, ys)
    for n in range(N):
        assert rel_error(jax.tree.map(lambda g: g[n], batched), grad(P, xs[n], ys[n])) <= 1e-13
    ref = jax.jit(jax.vmap(jax.grad(
        lambda p, xs, ys: jrnn.elman.loss(p, xs, ys, H0, backward="autodiff")),
        in_axes=(None, 0, 0)))(P, xs, ys)
    assert rel_error(batched, ref) <= 1e-10


def test_grad_of_grad_equals_autodiff():
    """Reverse over reverse: JAX differentiates the hand-written backward itself."""
    def penalty(p, backward):  # a gradient-norm penalty, as in WGAN-GP or sharpness studies
        g = jax.grad(J, argnums=(0, 1, 2))(p, XS, H0, backward)
        return sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(g))
    manual = jax.jit(jax.grad(penalty), static_argnums=1)(P, "manual")
    autodiff = jax.jit(jax.grad(penalty), static_argnums=1)(P, "autodiff")
    assert rel_error(manual, autodiff) <= 1e-10


# A regularised LSTM tagger: every kind of noise, masks fixed by the key.
NOISE = jrnn.dropout.Dropout(input=0.2, recurrent=0.3, weight=0.2, zoneout=0.2, between=0.3)
TAGGER = jrnn.models.tagger.init(jax.random.key(3), "lstm", 3, 4, 3, num_layers=2,
                                 dtype=jnp.float64)


def regularised(p, xs, key, backward="manual"):
    return jrnn.models.tagger.loss(p, xs, YS, dropout=NOISE, key=key, training=True,
                                   backward=backward)


def test_vmap_over_keys_and_inputs_with_dropout():
    """vmap over N (input, key) pairs equals N calls, each with its own masks."""
    N = 3
    xs = jax.random.normal(jax.random.key(0), (N,) + XS.shape, XS.dtype)
    keys = jax.random.split(jax.random.key(1), N)
    grad = jax.jit(jax.grad(regularised), static_argnums=3)
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0, 0)))(TAGGER, xs, keys)
    for n in range(N):
        assert rel_error(jax.tree.map(lambda g: g[n], batched),
                         grad(TAGGER, xs[n], keys[n])) <= 1e-13
    ref = jax.jit(jax.vmap(lambda p, x, k: grad(p, x, k, "autodiff"),
                           in_axes=(None, 0, 0)))(TAGGER, xs, keys)
    assert rel_error(batched, ref) <= 1e-10


def test_grad_of_grad_with_dropout_equals_autodiff():
    key = jax.random.key(2)

    def penalty(p, backward):
        g = jax.grad(regularised, argnums=(0, 1))(p, XS, key, backward)
        return sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(g))
    manual = jax.jit(jax.grad(penalty), static_argnums=1)(TAGGER, "manual")
    autodiff = jax.jit(jax.grad(penalty), static_argnums=1)(TAGGER, "autodiff")
    assert rel_error(manual, autodiff) <= 1e-10


@pytest.mark.parametrize("transform", ["jvp", "jit-jvp", "jacfwd", "hessian"])
def test_forward_mode_error_points_to_the_switch(transform):
    f = lambda W: J(P._replace(W=W), XS, H0)
    run = {
        "jvp": lambda: jax.jvp(f, (P.W,), (P.W,)),
        "jit-jvp": lambda: jax.jit(lambda W: jax.jvp(f, (W,), (W,)))(P.W),
        "jacfwd": lambda: jax.jacfwd(f)(P.W),
        "hessian": lambda: jax.hessian(f)(P.W),
    }[transform]
    with pytest.raises(TypeError, match="backward='autodiff'"):
        run()


def test_forward_mode_through_the_autodiff_switch():
    f = lambda W: J(P._replace(W=W), XS, H0, "autodiff")
    v = jax.random.normal(jax.random.key(2), P.W.shape, P.W.dtype)
    _, tangent = jax.jit(lambda W, v: jax.jvp(f, (W,), (v,)))(P.W, v)
    g = jax.jit(jax.grad(lambda W: J(P._replace(W=W), XS, H0)))(P.W)
    np.testing.assert_allclose(float(tangent), float(jnp.vdot(g, v)), rtol=1e-10)
    hess = jax.jit(jax.hessian(f))(P.W)
    assert hess.shape == P.W.shape * 2 and bool(jnp.all(jnp.isfinite(hess)))
