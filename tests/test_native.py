"""The native CPU kernels (jrnn/native.py; jrnn/csrc/lstm.cc, gru.cc, elman.cc) against
the scan."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jrnn import native
from jrnn.cells import lstm

pytestmark = pytest.mark.skipif(
    not native.available(), reason=f"jrnn.native unavailable: {native.why_unavailable()}")


def _inputs(T, B, H, seed=0, bias=True, scale=0.5):
    """Float64 where x64 is on (the tests' conftest): the kernel computes in float32 and
    is compared with the scan in float64."""
    ks = jax.random.split(jax.random.PRNGKey(seed), 5)
    A = tuple(jax.random.normal(k, (T, B, H)) for k in jax.random.split(ks[0], 4))
    W = jax.random.normal(ks[1], (4 * H, H)) * scale / np.sqrt(H)
    b_r = jax.random.normal(ks[2], (4 * H,)) * 0.1 if bias else None
    carry0 = (jax.random.normal(ks[3], (B, H)) * 0.5, jax.random.normal(ks[4], (B, H)))
    return A, W, b_r, carry0


def _scan(A, W, b_r, carry0, reverse):
    """The driver's forward scan for the LSTM (jrnn/recurrence.py), written out."""
    W_t = W.T

    def step(carry, A_t):
        R = carry[0] @ W_t + (0 if b_r is None else b_r[None])
        new, extra = lstm.step(A_t, tuple(jnp.split(R, 4, axis=-1)), carry)
        return new, (new, extra)

    final, (carries, extras) = lax.scan(step, carry0, A, reverse=reverse)
    return carries, extras, final


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# B 19: two full row tiles of the AVX-512 micro-kernel (8 rows; AVX2: 3) and a partial one
@pytest.mark.parametrize("T,B,H", [(20, 4, 16), (9, 1, 8), (11, 5, 13), (6, 7, 33), (4, 2, 1),
                                   (5, 19, 16)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_forward_matches_scan(T, B, H, reverse, threads):
    A, W, b_r, carry0 = _inputs(T, B, H)
    want = jax.jit(_scan, static_argnums=4)(A, W, b_r, carry0, reverse)
    got = jax.jit(lambda *a: native.forward("lstm", *a, reverse=reverse, num_threads=threads))(
        A, W, b_r, carry0)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape
        _close(g, w)


@pytest.mark.parametrize("T,B,D,H", [(12, 4, 5, 16), (7, 1, 3, 8), (9, 7, 10, 13), (5, 11, 6, 9)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("biases", ["both", "b", "none"])
def test_forward_inputs_matches_scan(T, B, D, H, reverse, threads, biases):
    """The input projection inside the kernel's step against the hoisted one in the scan."""
    _, W, b_r, carry0 = _inputs(T, B, H)
    ks = jax.random.split(jax.random.PRNGKey(7), 3)
    xs = jax.random.normal(ks[0], (T, B, D))
    U = jax.random.normal(ks[1], (4 * H, D)) / np.sqrt(D)
    b = None if biases == "none" else jax.random.normal(ks[2], (4 * H,)) * 0.1
    b_r = b_r if biases == "both" else None
    XU = jnp.einsum("tbd,gd->tbg", xs, U) + (0 if b is None else b[None, None])
    want = _scan(tuple(jnp.split(XU, 4, axis=-1)), W, b_r, carry0, reverse)
    got = native.forward_inputs("lstm", xs, U, b, W, b_r, carry0, reverse=reverse,
                                num_threads=threads)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape
        _close(g, w)


def test_forward_saturated_and_no_bias():
    """Large pre-activations (saturated gates, tanh clamped) and b_r = None."""
    A, W, b_r, carry0 = _inputs(10, 3, 24, seed=1, bias=False, scale=4.0)
    A = tuple(8 * a for a in A)
    want = _scan(A, W, None, carry0, False)
    got = native.forward("lstm", A, W, None, carry0, reverse=False)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _close(g, w)


def test_forward_without_residuals():
    A, W, b_r, carry0 = _inputs(15, 5, 20, seed=2)
    (hs, cs), extras, final = native.forward("lstm", A, W, b_r, carry0, reverse=True)
    (hs2, none), no_extras, final2 = native.forward("lstm", A, W, b_r, carry0, reverse=True,
                                                     keep_residuals=False)
    assert none is None and no_extras is None
    np.testing.assert_array_equal(hs2, hs)
    for a, b in zip(final2, final):
        np.testing.assert_array_equal(a, b)


def test_activations_accurate():
    """The kernel's sigmoid and tanh within a few float32 ulp of float64 ones, over the
    range that matters: one step from zero state with W = 0 isolates them."""
    x = np.linspace(-30, 30, 4001, dtype=np.float32)
    x = np.concatenate([x, np.float32(10.0) ** np.arange(-8, 0, dtype=np.float32),
                        -np.float32(10.0) ** np.arange(-8, 0, dtype=np.float32)])
    H, B = x.size, 3  # 3 rows: with AVX-512 two go through the 16-lane math, one the 8-lane
    A = tuple(jnp.broadcast_to(jnp.asarray(x), (1, B, H)) for _ in range(4))
    W = jnp.zeros((4 * H, H), jnp.float32)
    zero = jnp.zeros((B, H), jnp.float32)
    (_, cs), (i, f, g, o), _ = native.forward("lstm", A, W, None, (zero, zero), reverse=False)
    x64 = x.astype(np.float64)
    sig = 1 / (1 + np.exp(-x64))
    for b in range(B):
        np.testing.assert_allclose(np.asarray(i[0, b], np.float64), sig, rtol=2e-6, atol=1e-30)
        np.testing.assert_allclose(np.asarray(g[0, b], np.float64), np.tanh(x64), rtol=2e-6,
                                   atol=1e-30)


def test_unsupported_reasons():
    assert native.unsupported("lstm", 16, jnp.float32) is None
    assert native.unsupported("gru", 16, jnp.float32) is None
    assert native.unsupported("elman", 16, jnp.float32) is None
    assert "lstm, gru, elman only" in native.unsupported("layernorm_lstm", 16, jnp.float32)
    assert "float32 only" in native.unsupported("lstm", 16, jnp.float64)
    assert "mask" in native.unsupported("lstm", 16, jnp.float32, mask=jnp.ones((2, 2), bool))


def _driver_problem(T=9, B=5, D=6, H=13, seed=3, cell="lstm"):
    """float32 (the kernel's dtype); the scan path's gradients are the reference."""
    import jrnn
    G = jrnn.cells.get(cell).gates
    k = jax.random.split(jax.random.key(seed), 7)
    f32 = jnp.float32
    U = 0.5 * jax.random.normal(k[0], (G * H, D), f32)
    W = 0.3 * jax.random.normal(k[1], (G * H, H), f32)
    b, b_r = (jax.random.normal(kk, (G * H,), f32) for kk in k[2:4])
    xs = jax.random.normal(k[4], (T, B, D), f32)
    h0 = 0.5 * jax.random.normal(k[5], (B, H), f32)
    weights = jax.random.normal(k[6], (T, B, H), f32)
    carry0 = jrnn.cells.LSTMState(h0, -h0) if cell == "lstm" else h0
    return (U, W, b, b_r, xs, carry0), weights


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("T,B,H,biases,threads", [(9, 1, 13, "both", 2), (9, 5, 13, "both", 1),
                                                  (9, 8, 13, "none", 2), (9, 4, 40, "b", 3),
                                                  (9, 3, 72, "b_r", 3), (1, 2, 9, "both", 2),
                                                  (5, 19, 24, "both", 2),
                                                  (3, 64, 24, "both", 2)])
def test_driver_native_equals_scan(cell, reverse, T, B, H, biases, threads, monkeypatch):
    """jrnn.rnn(kernel="native"): outputs, and gradients through the native backward and
    its products (jrnn.native.gradients; with both biases, one, or none; 1–3 threads; one
    step), equal kernel="scan"'s."""
    import jrnn
    from tests.helpers import TOL, rel_error
    monkeypatch.setenv("JRNN_NATIVE_THREADS", str(threads))
    (U, W, b, b_r, xs, h0), weights = _driver_problem(T=T, B=B, H=H, cell=cell)
    b = b if biases in ("both", "b") else None
    b_r = b_r if biases in ("both", "b_r") else None
    args = (U, W, b, b_r, xs, h0)

    def loss(kernel):
        def f(U, W, b, b_r, xs, h0):
            hs, final = jrnn.rnn(cell, U, W, b, xs, h0, b_r=b_r, reverse=reverse,
                                 kernel=kernel)
            return jnp.sum(weights * jnp.sin(hs)) + sum(
                jnp.sum(f ** 2) for f in jax.tree.leaves(final))
        return f

    value, grads = jax.jit(jax.value_and_grad(loss("native"), argnums=range(6)))(*args)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(loss("scan"), argnums=range(6)))(*args)
    assert rel_error(value, ref_value) <= TOL[jnp.float32]
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_error(g, ref) <= TOL[jnp.float32]
    # the undifferentiated forward (no residuals written)
    assert rel_error(jax.jit(loss("native"))(*args), ref_value) <= TOL[jnp.float32]


def test_driver_native_refuses_what_it_cannot_run():
    import jrnn
    (U, W, b, b_r, xs, h0), _ = _driver_problem()
    with pytest.raises(ValueError, match="native.*lstm, gru, elman only"):
        ln = jrnn.cells.get("layernorm_elman")
        jrnn.rnn(ln, jnp.zeros((13, 6), jnp.float32), jnp.zeros((13, 13), jnp.float32), None,
                 xs, kernel="native",
                 cell_params=ln.init_params(jax.random.key(0), 13, jnp.float32))
    with pytest.raises(ValueError, match="native.*float32 only"):
        jrnn.rnn("lstm", U.astype(jnp.float64), W.astype(jnp.float64), b.astype(jnp.float64),
                 xs.astype(jnp.float64), kernel="native")
    with pytest.raises(ValueError, match="native.*mask"):
        jrnn.rnn("lstm", U, W, b, xs, h0, lengths=jnp.array([9, 8, 7, 6, 5]), kernel="native")
    with pytest.raises(ValueError, match="autodiff"):
        jrnn.rnn("lstm", U, W, b, xs, h0, backward="autodiff", kernel="native")


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_faulting_outputs_in_first_changes_no_result(cell, monkeypatch):
    """The kernels fault their outputs' pages in before the loop, each thread a share
    (JRNN_NATIVE_PREFAULT=0 leaves them to the loop; read at every call). A thread may be
    writing its first step into another's share meanwhile, so this must leave every number
    as it is: the forward and the gradients, both directions, two threads, bit for bit."""
    import jrnn
    monkeypatch.setenv("JRNN_NATIVE_THREADS", "2")
    (U, W, b, b_r, xs, h0), weights = _driver_problem(T=300, B=4, D=6, H=200, cell=cell)

    def loss(U, W, b, b_r, xs, h0, reverse):
        hs, _ = jrnn.rnn(cell, U, W, b, xs, h0, b_r=b_r, reverse=reverse, kernel="native")
        return jnp.sum(weights * jnp.sin(hs))
    step = jax.jit(jax.value_and_grad(loss, argnums=range(6)), static_argnums=6)
    for reverse in (False, True):
        results = {}
        for flag in ("0", "1", "1"):
            monkeypatch.setenv("JRNN_NATIVE_PREFAULT", flag)
            results.setdefault(flag, []).append(step(U, W, b, b_r, xs, h0, reverse))
        reference = jax.tree.leaves(results["0"][0])
        for got in results["1"]:
            for g, ref in zip(jax.tree.leaves(got), reference, strict=True):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(ref))


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_classifier_native_equals_scan(cell):
    """classifier.loss and regression_loss(kernel="native"): a two-layer bidirectional
    stack's final states through the native loops (the reverse direction's final state is
    its state at t = 0), the loss and every gradient as kernel="scan"'s."""
    from jrnn.models import classifier
    from tests.helpers import TOL, rel_error
    T, B, D, H, C = 7, 5, 4, 9, 3
    params = classifier.init(jax.random.key(0), cell, D, H, C, num_layers=2,
                             bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float32)
    ys = jax.random.randint(jax.random.key(2), (B,), 0, C)
    targets = jax.random.normal(jax.random.key(3), (B, C), jnp.float32)
    for loss, labels in ((classifier.loss, ys), (classifier.regression_loss, targets)):
        f = lambda kernel: jax.jit(jax.value_and_grad(
            lambda p: loss(p, xs, labels, kernel=kernel)))
        assert f"jrnn_{cell}_forward_inputs" in str(jax.make_jaxpr(
            lambda p: loss(p, xs, labels, kernel="native"))(params))
        got, want = f("native")(params), f("scan")(params)
        assert rel_error(got, want) <= TOL[jnp.float32]


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_generator_and_seq2seq_native_equal_scan(cell):
    """generator.loss and seq2seq.loss(kernel="native"): the stacks' loops (seq2seq's
    bidirectional encoder's final states into its decoder) and the head as native calls,
    the loss and every gradient as kernel="scan"'s; with lengths, a clear refusal."""
    from jrnn.models import generator, seq2seq
    from tests.helpers import TOL, rel_error
    T, B, D, H, C = 6, 5, 4, 9, 7
    ys = jax.random.randint(jax.random.key(2), (T, B), 0, C)
    context = jax.random.normal(jax.random.key(1), (B, D), jnp.float32)
    xs = jax.random.normal(jax.random.key(3), (T + 2, B, D), jnp.float32)
    cases = [(generator.loss, generator.init(jax.random.key(0), cell, D, H, C, num_layers=2),
              context),
             (seq2seq.loss, seq2seq.init(jax.random.key(0), cell, D, H, C, num_layers=2,
                                         bidirectional_encoder=True), xs)]
    for loss, params, inputs in cases:
        f = lambda kernel: jax.jit(jax.value_and_grad(
            lambda p: loss(p, inputs, ys, kernel=kernel)))
        program = str(jax.make_jaxpr(lambda p: loss(p, inputs, ys, kernel="native"))(params))
        assert f"jrnn_{cell}_forward_inputs" in program and "jrnn_softmax_nll" in program
        got, want = f("native")(params), f("scan")(params)
        assert rel_error(got, want) <= TOL[jnp.float32]
    lengths = jnp.full((B,), T - 1)
    with pytest.raises(ValueError, match="native"):
        generator.loss(cases[0][1], context, ys, lengths=lengths, kernel="native")


# N: under one chunk of 256 rows, several and a partial one; G: a partial block of 32
# columns, one, several; P: under one panel of 32 columns, full and partial panels
@pytest.mark.parametrize("N,G,Ps", [(0, 5, (3, 2)), (1, 1, (1,)), (7, 33, (9, 40)),
                                    (300, 64, (17,)), (600, 70, (32, 1)), (257, 8, (65,))])
@pytest.mark.parametrize("d_shared", [False, True])
@pytest.mark.parametrize("sums", [(False, False), (True, False), (False, True), (True, True)])
def test_transposed_products_match_float64(N, G, Ps, d_shared, sums):
    """dᵀ x for each pair (d, x), and each d's column sums where asked, from the native call
    (products.cc) against float64 sums of the same float32 numbers; a d shared by both pairs
    read once; and the same bits on 1, 2 and 3 threads (the threads split d's columns, so
    every sum runs in one order)."""
    from tests.helpers import TOL, rel_error
    keys = jax.random.split(jax.random.PRNGKey(N + G), 2 + len(Ps))
    d1 = jax.random.normal(keys[0], (N, G), jnp.float32)
    d2 = d1 if d_shared else jax.random.normal(keys[1], (N, G), jnp.float32)
    xs = [jax.random.normal(k, (N, P), jnp.float32) for k, P in zip(keys[2:], Ps)]
    ds = (d1, d2)[:len(Ps)]
    sums = sums[:len(Ps)]

    def call(n):
        def f(d1, d2, xs):
            d = (d1, d1 if d_shared else d2)
            return native.transposed_products(tuple(zip(d, xs)), sums=sums, num_threads=n)
        products, column_sums = jax.jit(f)(d1, d2, xs)
        assert [s is None for s in column_sums] == [not w for w in sums]
        return [np.asarray(a) for a in products + tuple(s for s in column_sums if s is not None)]

    d64 = [np.asarray(d, np.float64) for d in ds]
    wants = ([d.T @ np.asarray(x, np.float64) for d, x in zip(d64, xs)]
             + [d.sum(0) for d, w in zip(d64, sums) if w])
    runs = [call(n) for n in (1, 2, 3)]
    for got, want in zip(runs[0], wants, strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        if N == 0:
            np.testing.assert_array_equal(got, np.zeros(want.shape))
            continue
        assert rel_error(got.astype(np.float64), want) <= TOL[jnp.float32]
        # each entry, not only the norm: a dropped chunk, block or panel would show here
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(N))
    for run in runs[1:]:
        for got, ref in zip(run, runs[0], strict=True):
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("T,B,H", [(1, 3, 5), (9, 4, 40), (70, 5, 33)])
@pytest.mark.parametrize("reverse", [False, True])
def test_states_read_in_place_equal_the_built_ones(T, B, H, reverse):
    """StatesRead(hs, h0, reverse) as an operand: the call reads h0's rows and hs's rows
    shifted by one step where it copies its panels; the products and sums are those of
    the built recurrence.states_read, bit for bit, in either pair, on 1 and 2 threads."""
    from jrnn import recurrence
    keys = jax.random.split(jax.random.PRNGKey(T * B), 4)
    d = jax.random.normal(keys[0], (T * B, 7), jnp.float32)
    hs = jax.random.normal(keys[1], (T, B, H), jnp.float32)
    h0 = jax.random.normal(keys[2], (B, H), jnp.float32)
    x = jax.random.normal(keys[3], (T * B, 3), jnp.float32)
    built = recurrence.states_read(hs, h0, reverse).reshape(T * B, H)
    read = native.StatesRead(hs, h0, reverse)
    for n in (1, 2):
        for pairs, ref in ((((d, read), (d, x)), ((d, built), (d, x))),
                           (((d, x), (d, read)), ((d, x), (d, built)))):
            got = native.transposed_products(pairs, sums=(True, True), num_threads=n)
            want = native.transposed_products(ref, sums=(True, True), num_threads=n)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    with pytest.raises(ValueError, match=r"StatesRead: expected hs \(T, B, H\) with T·B = "
                                         r"7 rows and h0 \(B, H\), got hs \(2, 3, 5\) and "
                                         r"h0 \(3, 5\)"):
        read = native.StatesRead(jnp.ones((2, 3, 5)), jnp.ones((3, 5)), reverse)
        native.transposed_products(((jnp.ones((7, 2)), read),))


def test_transposed_products_take_one_or_two_pairs():
    d = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"pairs: expected one or two \(d, x\) pairs, got 3"):
        native.transposed_products(((d, d),) * 3)
    with pytest.raises(ValueError, match=r"sums: expected one flag per pair \(1\), got 2"):
        native.transposed_products(((d, d),), sums=(True, False))


# N: under one tile of 8 rows, a partial block of 64 rows, several blocks on up to three
# threads (256 rows a thread); K: 1, under and over a vector; M: under one panel of 32
# columns, a full one, full and partial panels
@pytest.mark.parametrize("N,K,M", [(0, 3, 5), (1, 1, 1), (7, 5, 33), (70, 17, 32),
                                   (600, 64, 70), (800, 9, 100)])
def test_rows_times_weights_match_float64(N, K, M):
    """a W from the native call (products.cc) against float64 products of the same float32
    numbers, entry by entry; the same bits on 1, 2 and 3 threads (each output row is one
    thread's)."""
    from tests.helpers import TOL, rel_error
    ka, kw = jax.random.split(jax.random.PRNGKey(N + K + M))
    a = jax.random.normal(ka, (N, K), jnp.float32)
    W = jax.random.normal(kw, (K, M), jnp.float32)
    runs = [np.asarray(jax.jit(lambda a, W, n=n: native.rows_times_weights(
        a, W, num_threads=n))(a, W)) for n in (1, 2, 3)]
    want = np.asarray(a, np.float64) @ np.asarray(W, np.float64)
    got = runs[0]
    assert got.shape == (N, M) and got.dtype == np.float32
    if N:
        assert rel_error(got.astype(np.float64), want) <= TOL[jnp.float32]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    for run in runs[1:]:
        np.testing.assert_array_equal(run, got)


def test_rows_times_weights_names_mismatched_shapes():
    a = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(ValueError,
                       match=r"expected \(N, K\) and \(K, M\), got \(4, 3\) and \(2, 5\)"):
        native.rows_times_weights(a, jnp.ones((2, 5), jnp.float32))
    with pytest.raises(ValueError, match=r"got \(4, 3, 1\) and \(3, 5\)"):
        native.rows_times_weights(a[..., None], jnp.ones((3, 5), jnp.float32))


def test_kept_threads_and_new_ones_give_the_same_numbers(monkeypatch):
    """The helper threads are kept between calls (JRNN_NATIVE_POOL=0: started per call, read
    at every call); thread counts that change from call to call replace the pool. Every
    number is the same either way: the LSTM's and the GRU's forward and gradients, bit for
    bit, over 1, 2, 3 and 2 threads again."""
    import jrnn
    results = {}
    for cell in ("lstm", "gru"):
        (U, W, b, b_r, xs, h0), weights = _driver_problem(T=7, B=9, D=5, H=40, cell=cell)

        def loss(U, W, b, b_r, xs, h0):
            hs, _ = jrnn.rnn(cell, U, W, b, xs, h0, b_r=b_r, kernel="native")
            return jnp.sum(weights * jnp.sin(hs))
        for pool in ("0", "1"):
            monkeypatch.setenv("JRNN_NATIVE_POOL", pool)
            for threads in (1, 2, 3, 2):
                monkeypatch.setenv("JRNN_NATIVE_THREADS", str(threads))
                # the thread count is read when jit traces
                step = jax.jit(jax.value_and_grad(loss, argnums=range(6)))
                results.setdefault((cell, threads), []).append(step(U, W, b, b_r, xs, h0))
    for runs in results.values():
        for got in runs[1:]:
            for g, ref in zip(jax.tree.leaves(got), jax.tree.leaves(runs[0]), strict=True):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(ref))


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_splitting_rows_or_units_over_the_threads_changes_no_number(cell, monkeypatch):
    """The threads split a batch's rows where each gets enough of them (both loops from 4
    rows a thread), else the hidden units: B 6 and 12 on 1, 2 and 3 threads (units at B 6;
    rows, 6 and 4 a thread, at B 12) give the same loss, gradients and final state, bit for
    bit, both directions."""
    import jrnn
    for B in (6, 12):
        (U, W, b, b_r, xs, h0), weights = _driver_problem(T=4, B=B, D=5, H=40, cell=cell)
        results = []
        for threads in (1, 2, 3):
            monkeypatch.setenv("JRNN_NATIVE_THREADS", str(threads))

            def loss(U, W, b, b_r, xs, h0):
                total = 0.0
                for reverse in (False, True):
                    hs, final = jrnn.rnn(cell, U, W, b, xs, h0, b_r=b_r, reverse=reverse,
                                         kernel="native")
                    total += jnp.sum(weights * jnp.sin(hs)) + sum(
                        jnp.sum(jnp.cos(f)) for f in jax.tree.leaves(final))
                return total
            results.append(jax.jit(jax.value_and_grad(loss, argnums=range(6)))(
                U, W, b, b_r, xs, h0))
        for got in results[1:]:
            for g, ref in zip(jax.tree.leaves(got), jax.tree.leaves(results[0]), strict=True):
                np.testing.assert_array_equal(np.asarray(g), np.asarray(ref))


def test_calls_from_two_threads_at_once():
    """Two Python threads calling native kernels at once: one holds the kept helper threads,
    the other starts its own (or waits its turn); both get the numbers of a lone call."""
    import threading

    import jrnn
    (U, W, b, b_r, xs, h0), weights = _driver_problem(T=40, B=8, D=5, H=64, cell="gru")
    f = jax.jit(lambda xs: jnp.sum(weights * jrnn.rnn("gru", U, W, b, xs, h0, b_r=b_r,
                                                        kernel="native")[0]))
    inputs = [xs * (1 + 0.1 * i) for i in range(4)]
    want = [np.asarray(f(x)) for x in inputs]
    got, errors = {}, []

    def run(i):
        try:
            for _ in range(25):
                got.setdefault(i, []).append(np.asarray(f(inputs[i])))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert not errors and not any(w.is_alive() for w in workers)
    for i, values in got.items():
        assert len(values) == 25
        for v in values:
            np.testing.assert_array_equal(v, want[i])


_HUGE_PAGES_PROBE = """
import json, jax, jax.numpy as jnp
from jrnn import native
k = jax.random.split(jax.random.key(0), 3)
xs = jax.random.normal(k[0], (500, 4, 5), jnp.float32)
U = jax.random.normal(k[1], (3 * 600, 5), jnp.float32) * 0.3
W = jax.random.normal(k[2], (3 * 600, 600), jnp.float32) * 0.03
(hs,), _, _ = native.forward_inputs("gru", xs, U, None, W, None,
                                    (jnp.zeros((4, 600), jnp.float32),), reverse=False)
print(json.dumps([float(hs.sum()), float(jnp.abs(hs).sum())]))
"""


def test_huge_pages_hint_changes_no_result():
    """The outputs' transparent-huge-page hint (on by default, JRNN_NATIVE_HUGE_PAGES=0 off;
    read once per process) leaves every number as it is: outputs of 4.8 MB, so that each
    holds a whole 2 MiB page, with and without it."""
    import os
    import subprocess
    import sys
    results = []
    for flag in ("1", "0"):
        env = {**os.environ, "JRNN_NATIVE_HUGE_PAGES": flag, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, "-c", _HUGE_PAGES_PROBE], capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0][1] > 0


