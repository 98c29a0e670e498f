r"""The second driver: linear recurrences, by a parallel or a sequential scan.

For a linear cell (:mod:`jrnn.cells.linear_contract`: minGRU, minLSTM, LRU) and
inputs ``xs`` (T, B, D):

.. math::

    P &= X U^\top + \text{bias}     && \text{one matmul, all } T \cdot B \text{ rows} \\
    (a_t, b_t) &= \text{cell}(P_t)  && \text{pointwise} \\
    h_t &= a_t \odot h_{t-1} + b_t  && \text{the scan}

The scan runs in one of two modes. ``"parallel"``: ``jax.lax.associative_scan``
over the pairs (a_t, b_t) with (a, b) ∘ (a', b') = (a a', a' b + b'), O(log T)
depth (Blelloch 1990; for RNNs Martin & Cundy 2018). ``"sequential"``:
``lax.scan``, T steps of O(1) depth each. Both give the same h_t up to rounding.

The backward is written by hand (``jax.custom_vjp``): the adjoint of a linear
recurrence is the same linear recurrence run backwards. With g_t the cotangent of
h_t (plus that of the final state at t = T),

.. math::

    \lambda_t = g_t + \bar a_{t+1} \odot \lambda_{t+1}, \qquad
    da_t = \lambda_t \odot \bar h_{t-1}, \qquad db_t = \lambda_t, \qquad
    dh_0 = \bar a_1 \odot \lambda_1

(bars: complex conjugates, for the LRU's complex state). The adjoint runs in one of
three schemes (the ``adjoint`` argument), whichever mode ran the forward:

* ``"sequential"``: a reverse ``lax.scan``, T steps, fused with the cell's VJP;
* ``"associative"``: μ_t = conj(a_t) λ_t obeys μ_t = conj(a_t) ⊙ μ_{t+1} +
  conj(a_t) ⊙ g_t, a linear recurrence in reverse time, so the forward's own
  ``associative_scan`` with ``reverse=True`` gives every μ_t at O(log T) depth;
  λ_t = g_t + μ_{t+1}, then everything else is pointwise or one matmul over all rows;
* ``"blocked"``: a blocked parallel scan (chunks of about √T steps: a reverse scan
  inside each chunk, the chunks' carries joined, Blelloch 1990 §1.4), depth ≈ 3√T,
  which never holds P or dP for all T.

Then the cell's pointwise VJP gives dP, and dU = dPᵀ X, dbias = Σ dP, dX = dP U,
each one matmul over all rows. The forward keeps the states h_t (the output) as
residuals, and in parallel mode the a_t its scan was given anyway (unless a is
constant or the adjoint is sequential), which the blocked and associative backwards
read (after a sequential forward they recompute a_t); P is recomputed from X in the backward
(one matmul, cheaper than storing and reading back 2–3 arrays of T·B·N).
docs/derivation.md derives it.

Default mode per platform (benchmarks/linear.py: the hand-written training step of
minGRU, B 8, D 64, H 256, T = 256 … 65,536; benchmarks/results/cpu_linear.md):

=========  ==========  ============================================================
platform   default     measured
=========  ==========  ============================================================
cpu        sequential  faster at every sweep point on a quiet machine, 0.48–0.82×
gpu        parallel    50× faster than sequential at T = 4,096 on an H100
=========  ==========  ============================================================

Default adjoint per mode and platform (the same benchmark; :func:`default_adjoint`):

==========  =========  ===========  ================================================
mode        platform   default      measured
==========  =========  ===========  ================================================
parallel    cpu        blocked      1.44–1.73× autodiff's speed at 0.37–0.43× its
                                    memory; associative 1.10–1.34× at 0.57–0.94×
                                    (T 1,024–16,384)
parallel    gpu        associative  on an H100 the blocked adjoint's ≈ 3√T loop
                                    steps ran 0.22–0.36× as fast as autodiff's
                                    log-depth transpose of the associative scan
                                    (kernel launches per step); the associative
                                    adjoint itself not yet timed on a GPU
sequential  cpu        sequential,  the LRU's backward recomputes nothing per step,
                       the LRU      so its blocked scheme ran 1.00 / 1.08 / 1.31×
                       blocked      as fast as its reverse loop (T 1,024 / 4,096 /
                                    16,384); minGRU's and minLSTM's blocked rescans
                                    recompute P_t and ran 0.89–1.03×
sequential  gpu        sequential   not measured
==========  =========  ===========  ================================================

Sequential mode's loops take ``unroll`` (:func:`jrnn.recurrence.default_unroll`
when None: 16 on GPUs, where each step is otherwise a few kernel launches), except the
reverse loop of a cell with a gain form (the LRU), which overwrites its cotangent rows in
place and stays at unroll 1 (:func:`_backward_sequential_gain`).

Options, as in :func:`jrnn.rnn`: ``mask``/``lengths`` (a masked step has a = 1,
b = 0: the state passes unchanged, the output is zero, no gradient reaches its
input), ``reset`` (a restart from h0 is the linear step a' = 0, b' = b + a h0),
``reverse``, ``h0`` and its gradient, and the final state (for
truncated BPTT). Reverse mode only on the manual path (``backward="autodiff"``
for ``jax.jvp``).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from jrnn import _checks, _diagnostics, _matmul
from jrnn.cells import linear_contract as _contract
from jrnn.recurrence import check_lengths, default_unroll, lengths_to_mask

__all__ = ["linear_rnn", "linear_step", "default_mode", "default_adjoint", "MODES",
           "ADJOINTS"]

MODES = ("parallel", "sequential")
ADJOINTS = ("associative", "blocked", "sequential")  # the backward's scheme, either mode
# Measured (module doc, benchmarks/NOTES.md).
_DEFAULT_MODE = {"cpu": "sequential", "gpu": "parallel", "cuda": "parallel",
                 "rocm": "parallel", "tpu": "parallel"}
_PARALLEL_ADJOINT = {"cpu": "blocked", "gpu": "associative", "cuda": "associative",
                     "rocm": "associative", "tpu": "associative"}


def default_mode(backend: Optional[str] = None) -> str:
    """The scan mode used when a caller passes ``mode=None``."""
    return _DEFAULT_MODE.get(backend or jax.default_backend(), "sequential")


def default_adjoint(backend: Optional[str] = None, *, mode: str = "parallel",
                    cell=None) -> str:
    """The backward used when a caller passes ``adjoint=None`` (module doc): in parallel
    mode the platform's; in sequential mode its reverse scan, except on the CPU for a cell
    with a gain form (the LRU), whose blocked backward recomputes nothing per step."""
    backend = backend or jax.default_backend()
    if mode == "parallel":
        return _PARALLEL_ADJOINT.get(backend, "blocked")
    gain = cell is not None and _contract.get(cell).gain_form is not None
    return "blocked" if gain and backend == "cpu" else "sequential"


@dataclasses.dataclass(frozen=True)
class _Static:
    cell: _contract.LinearCell
    mode: str
    adjoint: str = "blocked"  # the backward's scheme (ADJOINTS)
    unroll: int = 1  # sequential mode's loops
    record: Optional[int] = None  # jrnn.diagnostics: this layer's index while recording
    reverse: bool = False  # the inputs were reversed before the scan (for the recording)


def _rows(a):
    """(T, B, F) -> (T·B, F): a plain 2-D matmul runs about 2× faster on XLA:CPU than the
    same contraction over two axes (benchmarks/NOTES.md)."""
    return a.reshape(-1, a.shape[-1])


def _project(xs, U, blocks: int) -> tuple:
    """X Uᵀ as ``blocks`` arrays (T, B, N), one 2-D matmul per block. The bias joins
    in the pointwise code (:func:`_masked`), where it fuses into the cell's kernel."""
    rows = _rows(xs)
    return tuple((rows @ U_k.T).reshape(xs.shape[:-1] + (-1,))
                 for U_k in jnp.split(U, blocks, axis=0))


