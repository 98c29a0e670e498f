"""The persistent recurrence kernel (jrnn/persistent.py) against the scan path.

On a CPU the kernels run in Pallas's interpret mode (float64 allowed), on a GPU
natively; either way the hand-written gradients through the kernel must equal
the scan path's, with every output element written (outputs are NaN-poisoned).
"""
import jax
import jax.numpy as jnp
import pytest

import jrnn
from jrnn import persistent, recurrence
from tests.helpers import TOL, rel_error

GPU = jax.default_backend() == "gpu"
DTYPES = [jnp.float32] if GPU else [jnp.float64, jnp.float32]


def _problem(cell, dtype, T=5, B=3, D=4, H=16, seed=0):
    G = jrnn.cells.get(cell).gates
    k = jax.random.split(jax.random.key(seed), 7)
    U = 0.5 * jax.random.normal(k[0], (G * H, D), dtype)
    W = 0.3 * jax.random.normal(k[1], (G * H, H), dtype)
    b, b_r = (jax.random.normal(kk, (G * H,), dtype) for kk in k[2:4])
    xs = jax.random.normal(k[4], (T, B, D), dtype)
    h0 = 0.5 * jax.random.normal(k[5], (B, H), dtype)
    h0 = jrnn.cells.LSTMState(h0, -h0) if cell == "lstm" else h0
    if cell == "slstm":  # a positive normaliser n and any stabiliser m
        h0 = jrnn.cells.SLSTMState(h0, -h0, jnp.abs(h0) + 0.5, h0)
    weights = jax.random.normal(k[6], (T, B, H), dtype)
    return (U, W, b, b_r, xs, h0), weights


def _loss(kernel, cell, reverse, weights):
    def loss(U, W, b, b_r, xs, h0):
        hs, final = jrnn.rnn(cell, U, W, b, xs, h0, b_r=b_r, reverse=reverse, kernel=kernel)
        return jnp.sum(weights * jnp.sin(hs)) + sum(jnp.sum(f ** 2) for f in
                                                    jax.tree.leaves(final))
    return loss


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "slstm"])
def test_kernel_gradients_equal_the_scan(cell, reverse, dtype):
    args, weights = _problem(cell, dtype)
    grad = lambda kernel: jax.value_and_grad(_loss(kernel, cell, reverse, weights),
                                             argnums=range(6))(*args)
    with persistent.poisoned_outputs():
        value, grads = grad("persistent")
    ref_value, ref_grads = grad("scan")
    assert rel_error(value, ref_value) <= TOL[dtype]
    assert rel_error(grads, ref_grads) <= TOL[dtype]


def test_kernel_is_not_a_copy_of_the_scan():
    """A kernel whose backward dropped the recurrent term would fail the test above."""
    args, weights = _problem("elman", DTYPES[0])
    loss = _loss("persistent", "elman", False, weights)
    g = jax.grad(loss, argnums=1)(*args)
    g0 = jax.grad(loss, argnums=1)(args[0], jnp.zeros_like(args[1]), *args[2:])
    assert rel_error(g, g0) > 1e-2


def test_kernel_choice_is_checked():
    args, _ = _problem("elman", DTYPES[0])
    U, W, b, b_r, xs, h0 = args
    with pytest.raises(ValueError, match="kernel: expected one of"):
        jrnn.rnn("elman", U, W, b, xs, kernel="fast")
    with pytest.raises(ValueError, match="masks, lengths and resets"):
        jrnn.rnn("elman", U, W, b, xs, lengths=jnp.array([5, 4, 3]), kernel="persistent")
    with pytest.raises(ValueError, match="backward='autodiff'"):
        jrnn.rnn("elman", U, W, b, xs, backward="autodiff", kernel="persistent")
    U2 = jnp.zeros((24, 4), W.dtype)
    with pytest.raises(ValueError, match="power of two"):
        jrnn.rnn("elman", U2, jnp.zeros((24, 24), W.dtype), None, xs, kernel="persistent")


def test_auto_falls_back_to_the_scan_where_the_kernel_cannot_run():
    args, _ = _problem("elman", DTYPES[0])
    U, W, b, b_r, xs, h0 = args
    hs_auto, _ = jrnn.rnn("elman", U, W, b, xs, lengths=jnp.array([5, 4, 3]))
    hs_scan, _ = jrnn.rnn("elman", U, W, b, xs, lengths=jnp.array([5, 4, 3]), kernel="scan")
    assert rel_error(hs_auto, hs_scan) == 0


def test_auto_picks_the_kernel_where_it_was_measured_faster(monkeypatch):
    """The per-backend table: the tanh cell on GPUs (measured on an H100), nothing on the
    CPU; and choose_kernel follows the table where the kernel can run, else the scan."""
    assert persistent.preferred("elman", 128, jnp.float32, backend="gpu")
    assert not persistent.preferred("lstm", 128, jnp.float32, backend="gpu")
    assert not persistent.preferred("elman", 128, jnp.float32, backend="cpu")
    W = jnp.zeros((16, 16), jnp.float32)
    choose = lambda **kw: recurrence.choose_kernel("auto", "manual", "elman", W, None, **kw)
    assert choose() == "scan"
    monkeypatch.setitem(persistent._PREFERRED, jax.default_backend(), ("elman",))
    assert choose() == "persistent"
    assert choose(mask=jnp.ones((3, 2), bool)) == "scan"
    assert recurrence.choose_kernel("auto", "autodiff", "elman", W, None) == "scan"
