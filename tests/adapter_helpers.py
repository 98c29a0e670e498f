"""What the Flax NNX, Linen and Equinox adapter tests share: one problem, one loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import cells

B, T, D, H = 3, 5, 4, 6
LENGTHS = np.array([5, 3, 1])
F64 = jnp.float64


def problem(seed: int = 0, features: int = H):
    """Batch-first inputs, a validity mask (B, T) and random output/carry weights."""
    k = jax.random.split(jax.random.key(seed), 4)
    xs = jax.random.normal(k[0], (B, T, D), F64)
    valid = jnp.asarray(np.arange(T)[None, :] < LENGTHS[:, None])
    w_out = jax.random.normal(k[1], (B, T, features), F64)
    w_h, w_c = (jax.random.normal(key, (B, features), F64) for key in k[2:])
    return xs, valid, w_out, w_h, w_c


def initial_state(cell: str, seed: int = 5):
    """A nonzero initial state for one layer: h, or LSTMState(h, c)."""
    h, c = 0.5 * jax.random.normal(jax.random.key(seed), (2, B, H), F64)
    return cells.LSTMState(h, c) if cell == "lstm" else h


def loss_of(outputs, h, c, valid, w_out, w_h, w_c):
    """Σ valid outputs ⊙ w_out + h ⊙ w_h (+ c ⊙ w_c): every output and the carry count."""
    J = jnp.sum(jnp.where(valid[..., None], outputs, 0) * w_out) + jnp.sum(h * w_h)
    return J if c is None else J + jnp.sum(c * w_c)


def randomize(tree, seed: int = 1, scale: float = 0.6):
    """Every float leaf uniform in ±scale (nonzero biases, so that each is checked)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.uniform(k, x.shape, x.dtype, -scale, scale)
                              for k, x in zip(keys, leaves)])


def assert_layer_grads_match(jrnn_grad, framework_grad, tol=1e-10):
    """The gradient of each parameter the framework has, in jrnn's layout.

    ``framework_grad`` is the framework's gradient converted like its parameters;
    where it has no recurrent bias, jrnn's twin has none either, and where
    it has only the GRU's b_hn, only that block of b_r is a parameter of both.
    """
    from helpers import rel_error
    for name in ("U", "W", "b"):
        assert rel_error(getattr(jrnn_grad, name), getattr(framework_grad, name)) <= tol, name
    if framework_grad.b_r is None:
        assert jrnn_grad.b_r is None
    else:
        n = slice(2 * H, 3 * H)
        assert rel_error(jrnn_grad.b_r[n], framework_grad.b_r[n]) <= tol, "b_r (b_hn)"
