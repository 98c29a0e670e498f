"""Dtypes are kept: float32 in, float32 gradients out; bfloat16 works end to end."""
import jax
import jax.numpy as jnp
import pytest

import jrnn
from helpers import elman_problem, rel_error


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_gradients_keep_the_parameter_dtype(dtype):
    p, xs, ys, h0 = elman_problem(0, dtype=dtype)
    J, (g_p, g_xs, g_h0) = jax.value_and_grad(jrnn.elman.loss, argnums=(0, 1, 3))(p, xs, ys, h0)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves((g_p, g_xs, g_h0)))
    # Half precision logits are reduced in float32; otherwise the loss keeps the dtype.
    assert J.dtype == (jnp.float32 if dtype == jnp.bfloat16 else dtype)


def test_bfloat16_is_close_to_float32():
    p32, xs32, ys, h032 = elman_problem(1)
    p32, xs32, h032 = jax.tree.map(lambda a: a.astype(jnp.float32), (p32, xs32, h032))
    cast = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)
    grad = jax.grad(jrnn.elman.loss)
    g16 = grad(cast(p32), cast(xs32), ys, cast(h032))
    g32 = grad(p32, xs32, ys, h032)
    # bfloat16 has an 8-bit mantissa (relative rounding 2^-8 ≈ 4e-3); BPTT compounds it.
    assert rel_error(jax.tree.map(lambda a: a.astype(jnp.float32), g16), g32) < 5e-2


def test_mixed_dtypes_are_refused_with_the_argument_named():
    p, xs, ys, h0 = elman_problem(0, dtype=jnp.float32)
    with pytest.raises(TypeError, match=r"xs: expected dtype float32 .* got bfloat16"):
        jrnn.elman.loss(p, xs.astype(jnp.bfloat16), ys, h0)


def _dots(jaxpr):
    import jax.extend
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _dots(sub)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_bfloat16_matmuls_with_float32_everything_else(cell):
    """matmul_dtype=bfloat16: every product, forward and backward, takes bfloat16
    inputs; the loss and every gradient stay float32 and close to float64's."""
    from jrnn.models import tagger
    p64 = tagger.init(jax.random.key(0), cell, 4, 8, 3, dtype=jnp.float64)
    xs64 = jax.random.normal(jax.random.key(1), (6, 2, 4), jnp.float64)
    ys = jax.random.randint(jax.random.key(2), (6, 2), 0, 3)
    p32, xs32 = jax.tree.map(lambda a: a.astype(jnp.float32), (p64, xs64))
    loss = lambda p, xs: tagger.loss(p, xs, ys, matmul_dtype=jnp.bfloat16)
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(p32, xs32).jaxpr
    dots = list(_dots(jaxpr))
    assert len(dots) >= 8  # projection, recurrence and head, forward and backward
    for eqn in dots:
        assert all(v.aval.dtype == jnp.bfloat16 for v in eqn.invars), eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
    g16 = jax.grad(loss, argnums=(0, 1))(p32, xs32)
    g64 = jax.grad(lambda p, xs: tagger.loss(p, xs, ys), argnums=(0, 1))(p64, xs64)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g16))
    # bfloat16 inputs round to 8 bits (relative 2^-9 ≈ 2e-3); accumulation is float32.
    err = rel_error(jax.tree.map(lambda a: a.astype(jnp.float64), g16), g64)
    assert 1e-5 < err < 3e-2


def test_matmul_dtype_of_the_parameters_changes_nothing():
    p, xs, ys, h0 = elman_problem(3)
    plain = jax.grad(jrnn.elman.loss)(p, xs, ys, h0)
    same = jax.grad(jrnn.elman.loss)(p, xs, ys, h0, matmul_dtype=jnp.float64)
    assert rel_error(same, plain) <= 1e-15


def test_unknown_matmul_dtype():
    p, xs, ys, h0 = elman_problem(3)
    with pytest.raises(ValueError, match=r"matmul_dtype: expected one of .*got 'int32'"):
        jrnn.elman.loss(p, xs, ys, h0, matmul_dtype=jnp.int32)
