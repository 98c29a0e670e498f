"""The native softmax head (jrnn/native_head.py, jrnn/csrc/head.cc) against XLA's: the loss
and its gradients in float32 against the XLA head in float64, the same answers for bad
labels, masks and non-finite logits, and the tagger's kernel="native" running it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn import heads, native, native_head
from jrnn.models import tagger
from tests.helpers import TOL, rel_error

pytestmark = pytest.mark.skipif(
    not native.available(), reason=f"jrnn.native unavailable: {native.why_unavailable()}")
f32 = jnp.float32


def _problem(T, B, H, C, seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    hs = jax.random.normal(k[0], (T, B, H), f32)
    V = jax.random.normal(k[1], (C, H), f32) * (2 / H ** 0.5)
    c = jax.random.normal(k[2], (C,), f32)
    ys = jax.random.randint(k[3], (T, B), 0, C)
    mask = jax.random.bernoulli(k[4], 0.7, (T, B))
    return V, c, hs, ys, mask


def _value_and_grads(kernel, V, c, hs, ys, mask):
    """Under jit, so that the labels are traced (a concrete bad label raises)."""
    return jax.jit(jax.value_and_grad(
        lambda V, c, hs, ys, mask: heads.softmax_nll(V, c, hs, ys, mask, kernel=kernel),
        argnums=(0, 1, 2)))(V, c, hs, ys, mask)


# C: under one vector, between vectors, 33 = one 32-output panel and one more; N = T B over
# one row tile, a partial tile, and 520 rows (two threads, kMinRowsPerThread = 256)
@pytest.mark.parametrize("T,B,H,C", [(3, 5, 7, 5), (2, 9, 33, 70), (1, 1, 1, 2),
                                     (40, 13, 16, 33), (4, 8, 24, 64)])
@pytest.mark.parametrize("masked", [False, True], ids=["all rows", "mask"])
def test_loss_and_gradients_match_xla(T, B, H, C, masked):
    V, c, hs, ys, mask = _problem(T, B, H, C)
    mask = mask if masked else None
    value, grads = _value_and_grads("native", V, c, hs, ys, mask)
    wide = lambda a: a.astype(jnp.float64)
    ref_value, ref_grads = jax.value_and_grad(
        lambda V, c, hs: heads.softmax_nll(V, c, hs, ys, mask), argnums=(0, 1, 2))(
        wide(V), wide(c), wide(hs))
    assert value.dtype == f32
    assert rel_error(wide(value), ref_value) <= TOL[f32]
    for g, ref in zip(grads, ref_grads, strict=True):
        assert g.dtype == f32 and g.shape == ref.shape
        assert rel_error(wide(g), ref) <= TOL[f32]
    # the undifferentiated loss (no gradient written)
    forward = jax.jit(lambda V, c, hs: heads.softmax_nll(V, c, hs, ys, mask, kernel="native"))
    assert rel_error(wide(forward(V, c, hs)), ref_value) <= TOL[f32]


@pytest.mark.parametrize("scale", [0.37, -2.0])
def test_the_gradients_scale_with_the_cotangent(scale):
    """A mean loss or a weighted sum hands the backward a cotangent g ≠ 1, which it applies
    to V and to dV, dc (jrnn.native_head.backward): every gradient against float64 XLA."""
    V, c, hs, ys, mask = _problem(40, 13, 16, 33)
    wide = lambda a: a.astype(jnp.float64)

    def grads(kernel, *args):
        return jax.grad(lambda V, c, hs: scale * heads.softmax_nll(V, c, hs, ys, mask,
                                                                   kernel=kernel),
                        argnums=(0, 1, 2))(*args)
    got = jax.jit(lambda *a: grads("native", *a))(V, c, hs)
    want = grads("xla", wide(V), wide(c), wide(hs))
    for g, ref in zip(got, want, strict=True):
        assert g.dtype == f32 and g.shape == ref.shape
        assert rel_error(wide(g), ref) <= TOL[f32]


def test_threads_give_the_same_answer_bit_for_bit():
    """The loss's terms are summed per tile of rows and then in order, whatever the split."""
    V, c, hs, ys, mask = _problem(70, 11, 12, 9)  # 770 rows: up to three threads
    outs = [native_head.softmax_nll(V, c, hs, ys, mask, keep_gradient=True, num_threads=n)
            for n in (1, 2, 3)]
    for J, d_o in outs[1:]:
        np.testing.assert_array_equal(np.asarray(J), np.asarray(outs[0][0]))
        np.testing.assert_array_equal(np.asarray(d_o), np.asarray(outs[0][1]))


