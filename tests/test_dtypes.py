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