def _split_bias(bias, blocks: int):
    return None if bias is None else tuple(jnp.split(bias, blocks))


def _biased(P, bias):
    """P + bias, block by block (``bias`` a tuple of (N,) blocks or None)."""
    if bias is None:
        return P
    return tuple(p + b_k.reshape((1,) * (p.ndim - 1) + (-1,)) for p, b_k in zip(P, bias))


def _masked(cell, P, params, flags, bias=None, h0=None):
    """(a, b) of a step or a sequence from X Uᵀ (``P``) and the bias blocks, with the
    step flags ``(mask, reset)`` (either may be None): where reset, the step restarts
    from h0, h_t = a_t h0 + b_t, itself a linear step (a' = 0, b' = b + a h0); where the
    mask is False, a = 1 and b = 0."""
    m, r = flags
    a, b = cell.coefficients(_biased(P, bias), params)
    a = jnp.broadcast_to(a, b.shape)  # a constant a (N,) is shared by every row
    if r is not None:
        r = r[..., None]
        b = jnp.where(r, b + a * jnp.broadcast_to(h0, b.shape), b)
        a = jnp.where(r, jnp.zeros((), a.dtype), a)
    if m is None:
        return a, b
    m = m[..., None]
    return (jnp.where(m, a, jnp.ones((), a.dtype)), jnp.where(m, b, jnp.zeros((), b.dtype)))