def _same_answers(got, want):
    """Equal where finite (to float32's tolerance), and NaN and inf at the same places."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w))
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w))
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label", [-1, 6, 2 ** 32 + 1], ids=["negative", "C", "beyond int32"])
@pytest.mark.parametrize("masked", [False, True], ids=["counted", "masked"])
def test_a_bad_label_gives_what_xla_gives(label, masked):
    """NaN for the loss and the label's gradient row, unless its row is masked (then 0):
    a label of 2^32 + 1 must not wrap into [0, C) on its way to the kernel's int32."""
    V, c, hs, ys, mask = _problem(3, 4, 5, 6)
    ys = ys.astype(jnp.int64).at[1, 2].set(label)
    mask = mask.at[1, 2].set(not masked)
    got = _value_and_grads("native", V, c, hs, ys, mask)
    want = _value_and_grads("xla", V, c, hs, ys, mask)
    assert np.isnan(got[0]) != masked
    _same_answers(got, want)
    d_o = jax.jit(lambda ys: native_head.softmax_nll(V, c, hs, ys, mask, keep_gradient=True))(
        ys)[1]
    assert np.isnan(d_o[1, 2]).all() != masked and not np.isnan(np.delete(
        np.asarray(d_o).reshape(12, 6), 6, axis=0)).any()


@pytest.mark.parametrize("where", ["nan in h", "inf bias", "-inf bias", "all -inf"])
def test_non_finite_logits_follow_logsumexp(where):
    """A NaN logit makes its row NaN; +inf or -inf logits give what jax.nn.logsumexp gives
    (the kernel's vector exp would clamp them: such rows take a scalar path)."""
    V, c, hs, ys, _ = _problem(2, 3, 4, 5)
    if where == "nan in h":
        hs = hs.at[0, 1, 2].set(jnp.nan)
    elif where == "inf bias":
        c = c.at[2].set(jnp.inf)
    elif where == "-inf bias":
        c = c.at[2].set(-jnp.inf)
        ys = jnp.where(ys == 2, 3, ys)
    else:
        V, c = jnp.zeros_like(V), jnp.full_like(c, -jnp.inf)
    got = _value_and_grads("native", V, c, hs, ys, None)
    want = _value_and_grads("xla", V, c, hs, ys, None)
    _same_answers(got, want)


def test_the_native_tagger_runs_the_native_head():
    """tagger.loss(kernel="native"): the head's FFI call in the program, the loss and the
    gradients of kernel="scan"."""
    T, B, D, H, C = 6, 5, 4, 9, 7
    params = tagger.init(jax.random.key(0), "gru", D, H, C)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), f32)
    ys = jax.random.randint(jax.random.key(2), (T, B), 0, C)
    loss = lambda kernel: lambda p: tagger.loss(p, xs, ys, kernel=kernel)
    assert "jrnn_softmax_nll" in str(jax.make_jaxpr(loss("native"))(params))
    assert "jrnn_softmax_nll" in str(jax.make_jaxpr(jax.grad(loss("native")))(params))
    assert "jrnn_softmax_nll" not in str(jax.make_jaxpr(loss("scan"))(params))
    got = jax.jit(jax.value_and_grad(loss("native")))(params)
    want = jax.jit(jax.value_and_grad(loss("scan")))(params)
    assert rel_error(got, want) <= TOL[f32]


@pytest.mark.parametrize("change,options,message", [
    (None, {"kernel": "cuda"}, "kernel: expected one of ('auto', 'xla', 'native'), got 'cuda'"),
    (None, {"kernel": "native", "backward": "autodiff"},
     "kernel='native' has a hand-written backward only"),
    (jnp.float64, {"kernel": "native"},
     "kernel='native' cannot run this head: parameters/products of dtype float64"),
    (None, {"kernel": "native", "matmul_dtype": jnp.bfloat16},
     "kernel='native' cannot run this head: parameters/products of dtype bfloat16, float32"),
])
def test_what_the_native_head_refuses(change, options, message):
    V, c, hs, ys, _ = _problem(2, 3, 4, 5)
    if change is not None:
        V, c, hs = (a.astype(change) for a in (V, c, hs))
    with pytest.raises(ValueError) as e:
        heads.softmax_nll(V, c, hs, ys, **options)
    assert message in str(e.value)
