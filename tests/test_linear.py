"""The linear-recurrence driver (jrnn.linear) and its cells: the hand-written adjoint
scan against autodiff, the two modes against each other, and the driver's options."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn import linear
from jrnn.cells import linear_contract, lru

CELLS = linear_contract.names()
T, B, D, N = 9, 3, 4, 5
# The scan modes with their backwards (jrnn.linear.ADJOINTS): each mode's own (the
# reverse loop; the two parallel scans), and the blocked one after the sequential forward,
# where it recomputes the a_t that the parallel forward hands it. (The reverse loop after
# the parallel forward is the gradient table's row "layer-parallel-sequential".)
SCHEMES = {"sequential": {"mode": "sequential", "adjoint": "sequential"},
           "sequential-blocked": {"mode": "sequential", "adjoint": "blocked"},
           **{f"parallel-{adjoint}": {"mode": "parallel", "adjoint": adjoint}
              for adjoint in ("blocked", "associative")}}


def _setup(cell, dtype=jnp.float64, T=T, B=B, N=N, seed=0):
    k = jax.random.split(jax.random.key(seed), 8)
    c = linear_contract.get(cell)
    U = jax.random.normal(k[0], (c.blocks * N, D), dtype)
    bias = None if cell == "lru" else jax.random.normal(k[1], (c.blocks * N,), dtype)
    params = None
    if cell == "lru":  # a ring well inside the unit circle, so that nothing saturates
        params = lru.init_params(k[2], N, dtype, r_min=0.5, r_max=0.95)
    xs = jax.random.normal(k[3], (T, B, D), dtype)
    h0 = 0.5 * jax.random.normal(k[4], (B, N), dtype)
    if c.complex_state:
        h0 = jax.lax.complex(h0, 0.5 * jax.random.normal(k[5], (B, N), dtype))
    G = jax.random.normal(k[6], (T, B, N), dtype)
    G_final = jax.random.normal(k[7], (B, N), dtype)
    return U, bias, params, xs, h0, G, G_final


def _loss(cell, scheme, backward, options, G, G_final):
    def loss(U, bias, params, xs, h0):
        hs, final = linear.linear_rnn(cell, U, bias, xs, h0, cell_params=params,
                                      backward=backward, **SCHEMES[scheme], **options)
        # Both parts of a complex state reach the loss, with different weights.
        return (jnp.sum(jnp.real(hs) * G) + 0.3 * jnp.sum(jnp.imag(hs) * G)
                + jnp.sum(jnp.real(final) * G_final) - 0.7 * jnp.sum(jnp.imag(final) * G_final))
    return loss


def _relative(a, b):
    return max(float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


OPTIONS = {
    "plain": {},
    "lengths": {"lengths": jnp.array([9, 4, 0])},
    "reverse": {"reverse": True, "lengths": jnp.array([9, 6, 1])},
    "mask": {"mask": jnp.asarray(np.random.default_rng(0).random((T, B)) > 0.3)},
    "reset": {"reset": jnp.asarray(np.random.default_rng(2).random((T, B)) > 0.7),
              "lengths": jnp.array([9, 5, 2]), "reverse": True},
}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("cell", CELLS)
def test_hand_written_gradients_match_autodiff_in_float64(cell, scheme, option):
    U, bias, params, xs, h0, G, G_final = _setup(cell)
    args = (U, bias, params, xs, h0)
    grads = {bw: jax.grad(_loss(cell, scheme, bw, OPTIONS[option], G, G_final),
                          argnums=(0, 1, 2, 3, 4))(*args) for bw in ("manual", "autodiff")}
    assert _relative(grads["manual"], grads["autodiff"]) < 1e-10
    # Every leaf is nonzero, so that a dropped term cannot hide behind a zero.
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads["autodiff"]))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_lru_with_a_bias_matches_autodiff(scheme):
    """The LRU's γ gradient with a bias: the sequential backward takes it from the weights
    (Σ_d dU ⊙ U + dbias ⊙ bias), which is exact only if the bias term is there."""
    U, _, params, xs, h0, G, G_final = _setup("lru")
    bias = jax.random.normal(jax.random.key(9), (U.shape[0],), U.dtype)
    grads = {bw: jax.grad(_loss("lru", scheme, bw, OPTIONS["reset"], G, G_final),
                          argnums=(0, 1, 2, 3, 4))(U, bias, params, xs, h0)
             for bw in ("manual", "autodiff")}
    assert _relative(grads["manual"], grads["autodiff"]) < 1e-10


@pytest.mark.parametrize("cell", CELLS)
def test_hand_written_gradients_match_autodiff_in_float32(cell):
    U, bias, params, xs, h0, G, G_final = jax.tree.map(
        lambda a: a.astype(jnp.complex64 if jnp.iscomplexobj(a) else jnp.float32), _setup(cell))
    for scheme in SCHEMES:
        grads = {bw: jax.grad(_loss(cell, scheme, bw, OPTIONS["lengths"], G, G_final),
                              argnums=(0, 1, 2, 3, 4))(U, bias, params, xs, h0)
                 for bw in ("manual", "autodiff")}
        assert _relative(grads["manual"], grads["autodiff"]) < 1e-5


@pytest.mark.parametrize("option", ["plain", "reverse", "mask", "reset"])
@pytest.mark.parametrize("cell", CELLS)
def test_parallel_and_sequential_modes_agree(cell, option):
    U, bias, params, xs, h0, G, G_final = _setup(cell, T=300, seed=1)
    options = dict(OPTIONS[option])
    if "mask" in options:
        options["mask"] = jnp.asarray(np.random.default_rng(1).random((300, B)) > 0.3)
    if "reset" in options:
        options["reset"] = jnp.asarray(np.random.default_rng(1).random((300, B)) > 0.95)
    if "lengths" in options:
        options["lengths"] = jnp.array([300, 170, 1])
    out, grads = {}, {}
    for scheme in SCHEMES:
        out[scheme] = linear.linear_rnn(cell, U, bias, xs, h0, cell_params=params,
                                        **SCHEMES[scheme], **options)
        grads[scheme] = jax.grad(_loss(cell, scheme, "manual", options, G, G_final),
                                 argnums=(0, 1, 2, 3, 4))(U, bias, params, xs, h0)
    for scheme in SCHEMES:
        assert _relative(out[scheme], out["sequential"]) < 1e-12
        assert _relative(grads[scheme], grads["sequential"]) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_modes_agree_at_65536_steps(cell):
    U, bias, params, xs, h0, G, G_final = _setup(cell, T=65536, B=2, N=3, seed=2)
    options = {"lengths": jnp.array([65536, 40000]), "reverse": True}
    grads = {scheme: jax.jit(jax.grad(_loss(cell, scheme, "manual", options, G, G_final),
                                      argnums=(0, 1, 2, 3, 4)))(U, bias, params, xs, h0)
             for scheme in SCHEMES}
    for scheme in SCHEMES:
        assert _relative(grads[scheme], grads["sequential"]) < 1e-10


@pytest.mark.parametrize("cell", CELLS)
def test_the_recurrence_is_the_cells_equations(cell):
    """One step by hand from the published equations, against the driver."""
    U, bias, params, xs, h0, *_ = _setup(cell, T=1)
    P = xs[0] @ U.T + (0 if bias is None else bias[None])
    if cell == "mingru":
        k, h_tilde = jnp.split(P, 2, axis=-1)
        z = jax.nn.sigmoid(k)
        expected = (1 - z) * h0 + z * h_tilde
    elif cell == "minlstm":
        k_f, k_i, h_tilde = jnp.split(P, 3, axis=-1)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        expected = f / (f + i) * h0 + i / (f + i) * h_tilde
    else:
        lam = np.exp(-np.exp(params.nu_log) + 1j * np.exp(params.theta_log))
        P_re, P_im = np.split(np.asarray(P), 2, axis=-1)
        expected = lam[None] * np.asarray(h0) + np.exp(params.gamma_log)[None] * (P_re + 1j * P_im)
    for mode in linear.MODES:
        hs, final = linear.linear_rnn(cell, U, bias, xs, h0, cell_params=params, mode=mode)
        np.testing.assert_allclose(hs[0], expected, rtol=1e-13)
        np.testing.assert_allclose(final, expected, rtol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
def test_step_by_step_generation_matches_the_scan(cell):
    U, bias, params, xs, h0, *_ = _setup(cell)
    hs, final = linear.linear_rnn(cell, U, bias, xs, h0, cell_params=params)
    h = h0
    for t in range(T):
        h = linear.linear_step(cell, U, bias, xs[t], h, params)
        np.testing.assert_allclose(h, hs[t], rtol=1e-12)
    np.testing.assert_allclose(h, final, rtol=1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_carries_the_final_state(cell, scheme):
    """Two chunks, the first's final state the second's h0: the same outputs as one run,
    and the gradient through the carried state matches autodiff."""
    U, bias, params, xs, h0, G, G_final = _setup(cell)
    run = lambda *a, **k: linear.linear_rnn(cell, *a, cell_params=params, **SCHEMES[scheme],
                                            **k)
    whole, _ = run(U, bias, xs, h0)

    def chunked(U, bias, params, xs, h0, backward):
        first, h = run(U, bias, xs[:4], h0, backward=backward)
        second, _ = run(U, bias, xs[4:], h, backward=backward)
        return jnp.concatenate([first, second])

    np.testing.assert_allclose(chunked(U, bias, params, xs, h0, "manual"), whole, rtol=1e-12)
    grads = {bw: jax.grad(lambda *a: jnp.sum(jnp.real(chunked(*a, bw)) * G),
                          argnums=(0, 1, 2, 3, 4))(U, bias, params, xs, h0)
             for bw in ("manual", "autodiff")}
    assert _relative(grads["manual"], grads["autodiff"]) < 1e-10


def test_lru_sequential_backward_is_not_unrolled_into_copies():
    """The LRU's reverse loop overwrites its cotangent rows in place; unrolled, XLA copied
    the whole (T, B, 2N) buffer at every step (20–30× slower, more temporary memory).
    The backward ignores ``unroll``, so the compiled step at unroll 8 holds no more
    temporary memory than at unroll 1."""
    T_long = 256
    U, bias, params, xs, h0, G, G_final = _setup("lru", dtype=jnp.float32, T=T_long)

    def temp_bytes(u):
        loss = lambda U, xs: jnp.sum(jnp.real(linear.linear_rnn(
            "lru", U, None, xs, h0, cell_params=params, mode="sequential", adjoint="sequential",
            unroll=u)[0]))
        step = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return step.lower(U, xs).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(8) <= temp_bytes(1)


@pytest.mark.parametrize("cell", CELLS)
def test_unrolled_sequential_loops_compute_the_same(cell):
    """``unroll`` (16 by default on GPUs) changes the loops' code, not their arithmetic:
    the forward and every gradient equal those of unroll 1, with restarts and lengths."""
    U, bias, params, xs, h0, G, G_final = _setup(cell)
    run = {u: jax.value_and_grad(lambda *a, u=u: _loss(cell, "sequential", "manual", dict(
        OPTIONS["reset"], unroll=u), G, G_final)(*a), argnums=(0, 1, 2, 3, 4))
           for u in (1, 4)}
    (v1, g1), (v4, g4) = (run[u](U, bias, params, xs, h0) for u in (1, 4))
    np.testing.assert_allclose(v4, v1, rtol=1e-13)
    assert _relative(g4, g1) < 1e-13


@pytest.mark.parametrize("cell", CELLS)
def test_masked_steps_keep_the_state_and_hide_nans(cell):
    U, bias, params, xs, h0, G, G_final = _setup(cell)
    lengths = jnp.array([9, 4, 0])
    padded = jnp.where((jnp.arange(T)[:, None] >= lengths[None])[..., None], jnp.nan, xs)
    for scheme in SCHEMES:
        hs, final = linear.linear_rnn(cell, U, bias, padded, h0, cell_params=params,
                                      lengths=lengths, **SCHEMES[scheme])
        short, short_final = linear.linear_rnn(cell, U, bias, xs[:4, 1:2], h0[1:2],
                                               cell_params=params, **SCHEMES[scheme])
        np.testing.assert_allclose(final[1:2], short_final, rtol=1e-12)
        np.testing.assert_allclose(hs[:4, 1:2], short, rtol=1e-12)
        assert float(jnp.max(jnp.abs(hs[4:, 1]))) == 0
        np.testing.assert_array_equal(final[2], h0[2])  # length 0: the initial state
        grads = jax.grad(_loss(cell, scheme, "manual", {"lengths": lengths}, G, G_final),
                         argnums=(0, 1, 2, 3, 4))(U, bias, params, padded, h0)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_sequence_is_a_batch_of_one(cell):
    U, bias, params, xs, h0, *_ = _setup(cell)
    hs, final = linear.linear_rnn(cell, U, bias, xs[:, 0], h0[0], cell_params=params)
    batched, batched_final = linear.linear_rnn(cell, U, bias, xs[:, :1], h0[:1],
                                               cell_params=params)
    np.testing.assert_allclose(hs, batched[:, 0], rtol=1e-14)
    np.testing.assert_allclose(final, batched_final[0], rtol=1e-14)


def test_lru_initial_eigenvalues_lie_on_the_ring():
    p = lru.init_params(jax.random.key(0), 4096, jnp.float64, r_min=0.6, r_max=0.8,
                        max_phase=1.0)
    lam = lru.eigenvalues(p)
    modulus, phase = np.abs(lam), np.angle(lam)
    assert 0.6 <= modulus.min() and modulus.max() <= 0.8
    assert modulus.min() < 0.61 and modulus.max() > 0.79  # the whole ring, not a point
    assert 0 <= phase.min() and phase.max() <= 1.0
    np.testing.assert_allclose(np.exp(p.gamma_log), np.sqrt(1 - modulus ** 2), rtol=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda: lru.init_params(jax.random.key(0), 4, r_min=0.0), ValueError,
     r"r_min: expected a number in \(0, 1\].*got 0.0"),
    (lambda: lru.init_params(jax.random.key(0), 4, r_max=1.5), ValueError,
     r"r_max: expected a number in \(0, 1\].*got 1.5"),
    (lambda: lru.init_params(jax.random.key(0), 4, r_min=0.9, r_max=0.5), ValueError,
     r"r_min: expected r_min <= r_max = 0.5, got 0.9"),
    (lambda: linear.linear_rnn("mingru", jnp.ones((8, 3)), None, jnp.ones((5, 2, 3)),
                               mode="scan"), ValueError,
     r"mode: expected one of \('parallel', 'sequential'\) or None, got 'scan'"),
    (lambda: linear.linear_rnn("mingru", jnp.ones((8, 3)), None, jnp.ones((5, 2, 3)),
                               mode="parallel", adjoint="reverse"), ValueError,
     r"adjoint: expected one of \('associative', 'blocked', 'sequential'\) or None, "
     r"got 'reverse'"),
    (lambda: linear.linear_rnn("mingru", jnp.ones((8, 3)), None, jnp.ones((5, 2, 3)),
                               unroll=0), ValueError, r"unroll: expected an int >= 1, got 0"),
    (lambda: linear.linear_rnn("minlstm", jnp.ones((8, 3)), None, jnp.ones((5, 2, 3))),
     ValueError, r"U: expected shape \(3·N, D\).*got \(8, 3\)"),
    (lambda: linear.linear_rnn("mingru", jnp.ones((8, 3)), None,
                               jnp.ones((5, 2, 3), jnp.complex64)), TypeError,
     r"xs: expected a floating dtype, got complex64"),
    (lambda: linear.linear_rnn("lru", jnp.ones((8, 3), jnp.complex64), None,
                               jnp.ones((5, 2, 3))), TypeError,
     r"U: expected a floating dtype, got complex64"),
    (lambda: linear.linear_rnn("lru", jnp.ones((8, 3)), None, jnp.ones((5, 2, 3))),
     ValueError, r"cell_params: cell 'lru' needs its own parameters"),
    (lambda: linear.linear_rnn("lru", jnp.ones((8, 3), jnp.float32), None,
                               jnp.ones((5, 2, 3), jnp.float32), jnp.ones((2, 4), jnp.float32),
                               cell_params=lru.init_params(jax.random.key(0), 4)), TypeError,
     r"h0: expected dtype complex64 .*got float32"),
    (lambda: linear.linear_rnn("gru", jnp.ones((8, 3)), None, jnp.ones((5, 2, 3))),
     ValueError, r"cell: expected one of the linear cells .*got 'gru'"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_lru_layer_gradients_match_autodiff_with_real_inputs_and_outputs():
    from jrnn import lru as lru_layer
    p = lru_layer.init(jax.random.key(0), hidden_size=3, state_size=4, r_min=0.5, r_max=0.95,
                       dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (7, 2, 3), jnp.float64)
    lengths = jnp.array([7, 3])
    padded = jnp.where((jnp.arange(7)[:, None] >= lengths[None])[..., None], jnp.nan, xs)
    for mode in linear.MODES:
        def loss(p, xs, backward):
            ys, final = lru_layer.apply(p, xs, lengths=lengths, mode=mode, backward=backward)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.abs(final) ** 2)
        ys, _ = lru_layer.apply(p, padded, lengths=lengths, mode=mode)
        assert ys.dtype == jnp.float64 and float(jnp.max(jnp.abs(ys[3:, 1]))) == 0
        grads = {bw: jax.grad(loss)(p, padded, bw) for bw in ("manual", "autodiff")}
        assert _relative(grads["manual"], grads["autodiff"]) < 1e-10
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads["manual"]))


@pytest.mark.parametrize("call, match", [
    (lambda: __import__("jrnn").layers.init_layer(jax.random.key(0), "lru", 3, 4),
     r"cell: 'lru' has a complex state and its own readout"),
    (lambda: __import__("jrnn").layers.run_stack(
        __import__("jrnn").layers.init_stack(jax.random.key(0), "mingru", 3, 4),
        jnp.ones((5, 2, 3)), dropout=__import__("jrnn").dropout.Dropout(input=0.1,
                                                                          recurrent=0.2),
        key=jax.random.key(1), training=True),
     r"dropout.recurrent: the linear cell 'mingru' takes input and between-layer dropout "
     r"only: recurrent dropout acts on h_\{t-1\} where it feeds the recurrent matrix W, "
     r"and a linear cell has none .*; got 0.2"),
    (lambda: __import__("jrnn").layers.run_stack(
        __import__("jrnn").layers.init_stack(jax.random.key(0), "minlstm", 3, 4),
        jnp.ones((5, 2, 3)), dropout=__import__("jrnn").dropout.Dropout(zoneout=0.1),
        training=False),
     r"dropout.zoneout: the linear cell 'minlstm' takes input and between-layer dropout "
     r"only: zoneout is not implemented by the linear driver"),
    (lambda: __import__("jrnn").layers.run_stack(
        __import__("jrnn").layers.init_stack(jax.random.key(0), "minlstm", 3, 4),
        jnp.ones((5, 2, 3)), matmul_dtype="bfloat16"),
     r"matmul_dtype: the linear cell 'minlstm' runs on jrnn.linear, which has no "
     r"matmul_dtype; got 'bfloat16'"),
])
def test_layers_refuse_what_a_linear_cell_cannot_do(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_adapters_run_linear_cells_and_pytorch_refuses_them():
    """The Flax NNX module runs a linear stack as layers.run_stack does; torch.nn has no
    minGRU or minLSTM, so converting one is refused by name."""
    import jrnn
    nnx = pytest.importorskip("flax.nnx")
    import jrnn.nnx as jnnx
    module = jnnx.RNN("mingru", 3, 4, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(0), (2, 5, 3), jnp.float64)  # batch-major
    expected, _ = jrnn.layers.run_stack(module.stack, jnp.swapaxes(xs, 0, 1))
    np.testing.assert_allclose(module(xs), jnp.swapaxes(expected, 0, 1), rtol=1e-12)
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"stack: cell 'minlstm' has no torch.nn counterpart"):
        jrnn.pytorch.to_torch(jrnn.layers.init_stack(jax.random.key(0), "minlstm", 3, 4))