def test_build_command_runs():
    """The README's ``python -m jrnn.native build``: builds (or finds) and loads the library."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "jrnn.native", "build"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("loaded")


def test_isa_follows_the_cpu_and_the_variable(monkeypatch):
    """AVX-512 where the CPU has F, DQ and VL; JRNN_NATIVE_ISA chooses, and a wrong value
    or an AVX-512 request on a CPU without it is an error naming the variable."""
    monkeypatch.delenv("JRNN_NATIVE_ISA", raising=False)
    monkeypatch.setattr(native, "_cpu_flags", lambda: {"avx2", "fma", "avx512f", "avx512dq",
                                                       "avx512vl"})
    assert native.isa() == "avx512"
    monkeypatch.setenv("JRNN_NATIVE_ISA", "avx2")
    assert native.isa() == "avx2"
    assert "-mavx512f" not in native._flags()
    monkeypatch.setenv("JRNN_NATIVE_ISA", "sse")
    with pytest.raises(ValueError, match="JRNN_NATIVE_ISA must be one of.*'sse'"):
        native.isa()
    monkeypatch.setattr(native, "_cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    monkeypatch.setenv("JRNN_NATIVE_ISA", "avx512")
    with pytest.raises(ValueError, match="JRNN_NATIVE_ISA=avx512, but this CPU lacks"):
        native.isa()
    monkeypatch.delenv("JRNN_NATIVE_ISA")
    assert native.isa() == "avx2"


def test_gru_packing_follows_the_loaded_build():
    """The GRU's unit block is the loaded library's vector (16 units with AVX-512, else 8),
    and the packed weights have that block: (ceil(H/units), K, 3, units)."""
    units = native.gru_units()
    assert units == {"avx512": 16, "avx2": 8}[native.isa()]
    W = jnp.arange(3 * 13 * 5, dtype=jnp.float32).reshape(3 * 13, 5)
    packed = native.pack_weights(W, 13, gates=3, units=units)
    assert packed.shape == (-(-13 // units), 5, 3, units)
    assert packed[0, 2, 1, 3] == W[13 + 3, 2]  # block 0, input 2, gate z, unit 3
    assert packed[-1, 0, 2, (13 - 1) % units] == W[2 * 13 + 12, 0]
    assert (packed[-1, :, :, 13 % units or units:] == 0).all()  # units past H


@pytest.mark.slow
@pytest.mark.skipif(native.isa() != "avx512", reason="this CPU runs the AVX2 build already")
def test_avx2_build_on_an_avx512_cpu():
    """On a CPU with AVX-512 the suite above tests that build; here the AVX2 build (what a
    CPU without AVX-512 runs) passes the drivers' and the sampler's comparisons with the
    scan, in a process of its own."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "JRNN_NATIVE_ISA": "avx2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         "tests/test_native.py::test_driver_native_equals_scan",
         "tests/test_native_sampler.py::test_native_sampler_draws_the_scans_tokens"],
        capture_output=True, text=True, env=env, timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout



def test_benchmark_runs(capsys, tmp_path):
    """The README's ``python -m jrnn.bench.native`` (one round at S): every variant beside
    PyTorch's LSTM, at both levels, into the results files."""
    pytest.importorskip("torch")
    from jrnn.bench import native as bench
    assert bench.main(["--configs", "S", "--levels", "loop", "model", "--rounds", "1",
                       "--calls", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "native train" in out and "torch train" in out
    rows = json.loads((tmp_path / "cpu_native.json").read_text())["rows"]
    assert {(r["level"], r["impl"]) for r in rows} >= {("model", "native train"),
                                                       ("model", "torch train"),
                                                       ("loop", "scan")}
    assert all(r["ms"] > 0 and r["torch_over_this"] > 0 for r in rows)
    table = (tmp_path / "cpu_native.md").read_text()
    assert "| S | model | native train |" in table