def _combine(first, second):
    """(a, b) then (a', b'): h ↦ a'(a h + b) + b'."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def _forward(static, U, bias, xs, h0, mask, reset, params):
    """Outputs hs (zeros at masked steps), the final state, every state h_t, and in
    parallel mode the a_t the scan used (None in sequential mode).

    Sequential mode computes (a_t, b_t) inside the loop from P_t, so neither is
    ever stored for all T; parallel mode needs them as arrays for the scan.
    """
    cell = static.cell
    P = _project(xs, U, cell.blocks)
    bias = _split_bias(bias, cell.blocks)
    if static.mode == "sequential":
        def step(h, inputs):
            P_t, f_t = inputs
            a_t, b_t = _masked(cell, P_t, params, f_t, bias, h0)
            h = a_t * h + b_t
            return h, h
        final, states = lax.scan(step, h0, (P, (mask, reset)), unroll=static.unroll)
        a = None
    else:
        a, b = _masked(cell, P, params, (mask, reset), bias, h0)
        b = b.at[0].add(a[0] * h0)
        _, states = lax.associative_scan(_combine, (a, b), axis=0)
        final = states[-1]
    hs = states if mask is None else jnp.where(mask[..., None], states,
                                               jnp.zeros((), states.dtype))
    return hs, final, states, a


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _linear_manual(static, U, bias, xs, h0, mask, reset, params):
    hs, final, _, _ = _forward(static, U, bias, xs, h0, mask, reset, params)
    return hs, final


def _linear_manual_fwd(static, U, bias, xs, h0, mask, reset, params):
    hs, final, states, a = _forward(static, U, bias, xs, h0, mask, reset, params)
    # The states are kept (the output itself when there is no mask), and in parallel mode
    # the scan's a_t unless a is constant or the reverse loop (which reads P) is the
    # backward: the blocked backward's first pass then reads a_t instead of recomputing P.
    # P itself is recomputed from X in the backward.
    if a is not None and (static.cell.constant_a or static.adjoint == "sequential"):
        a = None
    return (hs, final), (U, bias, xs, h0, mask, reset, params, states, a)


def _step_adjoint(cell, params, bias, mu, P_t, g_t, f_t, h_prev, h0):
    """One step of the reverse scan, fused with the cell's VJP:
    λ_t = g_t + μ_{t+1}; (dP_t, dparams_t) from da_t = λ_t conj(h_{t−1}), db_t = λ_t;
    μ_t = conj(a_t) λ_t. At a restart, h_{t−1} is h0, μ_t = 0, and h0 receives
    conj(a_t) λ_t (None without restarts). Returns (μ_t, dP_t, dparams_t, dh0_t, λ_t)."""
    P_t = _biased(P_t, bias)
    m_t, r_t = f_t
    a_t, _ = _masked(cell, P_t, params, f_t, None, h0)
    lam = g_t + mu
    dh0_t = None
    if r_t is not None:
        r = r_t[..., None]
        a_raw = jnp.broadcast_to(cell.coefficients(P_t, params)[0], lam.shape)
        dh0_t = jnp.where(r, jnp.conj(a_raw) * lam, jnp.zeros((), lam.dtype))
        h_prev = jnp.where(r, jnp.broadcast_to(h0, h_prev.shape), h_prev)
    da, db = lam * jnp.conj(h_prev), lam
    if m_t is not None:
        m = m_t[..., None]
        da, db = (jnp.where(m, v, jnp.zeros((), v.dtype)) for v in (da, db))
    dP_t, dparams_t = cell.coefficients_vjp(P_t, params, da, db)
    return jnp.conj(a_t) * lam, dP_t, dparams_t, dh0_t, lam


def _add(total, part):
    return None if total is None else jax.tree.map(jnp.add, total, part)


def _squared(lam):
    """‖λ‖² over the batch and the state (real and imaginary parts); leading axes kept."""
    return jnp.sum(jnp.real(lam * jnp.conj(lam)), axis=(-2, -1))


def _report_flow(static, lam_squared, weight_squared):
    """Sends ‖∂J/∂h_t‖ = ‖λ_t‖ and ‖∇_U^(t) J‖, t in input order, to
    :mod:`jrnn.diagnostics`."""
    dh_norm, dU_norm = jnp.sqrt(lam_squared), jnp.sqrt(weight_squared)
    if static.reverse:
        dh_norm, dU_norm = dh_norm[::-1], dU_norm[::-1]
    jax.debug.callback(_diagnostics.deliver, static.record, dh_norm, dU_norm)


def _backward_sequential(cell, params, bias, P, g, g_final, flags, h0, states, record=False,
                         unroll=1):
    """The reverse lax.scan: carries μ_{t+1} = conj(a_{t+1}) λ_{t+1} (so a needs no
    shift) and the parameter gradient; emits dP_t (and ‖λ_t‖² if ``record``). h_{t−1} is
    read from the stored states. Returns (dP, dparams, dh0, ‖λ‖² or None)."""
    T = g.shape[0]
    dparams0 = None if params is None else jax.tree.map(jnp.zeros_like, params)
    restarts0 = None if flags[1] is None else jnp.zeros_like(g_final)

    def step(carry, inputs):
        mu, dparams, restarts = carry
        t, P_t, g_t, f_t = inputs
        h_prev = jnp.where(t == 0, h0, lax.dynamic_index_in_dim(states, jnp.maximum(t - 1, 0),
                                                                 keepdims=False))
        mu, dP_t, dparams_t, dh0_t, lam = _step_adjoint(cell, params, bias, mu, P_t, g_t,
                                                        f_t, h_prev, h0)
        return ((mu, _add(dparams, dparams_t), _add(restarts, dh0_t)),
                (dP_t, _squared(lam) if record else None))

    (dh0, dparams, restarts), (dP, lam_sq) = lax.scan(
        step, (g_final, dparams0, restarts0), (jnp.arange(T), P, g, flags), reverse=True,
        unroll=unroll)
    return dP, dparams, dh0 if restarts is None else dh0 + restarts, lam_sq


def _gain_adjoint(form, a, params, mu, g_t, f_t, h_prev, h0):
    """One reverse step of a cell with a :class:`~jrnn.cells.linear_contract.GainForm`
    (constant a, b = gain ⊙ P): λ_t = g_t + μ_{t+1}, dP_t from db_t = λ_t alone (no P),
    da_t = db_t conj(h_{t−1}) left for the caller to sum, μ_t = conj(a_t) λ_t, with the
    flags ``f_t = (mask, reset)`` as in :func:`_step_adjoint`.
    Returns (μ_t, dP_t, da_t, dh0_t, λ_t)."""
    m_t, r_t = f_t
    lam = g_t + mu
    a_t = jnp.broadcast_to(a, lam.shape)
    dh0_t = None
    if r_t is not None:  # a restart: h_{t−1} is h0, which receives conj(a) λ; a' = 0
        r = r_t[..., None]
        dh0_t = jnp.where(r, jnp.conj(a_t) * lam, jnp.zeros((), lam.dtype))
        h_prev = jnp.where(r, jnp.broadcast_to(h0, h_prev.shape), h_prev)
        a_t = jnp.where(r, jnp.zeros((), a_t.dtype), a_t)
    db = lam
    if m_t is not None:  # a masked step: a' = 1, b' = 0
        m = m_t[..., None]
        a_t = jnp.where(m, a_t, jnp.ones((), a_t.dtype))
        db = jnp.where(m, lam, jnp.zeros((), lam.dtype))
    return jnp.conj(a_t) * lam, form.input_vjp(params, db), db * jnp.conj(h_prev), dh0_t, lam


def _backward_sequential_gain(form, params, g, g_final, flags, h0, states, record=False):
    """The reverse loop of a cell with a :class:`~jrnn.cells.linear_contract.GainForm`
    (the LRU): a is constant, so the loop reads neither P nor X; it turns each step's
    cotangent into dP_t from db_t alone (and ‖λ_t‖² if ``record``) and sums da_t over the
    rows in its carry (:func:`_gain_adjoint`). The gain's gradient comes after the loop,
    from dU (:func:`_weight_products`).

    The cotangent enters as real rows, [Re g | Im g] (T, B, 2N) for a complex state, and
    step t overwrites its own row with dP_t = (dP_re | dP_im), which has the same shape:
    dP needs no buffer of its own (nor its zero initialisation), so the backward holds two
    arrays of T·B·2N floats (the states and this one), not three. The loop is never
    unrolled, whatever the caller's ``unroll``: in an unrolled body the next copy of the step
    overwrites the row the previous one read, and XLA copies the whole buffer at every
    step (20–30× slower, benchmarks/NOTES.md).
    Returns ((dP,), Σ da, dh0, ‖λ‖² or None): dP (T, B, K·N), the K blocks side by side."""
    T, N = g.shape[0], g.shape[-1]
    a = form.a(params)
    parts = (jnp.real(g), jnp.imag(g)) if jnp.iscomplexobj(g) else (g,)
    rows = jnp.concatenate(parts, axis=-1)
    as_state = ((lambda r: lax.complex(r[..., :N], r[..., N:])) if len(parts) == 2
                else (lambda r: r))
    at = lambda v, t: None if v is None else lax.dynamic_index_in_dim(v, t, keepdims=False)

    def step(i, carry):
        rows, row, mu, da_sum, restarts, lam_sq = carry
        t = T - 1 - i
        h_prev = jnp.where(t == 0, h0, at(states, jnp.maximum(t - 1, 0)))
        mu, dP_t, da_t, dh0_t, lam = _gain_adjoint(
            form, a, params, mu, as_state(row), tuple(at(f, t) for f in flags), h_prev, h0)
        rows = lax.dynamic_update_index_in_dim(rows, jnp.concatenate(dP_t, axis=-1), t, 0)
        # Row t − 1 is read after row t is written, for the next step: a step that read its
        # own row before overwriting it had XLA copy all of ``rows`` at every step.
        row = at(rows, jnp.maximum(t - 1, 0))
        if record:
            lam_sq = lam_sq.at[t].set(_squared(lam))
        return rows, row, mu, da_sum + da_t, _add(restarts, dh0_t), lam_sq

    restarts0 = None if flags[1] is None else jnp.zeros_like(g_final)
    lam_sq0 = jnp.zeros((T,), rows.dtype) if record else None
    dP, _, dh0, da_sum, restarts, lam_sq = lax.fori_loop(
        0, T, step, (rows, rows[-1], g_final, jnp.zeros_like(g_final), restarts0, lam_sq0))
    return (dP,), jnp.sum(da_sum, axis=0), dh0 if restarts is None else dh0 + restarts, lam_sq


def _gain_params(cell, params, da_sum, U, dU, bias, dbias):
    """The parameters of a GainForm cell from Σ da and the weights (the blocks split)."""
    split = lambda a: None if a is None else tuple(jnp.split(a, cell.blocks, axis=0))
    return cell.gain_form.params_vjp(params, da_sum, split(U), split(dU), split(bias),
                                     None if bias is None else split(dbias))


def _weight_products(dP, xs, U, bias, blocks: int):
    """dU = dPᵀ X, dbias = Σ dP (a column of ones in the same product: dP is read once),
    dX = dP U, each one 2-D matmul over all T·B rows."""
    rows = _rows(xs)
    if bias is None:
        dU = jnp.concatenate(_matmul.transposed_products([_rows(d) for d in dP], rows))
        dbias = None
    else:
        ones = jnp.concatenate([rows, jnp.ones((rows.shape[0], 1), rows.dtype)], axis=1)
        both = jnp.concatenate(_matmul.transposed_products([_rows(d) for d in dP], ones))
        dU, dbias = both[:, :-1], both[:, -1]
    dxs = sum((_rows(d) @ U_k).reshape(xs.shape)
              for d, U_k in zip(dP, jnp.split(U, blocks, axis=0)))
    return dU, dbias, dxs


def _chunks(T: int) -> int:
    """K, the steps per chunk of the blocked scan: about √T (a power of two)."""
    return 1 << max(0, (T.bit_length() - 1) // 2)


def _backward_blocked(cell, params, bias, U, xs, g, g_final, flags, h0, states, a=None,
                      record=False):
    """Parallel mode's backward: the reverse scan as a blocked parallel scan (Blelloch
    1990, §1.4: each processor scans its block, the block totals are scanned, each block
    is rescanned from its correct start). T is cut into C chunks of K ≈ √T steps, all
    chunks at once:

    1. per chunk, from a zero start, the outgoing μ and the product of conj(a) (K steps,
       vectorised over the C chunks; nothing stored but the two (C, B, N) totals); a_t
       is read from ``a`` (the forward's, masks and restarts applied) when given, else
       recomputed from x_t;
    2. the chunks' incoming μ, C steps of μ_in[j] = total[j+1] + prod[j+1] μ_in[j+1];
    3. per chunk again from its correct incoming μ, the same fused step as the
       sequential backward (:func:`_step_adjoint`).

    Depth 2K + C ≈ 3√T instead of T. Each step of the C chunks recomputes its
    P_t = x_t Uᵀ (C·B rows, one matmul), adds its share of dU and dbias (one plain
    product [x_t | 1]ᵀ dP_t, from a transposed copy of the inputs made once, T·B·(D + 1)
    floats) and writes dX, so neither P nor dP is ever held for all T: the backward needs
    no memory of the order of T·B·N beyond the stored states and that copy
    (benchmarks/NOTES.md). A cell with a
    :class:`~jrnn.cells.linear_contract.GainForm` (the LRU) recomputes no P_t at all: its
    rescan is :func:`_gain_adjoint`, and the gain's gradient comes from dU after the loop. With ``record``, the
    rescan also writes ‖λ_t‖² and ‖dP_tᵀ x_t‖² of every step (two (C, K) arrays).
    Returns (dU, dbias, dxs, dparams, dh0, (‖λ‖², ‖dU^(t)‖²) or None)."""
    T, B, N = g.shape
    D = xs.shape[-1]
    mask, reset = flags
    K = _chunks(T)
    C = -(-T // K)
    pad = C * K - T
    valid = jnp.ones((T, B), bool) if mask is None else mask
    if pad:  # padded steps are masked: a = 1, b = 0, no cotangent
        widen = lambda v: jnp.concatenate([v, jnp.zeros((pad,) + v.shape[1:], v.dtype)])
        xs, g, valid = widen(xs), widen(g), widen(valid)
        reset = None if reset is None else widen(reset)
        a = None if a is None else jnp.concatenate([a, jnp.ones((pad,) + a.shape[1:],
                                                                a.dtype)])
    m_in = None if (mask is None and not pad) else valid
    blocked = lambda a: a.reshape((C, K) + a.shape[1:])
    xb, gb = blocked(xs), blocked(g)
    mb = None if m_in is None else blocked(m_in)
    rb = None if reset is None else blocked(reset)
    at = lambda a, k: None if a is None else lax.dynamic_index_in_dim(a, k, 1, keepdims=False)
    Us = jnp.split(U, cell.blocks, axis=0)
    U_t = jnp.concatenate(Us).T  # (D, K·N)

    def project(k):
        x_k = at(xb, k).reshape(C * B, D)
        return x_k, tuple(p.reshape(C, B, N) for p in jnp.split(x_k @ U_t, cell.blocks, axis=1))

    ab = None if a is None else blocked(a)

    def totals(i, carry):
        mu, prod = carry
        k = K - 1 - i
        if ab is not None:
            a_bar = jnp.conj(at(ab, k))
        else:
            a_bar = jnp.conj(_masked(cell, project(k)[1], params, (at(mb, k), at(rb, k)),
                                     bias, h0)[0])
        return a_bar * (at(gb, k) + mu), a_bar * prod

    zeros = jnp.zeros((C, B, N), g.dtype)
    mu_out, prod = lax.fori_loop(0, K, totals, (zeros, jnp.ones_like(zeros)))

    def across(mu_in, inputs):
        mu_loc, prod_j = inputs
        return mu_loc + prod_j * mu_in, mu_in

    dh0, mu_in = lax.scan(across, g_final, (mu_out, prod), reverse=True)
    states_b = blocked(jnp.concatenate([states, jnp.zeros((pad, B, N), states.dtype)])
                       if pad else states)
    first_prev = jnp.concatenate([h0[None], states_b[:-1, K - 1]])
    form = cell.gain_form
    if form is not None:  # the rows' da_t summed elementwise in the carry, reduced after
        a_gain, dparams0 = form.a(params), zeros
    else:
        dparams0 = None if params is None else jax.tree.map(jnp.zeros_like, params)
    restarts0 = None if reset is None else zeros
    # dU and dbias accumulate transposed, (D + 1, K·N), as [x_t | 1]ᵀ dP_t: with the inputs
    # laid out so once here, each step's share is a plain product (benchmarks/NOTES.md).
    dU0 = jnp.zeros((D + 1, U.shape[0]), U.dtype)
    xt = jnp.concatenate([xb, jnp.ones(xb.shape[:-1] + (1,), xb.dtype)], axis=-1)
    xt = xt.transpose(1, 3, 0, 2).reshape(K, D + 1, C * B)

    def rescan(i, carry):
        mu, dparams, restarts, dU, dxb, flow = carry
        k = K - 1 - i
        h_prev = jnp.where(k == 0, first_prev, at(states_b, jnp.maximum(k - 1, 0)))
        f_k = (at(mb, k), at(rb, k))
        if form is not None:  # dP_t from db_t alone: P_t is not recomputed
            mu, dP_t, dparams_t, dh0_t, lam = _gain_adjoint(form, a_gain, params, mu,
                                                            at(gb, k), f_k, h_prev, h0)
        else:
            x_k, P_t = project(k)
            mu, dP_t, dparams_t, dh0_t, lam = _step_adjoint(
                cell, params, bias, mu, P_t, at(gb, k), f_k, h_prev, h0)
        dP_rows = jnp.concatenate([d.reshape(C * B, N) for d in dP_t], axis=1)
        dU = dU + lax.dynamic_index_in_dim(xt, k, keepdims=False) @ dP_rows
        dxb = lax.dynamic_update_index_in_dim(dxb, (dP_rows @ U_t.T).reshape(C, B, D), k, 1)
        if record:
            parts = (_squared(lam),
                     _diagnostics.product_norm_squared(dP_t, at(xb, k)))
            flow = tuple(lax.dynamic_update_index_in_dim(f, v, k, 1) for f, v in zip(flow, parts))
        return mu, _add(dparams, dparams_t), _add(restarts, dh0_t), dU, dxb, flow

    flow0 = (jnp.zeros((C, K), U.dtype),) * 2 if record else None
    _, dparams, restarts, dU, dxb, flow = lax.fori_loop(
        0, K, rescan, (mu_in, dparams0, restarts0, dU0, jnp.zeros_like(xb), flow0))
    dxs = dxb.reshape((C * K, B, D))[:T]
    dh0 = dh0 if restarts is None else dh0 + jnp.sum(restarts, axis=0)
    flow = None if flow is None else tuple(f.reshape(C * K)[:T] for f in flow)
    dU, dbias = dU[:-1].T, dU[-1]
    if form is not None:
        dparams = _gain_params(cell, params, jnp.sum(dparams, axis=(0, 1)), U, dU,
                               None if bias is None else jnp.concatenate(bias), dbias)
    return dU, dbias, dxs, dparams, dh0, flow


def _backward_associative(cell, params, bias, U, xs, g, g_final, flags, h0, states, a=None,
                          record=False):
    """Parallel mode's backward at O(log T) depth. With μ_t = conj(a_t) λ_t,

        μ_t = conj(a_t) ⊙ μ_{t+1} + conj(a_t) ⊙ g_t,   μ_T = g_final,

    a linear recurrence in reverse time: ``lax.associative_scan`` of the pairs
    (conj(a_t), conj(a_t) g_t), the final state's cotangent folded into the last pair as
    the forward folds h0 into the first. Then λ_t = g_t + μ_{t+1} and every step's
    :func:`_step_adjoint` (or :func:`_gain_adjoint`) at once, over all T, and the weight
    gradients as one matmul each (:func:`_weight_products`). a_t is the forward's
    (masks and restarts applied) when given, else recomputed. Holds a few arrays of
    T·B·N (μ, the shifted states, dP) where the blocked backward holds none.
    Returns (dU, dbias, dxs, dparams, dh0, (‖λ‖², ‖dU^(t)‖²) or None)."""
    mask, reset = flags
    form = cell.gain_form
    bias_all = None if bias is None else jnp.concatenate(bias)
    if form is not None:  # a constant a: only the flags vary it
        a_gain = form.a(params)
        a = jnp.broadcast_to(a_gain, g.shape)
        if reset is not None:
            a = jnp.where(reset[..., None], jnp.zeros((), a.dtype), a)
        if mask is not None:
            a = jnp.where(mask[..., None], a, jnp.ones((), a.dtype))
    else:
        P = _project(xs, U, cell.blocks)
        if a is None:
            a = _masked(cell, P, params, flags, bias, h0)[0]
    a_bar = jnp.conj(a)
    _, mu = lax.associative_scan(_combine, (a_bar, a_bar * g.at[-1].add(g_final)), axis=0,
                                 reverse=True)
    mu_next = jnp.concatenate([mu[1:], g_final[None]])
    h_prev = jnp.concatenate([h0[None], states[:-1]])
    if form is not None:
        mu, dP, da, restarts, lam = _gain_adjoint(form, a_gain, params, mu_next, g, flags,
                                                  h_prev, h0)
        dU, dbias, dxs = _weight_products(dP, xs, U, bias_all, len(dP))
        dparams = _gain_params(cell, params, jnp.sum(da, axis=(0, 1)), U, dU, bias_all, dbias)
    else:
        mu, dP, dparams, restarts, lam = _step_adjoint(cell, params, bias, mu_next, P, g, flags,
                                                       h_prev, h0)
        dU, dbias, dxs = _weight_products(dP, xs, U, bias_all, cell.blocks)
    dh0 = mu[0] if restarts is None else mu[0] + jnp.sum(restarts, axis=0)
    flow = None
    if record:
        flow = (_squared(lam), _diagnostics.product_norm_squared(dP, xs))
    return dU, dbias, dxs, dparams, dh0, flow


def _linear_manual_bwd(static, residuals, cotangents):
    U, bias, xs, h0, mask, reset, params, states, a = residuals
    cell = static.cell
    g, g_final = cotangents
    if cell.complex_state:  # JAX's cotangent of a complex value is conj(∂J/∂Re + i ∂J/∂Im)
        g, g_final = jnp.conj(g), jnp.conj(g_final)
    if mask is not None:
        g = jnp.where(mask[..., None], g, jnp.zeros((), g.dtype))
    record = static.record is not None
    if static.adjoint != "sequential":
        backward = (_backward_associative if static.adjoint == "associative"
                    else _backward_blocked)
        dU, dbias, dxs, dparams, dh0, flow = backward(
            cell, params, _split_bias(bias, cell.blocks), U, xs, g, g_final, (mask, reset), h0,
            states, a, record)
        if record:
            _report_flow(static, *flow)
        if cell.complex_state:
            dh0 = jnp.conj(dh0)
        return dU, None if bias is None else dbias, dxs, dh0, None, None, dparams
    form = cell.gain_form
    if form is not None:  # P is never recomputed (jrnn.cells.linear_contract.GainForm)
        dP, da_sum, dh0, lam_sq = _backward_sequential_gain(
            form, params, g, g_final, (mask, reset), h0, states, record)
    else:
        P = _project(xs, U, cell.blocks)
        dP, dparams, dh0, lam_sq = _backward_sequential(
            cell, params, _split_bias(bias, cell.blocks), P, g, g_final, (mask, reset), h0,
            states, record, static.unroll)
    if record:
        _report_flow(static, lam_sq, _diagnostics.product_norm_squared(dP, xs))
    dU, dbias, dxs = _weight_products(dP, xs, U, bias, len(dP))
    if form is not None:
        dparams = _gain_params(cell, params, da_sum, U, dU, bias, dbias)
    if cell.complex_state:
        dh0 = jnp.conj(dh0)
    return dU, dbias, dxs, dh0, None, None, dparams


_linear_manual.defvjp(_linear_manual_fwd, _linear_manual_bwd)


def _state_dtype(cell, dtype):
    """The state's dtype: the parameters' own, or its complex counterpart (the LRU)."""
    if not cell.complex_state:
        return dtype
    return jnp.complex128 if dtype == jnp.float64 else jnp.complex64


def _check_args(cell, U, bias, xs, h0, mask, params, reset=None):
    _checks.floating("U", U)
    _checks.floating("xs", xs)
    _checks.rank("U", U, (2,), f"({cell.blocks}·N, D) for cell {cell.name!r}")
    rows, D = U.shape
    if rows % cell.blocks:
        _checks.fail_shape("U", f"({cell.blocks}·N, D): {cell.blocks} blocks for cell "
                           f"{cell.name!r}", U.shape)
    N, dtype = rows // cell.blocks, U.dtype
    if bias is not None:
        _checks.floating("bias", bias)
        _checks.shape("bias", bias, (rows,))
        _checks.same_dtype("bias", bias, dtype, "U")
    _checks.sequence("xs", xs, U.shape, dtype, "U")
    state_dtype = _state_dtype(cell, dtype)
    if h0 is not None:
        batch = xs.shape[1:-1]
        _checks.shape("h0", h0, batch + (N,), str(batch + (N,)),
                      "the initial state is (B, N), or (N,) for an unbatched xs")
        if jnp.result_type(h0) != state_dtype:
            raise TypeError(f"h0: expected dtype {jnp.dtype(state_dtype)} (the state of cell "
                            f"{cell.name!r} with {jnp.dtype(dtype)} parameters), got "
                            f"{jnp.result_type(h0)}")
    for name, flags in (("mask", mask), ("reset", reset)):
        if flags is not None:
            _checks.boolean(name, flags)
            _checks.shape(name, flags, xs.shape[:-1], str(xs.shape[:-1]) + " = xs.shape[:-1]")
    _checks.cell_params(cell, params, N, dtype, "U")
    return N, state_dtype


def linear_rnn(cell, U, bias, xs, h0=None, *, cell_params=None, mask=None, lengths=None,
               reset=None, reverse: bool = False, mode: Optional[str] = None,
               adjoint: Optional[str] = None, unroll: Optional[int] = None,
               backward: str = "manual") -> tuple[jax.Array, jax.Array]:
    """Runs one linear recurrent layer over a sequence: h_t = a_t ⊙ h_{t−1} + b_t.

    Args:
      cell: ``"mingru"``, ``"minlstm"``, ``"lru"`` or a :class:`LinearCell`.
      U: (K·N, D) input weights, K = the cell's blocks (minGRU 2, minLSTM 3, LRU 2).
      bias: (K·N,) or None.
      xs: (T, B, D) time-major inputs, or an unbatched (T, D) sequence.
      h0: initial state (B, N) (complex for the LRU); zeros if None.
      cell_params: the cell's own parameters (the LRU's :class:`LRUParams`).
      mask: optional (T, B) bool, False at steps to skip (a = 1, b = 0, output 0).
      lengths: optional (B,) int in [0, T]: steps t >= length are masked.
      reset: optional (T, B) bool, True where the state restarts from ``h0`` before
        the step (unmasked steps only): h_t = a_t ⊙ h0 + b_t; h0's gradient collects
        every restart.
      reverse: run from t = T−1 down to 0 (right-padded sequences reverse within
        their own length, as in :func:`jrnn.rnn`).
      mode: ``"parallel"`` (associative scan), ``"sequential"`` (``lax.scan``) or
        None for :func:`default_mode` (measured per platform, module doc).
      adjoint: the backward's scheme, in either mode: ``"associative"`` (O(log T)
        depth), ``"blocked"`` (≈ 3√T loop steps, no array of T·B·N but the states),
        ``"sequential"`` (the reverse ``lax.scan``, T steps), or None for
        :func:`default_adjoint`.
      unroll: sequential mode's ``lax.scan`` unroll (forward and backward, but the
        LRU's backward, which stays at 1); None for :func:`jrnn.recurrence.default_unroll`.
      backward: ``"manual"`` (the hand-written adjoint scan) or ``"autodiff"``
        (JAX autodiff of the same forward, the reference).

    Returns:
      ``(hs, final)``: hs (T, B, N), zeros at masked steps, and the state after
      the last valid step.

    >>> import jax, jax.numpy as jnp, jrnn.linear
    >>> U = jax.random.normal(jax.random.key(0), (2 * 4, 3))
    >>> hs, h_T = jrnn.linear.linear_rnn("mingru", U, None, jnp.ones((5, 2, 3)))
    >>> hs.shape, h_T.shape
    ((5, 2, 4), (2, 4))
    """
    cell = _contract.get(cell)
    _checks.backward(backward)
    if mode is None:
        mode = default_mode()
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES} or None, got {mode!r}")
    if adjoint is not None and adjoint not in ADJOINTS:
        raise ValueError(f"adjoint: expected one of {ADJOINTS} or None, got {adjoint!r}")
    if unroll is not None:
        _checks.size("unroll", unroll)
    U, bias, xs, h0, mask, reset = (_checks.array(name, v) for name, v in zip(
        ("U", "bias", "xs", "h0", "mask", "reset"), (U, bias, xs, h0, mask, reset)))
    N, state_dtype = _check_args(cell, U, bias, xs, h0, mask, cell_params, reset)
    if lengths is not None:
        lengths = check_lengths(lengths, xs.shape[0], xs.shape[1:-1])
        by_length = lengths_to_mask(lengths, xs.shape[0])
        mask = by_length if mask is None else mask & by_length
    if mask is not None:  # padded steps never reach an output or a gradient
        xs = jnp.where(mask[..., None], xs, jnp.zeros((), xs.dtype))
        reset = None if reset is None else reset & mask
    unbatched = xs.ndim == 2
    if unbatched:
        xs = xs[:, None]
        mask = None if mask is None else mask[:, None]
        reset = None if reset is None else reset[:, None]
        h0 = None if h0 is None else h0[None]
    if h0 is None:
        h0 = jnp.zeros((xs.shape[1], N), state_dtype)
    if reverse:
        xs = xs[::-1]
        mask = None if mask is None else mask[::-1]
        reset = None if reset is None else reset[::-1]
    record = None
    if backward == "manual" and _diagnostics.recording():
        record = _diagnostics.register(cell.name, bool(reverse), xs.shape, weight="U")
    static = _Static(cell, mode, adjoint or default_adjoint(mode=mode, cell=cell),
                     default_unroll() if unroll is None else int(unroll), record,
                     bool(reverse) and record is not None)
    if backward == "manual":
        _checks.reject_forward_mode("jrnn.linear.linear_rnn", U, bias, xs, h0, cell_params)
        hs, final = _linear_manual(static, U, bias, xs, h0, mask, reset, cell_params)
    else:
        hs, final, _, _ = _forward(static, U, bias, xs, h0, mask, reset, cell_params)
    if reverse:
        hs = hs[::-1]
    if unbatched:
        hs, final = hs[:, 0], final[0]
    return hs, final


def linear_step(cell, U, bias, x, h, cell_params=None):
    """One step, for generation and sampling: h_t = a ⊙ h_{t−1} + b from one input x
    (B, D) or (D,) and the state h (B, N) or (N,). The same arithmetic as one step
    of :func:`linear_rnn` (either mode); differentiable by autodiff."""
    cell = _contract.get(cell)
    U, bias, x, h = (_checks.array(name, v) for name, v in zip(("U", "bias", "x", "h"),
                                                                (U, bias, x, h)))
    _check_args(cell, U, bias, x[None], None, None, cell_params)
    N, state_dtype = U.shape[0] // cell.blocks, _state_dtype(cell, U.dtype)
    _checks.shape("h", h, x.shape[:-1] + (N,), str(x.shape[:-1] + (N,)))
    if jnp.result_type(h) != state_dtype:
        raise TypeError(f"h: expected dtype {jnp.dtype(state_dtype)}, got {jnp.result_type(h)}")
    P = tuple(x @ U_k.T for U_k in jnp.split(U, cell.blocks, axis=0))
    a, b = _masked(cell, P, cell_params, (None, None), _split_bias(bias, cell.blocks))
    return a * h + b
