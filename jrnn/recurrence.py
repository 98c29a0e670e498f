r"""The recurrence driver: every matmul of a recurrent layer, and its BPTT.

For any cell (:mod:`jrnn.cells`) with G gates, hidden size H, and inputs
``xs`` of shape (T, B, D), the layer computes

.. math::

    A &= X U^\top + b                     && (T, B, GH)\ \text{outside the loop} \\
    R_t &= h_{t-1} W^\top + b_r           && (B, GH)\ \text{the only matmul inside the loop} \\
    (\text{carry}_t, \text{extra}_t) &= \text{cell.step}(A_t, R_t, \text{carry}_{t-1})

with A_t and R_t handed to the cell as G blocks of (B, H), one per gate.

and returns every h_t and the final carry. The backward pass is written by
hand and given to JAX with ``jax.custom_vjp``. A reverse ``lax.scan`` carries
the cotangent of the state (Goodfellow et al., Deep Learning, §10.2.2):

.. math::

    \delta_t &= g_t + \frac{\partial J}{\partial \text{carry}_t}\Big|_{\text{from } t+1} \\
    (dA_t, dR_t, d_{\text{direct}}) &= \text{cell.step\_vjp}(\ldots, \delta_t) \\
    \frac{\partial J}{\partial h_{t-1}} &\mathrel{+}= dR_t\, W

and after the scan, once over all T·B rows:

.. math::

    dW = \sum_t dR_t^\top h_{t-1}, \quad dU = \sum_t dA_t^\top x_t, \quad
    db = \sum_t dA_t, \quad db_r = \sum_t dR_t, \quad dX = dA\, U .

So the per-step work in the backward scan is pointwise plus one (B, GH)×(GH, H)
matmul, never an outer product accumulated per step. A forward that is not
differentiated (evaluation, the loss alone) computes A_t = x_t Uᵀ inside the
loop instead on the CPU at small batch, where that was measured faster
(:func:`project_in_loop`). Residuals are the
carries (for tanh: h_t only) and whatever extra the cell asks for; for a cell
whose backward reads its step's input (``Cell.vjp_reads_inputs``: the layer-normalised
cells) also A, which the loop reads anyway, so that the cell need not store what it
derives from A_t.

Options, each with its hand-written backward:

* ``mask`` (T, B) bool: a masked step leaves the state unchanged and emits
  zeros; its cotangent passes straight through to the previous state. Its
  input is replaced by zeros before anything reads it, so a NaN or Inf in a
  padded step reaches no output and no gradient (the after-scan products
  dU = Σ dA_tᵀ x_t would otherwise meet 0 · NaN = NaN there); its input
  cotangent is 0.
* ``lengths`` (B,) int, 0 ≤ length ≤ T: the mask t < length. A length of 0
  is allowed and exact: that row's outputs are zeros, its final state is its
  initial state, and nothing of it reaches the loss (PyTorch's packed
  sequences and cuDNN reject length 0).
* ``reset`` (T, B) bool: at a flagged (and unmasked) step the state restarts
  from the initial state before the step runs; the initial state's gradient
  collects every restart.
* ``W_hr`` (P, H), LSTMP (Sak et al. 2014): the cell's h-output u_t is
  projected, h_t = u_t W_hrᵀ, a second matmul per step; W is (G·H, P) and
  dW_hr = Σ_t (dJ/dh_t)ᵀ u_t is one matmul after the scan (docs/derivation.md §9).
* ``heads`` NH: W block-diagonal per gate, stored (G·H, H/NH) (with ``W_hr``:
  (G·H, P/NH), each head reading its own slice of the projected h); R_t is one
  matmul batched over the heads, and dW one einsum after the scan
  (:mod:`jrnn._blockdiag`).
* ``reverse``: run from t = T−1 down to 0. With right-padded ``mask`` this
  reverses each sequence within its own length: the padded tail is skipped
  (state unchanged) before the valid steps run.

Limits of the manual path: reverse mode only (``jax.custom_vjp``); use
``backward="autodiff"`` for ``jax.jvp``/``jax.jacfwd``. Arrays are ordinary
arguments; the backward returns one cotangent per argument, of the same
structure and dtype.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jrnn import _blockdiag, _checks, _diagnostics, _matmul, persistent
from jrnn import cells as _cells

__all__ = ["rnn", "default_unroll", "lengths_to_mask"]

# Measured in benchmarks/ (NOTES.md, results/gpu_unroll.md): on an H100 the loop overhead
# per step is large enough that unroll 16 makes the training step 1.7-2.3x faster than
# unroll 1 (32: 2-6% more, at up to 1.7x the compile time); on the CPU it buys little.
_DEFAULT_UNROLL = {"cpu": 1, "gpu": 16, "cuda": 16, "rocm": 16, "tpu": 8}


def default_unroll(backend: Optional[str] = None) -> int:
    """The ``lax.scan`` unroll used when a caller passes ``unroll=None``."""
    return _DEFAULT_UNROLL.get(backend or jax.default_backend(), 1)


# Measured on the 2-core CPU (benchmarks/NOTES.md): at batch 8 a forward that is not
# differentiated runs 1.14-1.24x faster with the input projection inside the loop than
# hoisted (the hoisted (T, B, G·H) array is a fresh buffer, paid in page faults, at every
# call); at batch 32 it runs 0.80-0.88x as fast; at batch 1, 2 and 4 it runs 0.82-0.99x as
# fast in 16 of 18 paired measurements (three cells, T 1,024 and 2,048, H 256), at batch 6 as
# fast within noise. So: inside the loop for batch sizes in this closed range.
# Elsewhere the projection stays hoisted (one large matmul) until measured otherwise.
_PROJECT_IN_LOOP_BATCHES = {"cpu": (8, 8)}


def project_in_loop(batch: int, backend: Optional[str] = None) -> bool:
    """Whether an undifferentiated forward of this batch size computes A_t = x_t Uᵀ inside
    the loop rather than once before it."""
    low, high = _PROJECT_IN_LOOP_BATCHES.get(backend or jax.default_backend(), (1, 0))
    return low <= batch <= high


@dataclasses.dataclass(frozen=True)
class _Static:
    cell: _cells.Cell
    reverse: bool
    unroll: int
    matmul_dtype: Any = None  # None or a jnp.dtype (see jrnn/_matmul.py)
    record: Optional[int] = None  # jrnn.diagnostics: this layer's index while recording
    kernel: str = "scan"  # "scan" (lax.scan), "persistent" (jrnn/persistent.py), "native"
    zoneout_p: Optional[tuple] = None  # evaluation-mode zoneout: one probability per carry
    heads: int = 1  # block-diagonal W with this many heads (jrnn/_blockdiag.py); 1: dense


class Noise(NamedTuple):
    """Regularisation masks the driver applies inside the loop (drawn outside it).

    ``recurrent`` (B, H): multiplies h_{t−1} where it feeds the recurrent product,
    the same at every step (variational dropout, Gal & Ghahramani 2016), already
    scaled by 1/(1 − p). ``zoneout``: one (T, B, H) array per carry entry (h, and
    c for the LSTM), 1 (or True) where a unit keeps its previous value at that step
    (Krueger et al. 2017). None where unused.
    """

    recurrent: Optional[jax.Array] = None
    zoneout: Optional[tuple] = None


def gate_blocks(a, G: int, axis: int = -1) -> tuple:
    """G equal blocks of ``a`` along ``axis``: the gates, in the cell's order.

    (B, G·H) -> G arrays (B, H) along the last axis; a (G·H, ·) weight or a
    (G·H,) bias -> its G row blocks along axis 0.
    """
    return tuple(jnp.split(a, G, axis=axis)) if G > 1 else (a,)


def _project(xs, U, G: int, matmul_dtype=None) -> tuple:
    """X U_gᵀ for each gate block g, over all T·B rows at once: G arrays (T, B, H).

    One matmul per gate rather than one (T, B, G·H) product: each gate then
    enters the loop as its own scan input. Slicing gate blocks out of one
    array inside the loop stops XLA:CPU from vectorising the cell's pointwise
    kernel (measured: the LSTM's gate math ran 4× slower; benchmarks/NOTES.md).
    The bias b joins inside the loop, where it fuses into that kernel.
    """
    return tuple(_matmul.einsum("tbd,gd->tbg", xs, U_g, matmul_dtype)
                 for U_g in gate_blocks(U, G, axis=0))


def affine(h, W, bias=None, matmul_dtype=None):
    """Rows times a weight matrix: h Wᵀ (+ bias) for h (B, K), W (G·H, K).

    In the loop this is R_t = h_{t-1} Wᵀ + b_r, one matmul for all gates; a
    generation step uses it for A_t = x_t Uᵀ + b too.
    """
    R = _matmul.einsum("bh,gh->bg", h, W, matmul_dtype)
    return R if bias is None else R + bias[None, :]


def affine_t(h, W_t, bias=None, matmul_dtype=None):
    """:func:`affine` for a weight already transposed, W_t = Wᵀ (K, G·H): h W_t (+ bias).

    The layout XLA:CPU multiplies fastest (the loop's R_t uses it); a generation loop
    transposes its weights once before the loop (:func:`jrnn.layers.step_weights`).
    """
    R = _matmul.einsum("bh,hg->bg", h, W_t, matmul_dtype)
    return R if bias is None else R + bias[None, :]


def gate_affine(h, W_t, bias, G: int, matmul_dtype=None) -> tuple:
    """h W_t + bias as G gate blocks (B, H): one product sliced into blocks."""
    return gate_blocks(affine_t(h, W_t, bias, matmul_dtype), G)


def arranged(W, G: int, heads: int = 1):
    """W as a loop of steps reads it, arranged once before the loop: a dense one as
    Wᵀ (K, G·H) (XLA:CPU multiplies (B, K) by it faster than by the stored (G·H, K),
    which it would repack at every step), a block-diagonal one by head
    (:func:`jrnn._blockdiag.by_head`; benchmarks/NOTES.md)."""
    return W.T if heads == 1 else _blockdiag.by_head(W, G, heads)


def recurrent(h, W, b_r, G: int, heads: int = 1, matmul_dtype=None, transposed: bool = False):
    """R = h Wᵀ + b_r for a dense (heads = 1) or block-diagonal W: one generation step.

    ``transposed``: W is given as :func:`arranged` makes it."""
    W = W if transposed else arranged(W, G, heads)
    R = (affine_t(h, W, None, matmul_dtype) if heads == 1 else
         _blockdiag.product(h, W, matmul_dtype))
    return R if b_r is None else R + b_r[None, :]


def _select(flag, on_true, on_false):
    """Per batch row: ``on_true`` where flag (B,), else ``on_false``."""
    return jax.tree.map(lambda a, b: jnp.where(flag[:, None], a, b), on_true, on_false)


def _rows(a):
    """(T, B, F) -> (T·B, F): products over all rows are plain 2-D matmuls,
    which XLA runs several times faster than a contraction over two axes."""
    return a.reshape(-1, a.shape[-1])


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _boolean(k) -> bool:
    return getattr(k, "dtype", None) == jnp.bool_


def _zoned(k, previous, raw):
    """k ⊙ previous + (1 − k) ⊙ raw, for a float k or a boolean mask (True: keep)."""
    return jnp.where(k, previous, raw) if _boolean(k) else k * previous + (1 - k) * raw


def _recomputes_raw(cell, W_hr) -> bool:
    """Whether, with zoneout, the backward recomputes the cell's own carry from its extras
    (``Cell.carry_from_extra``) instead of the forward storing it beside the zoned one."""
    return cell.carry_from_extra is not None and W_hr is None


def _zoned_stands_for_raw(cell, W_hr, keep) -> bool:
    """Whether, with zoneout, the backward passes the cell the zoned carry in place of its
    own: boolean masks (the two differ only at units that kept their value, whose cotangent
    into the cell is zero) and a cell that reads its carry only there
    (``Cell.vjp_reads_carry_pointwise``)."""
    return (cell.vjp_reads_carry_pointwise and W_hr is None
            and all(_boolean(k) for k in keep))


def _zoneout_keep(static, noise, z_t):
    """Per carry entry, the share of the previous value kept at this step, or None."""
    if static.zoneout_p is not None:
        return static.zoneout_p
    return None if noise.zoneout is None else z_t


def _forward(static, U, W, b, b_r, xs, carry0, mask, reset, noise=Noise(), cell_params=None,
             W_hr=None, keep_residuals=True, in_loop=False):
    """The forward pass shared by both backwards: outputs, and residuals if asked.

    Without ``keep_residuals`` the scan stacks only the outputs: a custom_vjp's
    primal (a call that is not differentiated) must not build residuals that
    nothing reads, since neither JAX nor XLA prunes them from inside it.

    With ``in_loop`` the input projection A_t = x_t Uᵀ is computed in each step
    (one more small matmul there) instead of once for all T·B rows before the
    loop: the undifferentiated forward on the CPU (:func:`project_in_loop`).

    With zoneout, a step's carry is k ⊙ carry_{t−1} + (1 − k) ⊙ carry_raw, where
    carry_raw is the cell's own output; the residuals then hold carry_raw too,
    since the cell's backward reads its own outputs (tanh' = 1 − h², say), unless
    the cell recomputes it from its extras (``Cell.carry_from_extra``: the LSTM) or,
    with boolean masks, reads it only where the zoned carry equals it
    (``Cell.vjp_reads_carry_pointwise``: tanh, the GRU).
    A boolean k (True: keep) selects instead of mixing.

    With a projection ``W_hr`` (P, H), the cell's h-output u_t (H) becomes
    h_t = u_t W_hrᵀ (P): the carry and the output hold the projected h, the
    residuals u_t as well (dW_hr pairs it with dJ/dh_t after the backward scan).
    """
    cell, md = static.cell, static.matmul_dtype
    G = cell.gates
    if static.kernel == "native":  # the forward loop in C++ (jrnn/native.py)
        from jrnn import native
        carries, extras, final = native.forward_inputs(
            cell, xs, U, b, W, b_r, carry0, reverse=static.reverse, matmul_dtype=md,
            keep_residuals=keep_residuals)
        carries = carries if keep_residuals else carries[:1]
        return carries[0], final, carries, extras, None
    in_loop = in_loop and static.kernel == "scan"
    U_t = (U if md is None else U.astype(md)).T if in_loop else None  # (D, G·H), as W_t
    XU = xs if in_loop else _project(xs, U, G, md)
    b_g = None if b is None else gate_blocks(b, G, axis=0)
    if static.kernel == "persistent":
        A = XU if b_g is None else tuple(x + bias[None, None, :] for x, bias in zip(XU, b_g))
        carries, extras, final = persistent.forward(cell, A, W, b_r, carry0,
                                                    reverse=static.reverse, matmul_dtype=md)
        return carries[0], final, carries, extras, XU
    # Cast and transpose once, outside the loop: XLA:CPU multiplies h (B, H) by
    # a (H, G·H) matrix 1.8× faster than by the transposed layout, which it
    # would repack at every step (benchmarks/NOTES.md).
    W_t = (W if md is None else W.astype(md))
    W_t = arranged(W_t, G, static.heads)
    W_hr_t = None if W_hr is None else (W_hr if md is None else W_hr.astype(md)).T

    def step(carry, inputs):
        XU_t, m_t, rho_t, z_t = inputs
        if in_loop:  # x_t (B, D) -> G blocks of (B, H)
            XU_t = gate_blocks(_matmul.einsum("bd,dg->bg", XU_t, U_t, md), G)
        A_t = XU_t if b_g is None else tuple(x + bias[None, :] for x, bias in zip(XU_t, b_g))
        carry_in = carry if rho_t is None else _select(rho_t, carry0, carry)
        h_feed = carry_in[0] if noise.recurrent is None else carry_in[0] * noise.recurrent
        R_t = gate_blocks(recurrent(h_feed, W_t, b_r, G, static.heads, md, transposed=True), G)
        new, extra = cell.step(A_t, R_t, carry_in, cell_params)
        if W_hr_t is not None:  # LSTMP: h_t = u_t W_hrᵀ, u_t = the cell's o ⊙ tanh(c)
            extra = (extra, new[0])
            new = (_matmul.einsum("bh,hp->bp", new[0], W_hr_t, md),) + tuple(new[1:])
        keep = _zoneout_keep(static, noise, z_t)
        if keep is not None:
            if not (_recomputes_raw(cell, W_hr) or _zoned_stands_for_raw(cell, W_hr, keep)):
                extra = (extra, new)
            new = tuple(_zoned(k, c, n) for k, c, n in zip(keep, carry_in, new))
        if m_t is not None:
            new = _select(m_t, new, carry)
        return new, ((new, extra) if keep_residuals else ((new[0],), None))

    final, (carries, extras) = lax.scan(
        step, carry0, (XU, mask, reset, noise.zoneout), reverse=static.reverse,
        unroll=static.unroll)
    hs = carries[0] if mask is None else jnp.where(mask[..., None], carries[0], 0)
    return hs, final, carries, extras, XU


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rnn_manual(static, U, W, b, b_r, xs, carry0, mask, reset, noise, cell_params, W_hr):
    hs, final, _, _, _ = _forward(static, U, W, b, b_r, xs, carry0, mask, reset, noise,
                                  cell_params, W_hr, keep_residuals=False,
                                  in_loop=project_in_loop(xs.shape[1]))
    return hs, final


def _rnn_manual_fwd(static, U, W, b, b_r, xs, carry0, mask, reset, noise, cell_params, W_hr):
    hs, final, carries, extras, XU = _forward(static, U, W, b, b_r, xs, carry0, mask, reset,
                                              noise, cell_params, W_hr)
    XU = XU if static.cell.vjp_reads_inputs else None  # kept only for a cell that reads A_t
    residuals = (U, W, b, b_r, xs, carry0, mask, reset, noise, cell_params, W_hr, carries,
                 extras, XU)
    return (hs, final), residuals


def _rnn_manual_bwd(static, residuals, cotangents):
    (U, W, b, b_r, xs, carry0, mask, reset, noise, cell_params, W_hr, carries,
     extras, XU) = residuals
    d_hs, d_final = cotangents
    cell, T, md = static.cell, xs.shape[0], static.matmul_dtype
    G = cell.gates
    W_mm = W if md is None else W.astype(md)
    if static.heads > 1:  # arranged once, outside the loop (jrnn/_blockdiag.py)
        W_mm = _blockdiag.by_head_transposed(W_mm, G, static.heads)
    W_hr_mm = None if W_hr is None else (W_hr if md is None else W_hr.astype(md))
    b_g = None if b is None else gate_blocks(b, G, axis=0)
    if mask is not None:
        d_hs = jnp.where(mask[..., None], d_hs, 0)  # masked outputs are constant zeros
    before = 1 if static.reverse else -1  # index of the step processed just before t

    def carry_before(t):
        i = t + before
        inside = (i >= 0) & (i < T)
        c = tuple(lax.dynamic_index_in_dim(a, jnp.clip(i, 0, T - 1), keepdims=False)
                  for a in carries)
        return jax.tree.map(lambda x, x0: jnp.where(inside, x, x0), c, carry0)

    def step(acc, inputs):
        dcarry, dcarry0, d_rec, d_params = acc
        g_t, carry_t, extra_t, m_t, rho_t, z_t, XU_t, t = inputs
        carry_in = carry_before(t)
        if rho_t is not None:
            carry_in = _select(rho_t, carry0, carry_in)
        dcarry = (dcarry[0] + g_t,) + tuple(dcarry[1:])  # dcarry[0] is now dJ/dh_t
        zeros = jax.tree.map(jnp.zeros_like, dcarry)
        d_new = dcarry if m_t is None else _select(m_t, dcarry, zeros)
        keep, d_keep = _zoneout_keep(static, noise, z_t), None
        if keep is not None:  # carry = k ⊙ carry_in + (1 − k) ⊙ raw
            if _recomputes_raw(cell, W_hr_mm):
                carry_t = cell.carry_from_extra(carry_in, extra_t)
            elif not _zoned_stands_for_raw(cell, W_hr_mm, keep):
                extra_t, carry_t = extra_t
            if noise.zoneout is not None:  # a boolean mask has no cotangent
                d_keep = tuple(None if _boolean(k) else d * (c - n)
                               for d, k, c, n in zip(d_new, keep, carry_in, carry_t))
            d_kept = tuple(_zoned(k, d, jnp.zeros_like(d)) for d, k in zip(d_new, keep))
            d_new = tuple(_zoned(k, jnp.zeros_like(d), d) for d, k in zip(d_new, keep))
        d_h = d_new[0]  # dJ/dh_t where the step wrote h_t
        if W_hr_mm is not None:  # h_t = u_t W_hrᵀ: dJ/du_t = dJ/dh_t W_hr; the cell saw u_t
            extra_t, u_t = extra_t
            carry_t = (u_t,) + tuple(carry_t[1:])
            d_new = (_matmul.einsum("bp,ph->bh", d_h, W_hr_mm, md),) + tuple(d_new[1:])
        inputs_t = {}
        if XU_t is not None:  # the cell reads the A_t its step received (Cell.vjp_reads_inputs)
            inputs_t["A"] = XU_t if b_g is None else tuple(
                x + bias[None, :] for x, bias in zip(XU_t, b_g))
        dA, dR, d_in, d_params_t = cell.step_vjp(carry_in, carry_t, extra_t, d_new, cell_params,
                                                 **inputs_t)
        if d_params is not None:
            d_params = _add(d_params, d_params_t)
        dR = dA if dR is None else dR
        dR_all = dR[0] if G == 1 else jnp.concatenate(dR, axis=-1)
        dh_prev = (_matmul.einsum("bg,gh->bh", dR_all, W_mm, md) if static.heads == 1 else
                   _blockdiag.transpose(dR_all, W_mm, md))
        if noise.recurrent is not None:  # R_t read h_{t−1} ⊙ m
            d_rec = d_rec + dh_prev * carry_in[0]
            dh_prev = dh_prev * noise.recurrent
        d_in = (d_in[0] + dh_prev,) + tuple(d_in[1:])
        if keep is not None:
            d_in = _add(d_in, d_kept)
        if rho_t is not None:  # a restarted step read carry0, not carry_{t-1}
            dcarry0 = _add(dcarry0, _select(rho_t, d_in, zeros))
            d_in = _select(rho_t, zeros, d_in)
        if m_t is not None:  # a masked step passed carry_{t-1} through unchanged
            d_in = _add(d_in, _select(m_t, zeros, dcarry))
        # Emit dA_t; the blocks of dR_t that differ from dA_t's (GRU's n, for
        # one); and the state this step read, h_in(t), which dW pairs with dR_t,
        # so that XLA gets aligned operands without a shifted copy of h.
        dR_own = tuple(None if r is a else r for r, a in zip(dR, dA))
        dh_t = None if static.record is None else d_h
        d_out = None if W_hr_mm is None else d_h
        return (d_in, dcarry0, d_rec, d_params), (dA, dR_own, carry_in[0], dh_t, d_keep, d_out)

    if static.kernel == "native":  # the reverse loop in C++, then one product each
        from jrnn import native
        return native.gradients(cell, xs, U, W, b, b_r, carries, extras, carry0, d_hs,
                                tuple(d_final), reverse=static.reverse) + (
            None, None, Noise(), None, None)
    d_noise, d_params, d_out = Noise(), None, None
    if static.kernel == "persistent":
        dA, dR_own, d_carry0 = persistent.backward(
            cell, W, carries, extras, carry0, d_hs, tuple(d_final), reverse=static.reverse,
            matmul_dtype=md)
        h_in = states_read(carries[0], carry0[0], static.reverse)
    else:
        acc0 = (tuple(d_final), None if reset is None else jax.tree.map(jnp.zeros_like, carry0),
                None if noise.recurrent is None else jnp.zeros_like(noise.recurrent),
                jax.tree.map(jnp.zeros_like, cell_params))
        (d_first, dcarry0, d_rec, d_params), (dA, dR_own, h_in, dh, d_keep, d_out) = lax.scan(
            step, acc0, (d_hs, carries, extras, mask, reset, noise.zoneout, XU, jnp.arange(T)),
            reverse=not static.reverse, unroll=static.unroll)
        d_carry0 = d_first if dcarry0 is None else _add(d_first, dcarry0)
        d_noise = Noise(d_rec, d_keep)
    if noise.recurrent is not None:  # dW pairs dR_t with the state R_t read: h_{t−1} ⊙ m
        h_in = h_in * noise.recurrent[None]

    # After the scan, one matmul per gate block over all T·B rows.
    dR = tuple(a if r is None else r for a, r in zip(dA, dR_own))
    stack = lambda parts: parts[0] if G == 1 else jnp.concatenate(parts, axis=0)
    dW = stack([_matmul.einsum("ng,nh->gh", _rows(r), _rows(h_in), md) if static.heads == 1
                else _blockdiag.weight_gradient(_rows(r), _rows(h_in), static.heads, md)
                for r in dR])
    db_r = None if b_r is None else stack([_rows(r).sum(0) for r in dR])
    dU = stack([_matmul.einsum("ng,nd->gd", _rows(a), _rows(xs), md) for a in dA])
    db = None if b is None else stack([_rows(a).sum(0) for a in dA])
    dxs = sum(_matmul.einsum("tbg,gd->tbd", a, U_g, md)
              for a, U_g in zip(dA, gate_blocks(U, G, axis=0)))
    dW_hr = None
    if W_hr is not None:  # one matmul over all T·B rows: dW_hr = Σ_t (dJ/dh_t)ᵀ u_t
        zoned = static.zoneout_p is not None or noise.zoneout is not None  # extras: (., raw)
        u = extras[0][1] if zoned else extras[1]
        dW_hr = _matmul.einsum("np,nh->ph", _rows(d_out), _rows(u), md)
    if static.record is not None:
        _report_flow(static.record, dh, dR, h_in, static.heads)
    return dU, dW, db, db_r, dxs, d_carry0, None, None, d_noise, d_params, dW_hr


def states_read(hs, h0, reverse: bool):
    """The state each step read, h_{t−1} (h_{t+1} right to left), from every output h_t
    and the initial h0: the operand dW pairs with dR_t after a loop that did not emit it."""
    return (jnp.concatenate([hs[1:], h0[None]]) if reverse else
            jnp.concatenate([h0[None], hs[:-1]]))


def _report_flow(index: int, dh, dR, h_in, heads: int = 1) -> None:
    """Sends this layer's per-step gradient norms to :mod:`jrnn.diagnostics`.

    ‖dJ/dh_t‖ over (B, H), and ‖∇W^(t)‖ = ‖dR_tᵀ h_{t-1}‖_F without building
    the (T, G·H, H) stack: ‖Σ_b r_b h_bᵀ‖² = Σ_{b,b'} (r_b·r_b')(h_b·h_b'),
    summed over the heads' blocks for a block-diagonal W.
    """
    dh_norm = jnp.sqrt(jnp.sum(jnp.square(dh), axis=(1, 2)))
    by_head = lambda a: jnp.swapaxes(a.reshape(a.shape[:2] + (heads, -1)), 1, 2)  # (T, n, B, ·)
    per_head = _diagnostics.product_norm_squared(tuple(map(by_head, dR)), by_head(h_in))
    dW_norm = jnp.sqrt(jnp.sum(per_head, axis=1))
    jax.debug.callback(_diagnostics.deliver, index, dh_norm, dW_norm)


_rnn_manual.defvjp(_rnn_manual_fwd, _rnn_manual_bwd)


def check_heads(heads) -> int:
    """``heads`` as an int >= 1 (1: a dense recurrent matrix)."""
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)):
        raise TypeError(f"heads: expected an int >= 1 (1: a dense W), got "
                        f"{type(heads).__name__}")
    if heads < 1:
        raise ValueError(f"heads: expected an int >= 1 (1: a dense W), got {heads}")
    return int(heads)


def _check_projection(cell, W, W_hr, heads: int = 1) -> tuple[int, int]:
    """(H, P): the cell's width and the width of the h it emits (P = H without W_hr)."""
    if W_hr is None:
        _checks.rank("W", W, (2,), f"(G·H, H) with G = {cell.gates} for cell {cell.name!r}")
        if heads == 1:
            return W.shape[1], W.shape[1]
        H = W.shape[0] // cell.gates  # block-diagonal: the rows say H, as for a dense W
        if W.shape[0] % cell.gates or H % heads:
            _checks.fail_shape("W", f"({cell.gates}·H, H/heads) with H divisible by "
                               f"heads={heads} for cell {cell.name!r}", W.shape)
        return H, H
    if not cell.projectable:
        raise ValueError(f"W_hr: a projection of h needs a cell whose h_(t-1) enters only "
                         f"through the recurrent product ({', '.join(projectable_cells())}), "
                         f"got cell {cell.name!r}")
    _checks.floating("W_hr", W_hr)
    _checks.rank("W_hr", W_hr, (2,), "(P, H): the projection of the H-wide h to P < H")
    P, H = W_hr.shape
    if not 1 <= P < H:
        _checks.fail_shape("W_hr", "(P, H) with 1 <= P < H (a projection to fewer units, "
                           "as PyTorch's proj_size < hidden_size)", W_hr.shape)
    _checks.same_dtype("W_hr", W_hr, W.dtype, "W")
    _checks.rank("W", W, (2,), f"(G·H, P) = ({cell.gates * H}, {P}): the recurrent input is "
                 "the projected h")
    if heads > 1 and (H % heads or P % heads):
        raise ValueError(f"heads: with a projection each head maps its P/heads units of h to "
                         f"its H/heads units of every gate, so heads must divide both "
                         f"H = {H} and P = {P}; got heads={heads}")
    return H, P


def projectable_cells() -> list[str]:
    """The registered cells that take a projection W_hr (LSTMP)."""
    return [name for name in _cells.names() if _cells.get(name).projectable]


def _check_args(cell, U, W, b, b_r, xs, h0, mask, reset, W_hr=None, heads=1):
    """Validates every argument; returns (H, P): the cell's width and the emitted h's."""
    for name, x in (("U", U), ("W", W), ("xs", xs)):
        _checks.floating(name, x)
    H, P = _check_projection(cell, W, W_hr, heads)
    GH = W.shape[0]
    if W.shape != (cell.gates * H, P // heads):
        if W_hr is not None:
            what = (f"({cell.gates}·H, P) = ({cell.gates * H}, {P}) with W_hr "
                    f"{tuple(W_hr.shape)}" if heads == 1 else
                    f"({cell.gates}·H, P/heads) = ({cell.gates * H}, {P // heads}) with W_hr "
                    f"{tuple(W_hr.shape)} and heads={heads}")
        elif heads > 1:
            what = (f"({cell.gates}·H, H/heads) = ({cell.gates * H}, {H // heads}) with "
                    f"heads={heads}: each row holds the weights from its own head")
        else:
            what = f"({cell.gates}·H, H) = ({cell.gates * H}, {H})"
        _checks.fail_shape("W", f"{what} for cell {cell.name!r}", W.shape)
    _checks.rank("U", U, (2,), f"({GH}, D)")
    D = U.shape[1]
    _checks.shape("U", U, (GH, D), f"({GH}, D): G·H rows like W {tuple(W.shape)}")
    dtype = W.dtype
    _checks.same_dtype("U", U, dtype, "W")
    for name, bias in (("b", b), ("b_r", b_r)):
        if bias is not None:
            _checks.floating(name, bias)
            _checks.shape(name, bias, (GH,))
            _checks.same_dtype(name, bias, dtype, "W")
    _checks.sequence("xs", xs, U.shape, dtype, "the parameters")
    batch = xs.shape[1:-1]
    if h0 is not None:
        for i, leaf in enumerate(cell.to_carry(h0)):
            name = "h0" if cell.carry_size == 1 else f"h0[{i}]"
            width = P if i == 0 else H
            _checks.shape(name, leaf, batch + (width,), str(batch + (width,)),
                          "the initial state is (B, H), or (H,) for an unbatched xs" +
                          ("" if W_hr is None else "; with a projection h is (B, P)"))
            _checks.same_dtype(name, leaf, dtype, "the parameters")
    for name, flags in (("mask", mask), ("reset", reset)):
        if flags is not None:
            _checks.boolean(name, flags)
            _checks.shape(name, flags, xs.shape[:-1], str(xs.shape[:-1]) + " = xs.shape[:-1]")
    return H, P


KERNELS = ("auto", "scan", "persistent", "native")


def _check_noise(cell, W, xs, recurrent_mask, zoneout, unbatched, H, P):
    """Validates the regularisation masks; returns (Noise, evaluation zoneout or None).

    H is the cell's width, P that of h (P < H with a projection, else P = H)."""
    T, B = xs.shape[0], xs.shape[1]
    batch = () if unbatched else (B,)
    if recurrent_mask is not None:
        _checks.floating("recurrent_mask", recurrent_mask)
        _checks.shape("recurrent_mask", recurrent_mask, batch + (P,),
                      f"{batch + (P,)}: one mask per sequence over the hidden units")
        _checks.same_dtype("recurrent_mask", recurrent_mask, W.dtype, "the parameters")
        if unbatched:
            recurrent_mask = recurrent_mask[None]
    if zoneout is None:
        return Noise(recurrent_mask), None
    n = cell.carry_size
    entries = zoneout if isinstance(zoneout, (tuple, list)) else (zoneout,) * n
    if len(entries) != n:
        raise ValueError(f"zoneout: expected one entry per carry entry of cell {cell.name!r} "
                         f"({n}), got {len(entries)}")
    if all(isinstance(p, (int, float)) for p in entries):  # evaluation: the expectation
        for p in entries:
            if not 0 <= p < 1:
                raise ValueError(f"zoneout: expected probabilities in [0, 1), got {p}")
        return Noise(recurrent_mask), tuple(float(p) for p in entries)
    masks = []
    for i, k in enumerate(entries):
        name = "zoneout" if n == 1 else f"zoneout[{i}]"
        if isinstance(k, (int, float)):
            raise TypeError(f"{name}: expected arrays for every carry entry (training) or "
                            f"floats for every one (evaluation), got a mix")
        dtype = jnp.result_type(k)
        if not (_boolean(k) or jnp.issubdtype(dtype, jnp.floating)):
            raise TypeError(f"{name}: expected a boolean mask (True: keep) or a floating one, "
                            f"got dtype {dtype}")
        width = P if i == 0 else H  # with a projection, h is P wide and c H wide
        shape = (T,) + batch + (width,)
        _checks.shape(name, k, shape, f"{shape}: one keep-mask per step, sequence and unit" +
                      ("" if P == H else f" (h: P = {P}, the other entries: H = {H})"))
        if not _boolean(k):
            _checks.same_dtype(name, k, W.dtype, "the parameters")
        masks.append(k[:, None] if unbatched else k)
    return Noise(recurrent_mask, tuple(masks)), None


def choose_kernel(kernel, backward, cell, W, matmul_dtype, mask=None, reset=None,
                  record=None, noise=False, projected=False, heads=1) -> str:
    """``"scan"``, ``"persistent"`` or ``"native"``: the loop implementation for one layer."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    if kernel == "native":  # both loops in C++ on the CPU (jrnn/native.py)
        from jrnn import native
        if backward == "autodiff":
            raise ValueError("kernel='native' has a hand-written backward only: "
                             "backward='autodiff' differentiates the scan (use kernel='scan')")
        reason = native.unsupported(cell, W.shape[1], W.dtype, matmul_dtype, mask=mask,
                                    reset=reset, record=record, noise=noise,
                                    projected=projected, heads=heads)
        if reason is not None:
            raise ValueError(f"kernel='native' cannot run this layer: {reason}; "
                             "use kernel='scan' or 'auto'")
        return "native"
    if backward == "autodiff":
        if kernel == "persistent":
            raise ValueError("kernel='persistent' has a hand-written backward only: "
                             "backward='autodiff' differentiates the scan (use kernel='scan')")
        return "scan"
    reason = ("a projection W_hr (proj_size) runs on the scan path only" if projected else
              "a block-diagonal W (heads > 1) runs on the scan path only" if heads > 1 else
              persistent.unsupported(cell, W.shape[1], W.dtype, matmul_dtype, mask=mask,
                                     reset=reset, record=record, noise=noise))
    if kernel == "persistent":
        if reason is not None:
            raise ValueError(f"kernel='persistent' cannot run this layer: {reason}; "
                             "use kernel='scan' or 'auto'")
        return "persistent"
    if kernel == "auto" and reason is None and persistent.preferred(
            cell, W.shape[1], W.dtype, matmul_dtype):
        return "persistent"
    return "scan"


def lengths_to_mask(lengths, num_steps: int):
    """(B,) valid lengths -> (T, B) bool mask, True at steps t < length.

    A scalar length (an unbatched sequence) gives a (T,) mask.
    """
    lengths = jnp.asarray(lengths)
    steps = jnp.arange(num_steps, dtype=lengths.dtype).reshape((num_steps,) + (1,) * lengths.ndim)
    return steps < lengths[None]


def check_lengths(lengths, num_steps: int, batch_shape: tuple, name: str = "lengths"):
    """Integer lengths of shape ``batch_shape`` with values in [0, num_steps]; returns
    them as a JAX array (a list or numpy array is accepted).

    Concrete values are checked at once. Traced ones (under ``jit``) cannot
    raise by themselves: without :func:`jrnn.checked` a length above T acts
    as T and one below 0 as 0 (the mask is ``t < length``); under
    :func:`jrnn.checked` the same check raises when the program runs.
    """
    lengths = _checks.array(name, lengths)
    _checks.integer(name, lengths, "one length per sequence")
    batch_shape = tuple(batch_shape)
    _checks.shape(name, lengths, batch_shape, f"{batch_shape}: one length per sequence")
    message = f"{name}: expected values in [0, {num_steps}] (T = {num_steps} steps), got values in "
    if isinstance(lengths, jax.core.Tracer):
        if lengths.size:
            low, high = jnp.min(lengths), jnp.max(lengths)
            _checks.traced_values((low >= 0) & (high <= num_steps), message + "[{}, {}]",
                                  low, high)
        return lengths
    values = np.asarray(lengths)
    if values.size and (values.min() < 0 or values.max() > num_steps):
        raise ValueError(message + f"[{values.min()}, {values.max()}]")
    return lengths


def rnn(cell, U, W, b, xs, h0=None, *, b_r=None, mask=None, lengths=None, reset=None,
        reverse: bool = False, unroll: Optional[int] = None, matmul_dtype=None,
        backward: str = "manual", kernel: str = "auto", recurrent_mask=None,
        zoneout=None, cell_params=None, W_hr=None, heads: int = 1) -> tuple[jax.Array, Any]:
    """Runs one recurrent layer over a sequence.

    Args:
      cell: a registered cell name (``"elman"``) or a :class:`jrnn.cells.Cell`.
      U: (G·H, D) input weights. W: (G·H, H) recurrent weights.
      b: (G·H,) bias, or None for none (PyTorch's ``bias=False``).
      xs: (T, B, D) time-major inputs, or an unbatched (T, D) sequence.
      h0: initial state, (B, H) or (H,) (for LSTM a ``LSTMState``); zeros if None.
      b_r: optional (G·H,) bias added to the recurrent term (torch's ``bias_hh``).
      mask: optional (T, B) bool, False at steps to skip (see module doc).
      lengths: optional (B,) int in [0, T] (a list works too), for right-padded
        batches: steps t >= length are masked (combined with ``mask`` by logical
        and, if both are given). Length 0 is exact (module doc). Traced lengths
        are range-checked only under :func:`jrnn.checked`.
      reset: optional (T, B) bool, True where the state restarts from ``h0``.
      reverse: run right to left.
      unroll: ``lax.scan`` unroll; None picks :func:`default_unroll`.
      matmul_dtype: None (products in the arrays' dtype) or e.g. ``jnp.bfloat16``:
        every matmul, forward and backward, takes inputs of that dtype and
        accumulates in the parameters' dtype; state, pointwise math and
        gradients keep the parameters' dtype.
      backward: ``"manual"`` (hand-written BPTT) or ``"autodiff"`` (JAX autodiff
        of the same forward: the reference, and the path for forward mode).
      kernel: how the manual path runs its two loops: ``"scan"`` (``lax.scan``),
        ``"persistent"`` (one GPU kernel per loop, :mod:`jrnn.persistent`; an error
        names the reason where it cannot), ``"native"`` (each loop as one C++ call on
        the CPU, :mod:`jrnn.native`; the LSTM and the GRU in float32; an error names the reason
        where it cannot), or ``"auto"``: the persistent kernel on a GPU where it supports the
        layer and was measured faster, else the scan.
      recurrent_mask: optional (B, H) multiplier of h_{t−1} where it feeds the
        recurrent product, the same at every step: variational recurrent dropout
        (Gal & Ghahramani 2016) with the mask already scaled by 1/(1 − p).
        :mod:`jrnn.dropout` draws it.
      zoneout: zoneout on every carry (Krueger et al. 2017): carry_t =
        k ⊙ carry_{t−1} + (1 − k) ⊙ cell(...). In training, a tuple with one
        (T, B, H) array k per carry entry (h; for the LSTM h and c), 1 where a
        unit keeps its value (a boolean array, True where it keeps, as
        :mod:`jrnn.dropout` draws it, or a floating one, which is differentiated) (with ``W_hr``: h's is (T, B, P), since the
        projected h is what the carry holds); in evaluation, the probabilities
        themselves, a float or one per carry entry, used as the expectation k = p.
      cell_params: the cell's own parameters (``cell.init_params``), for a cell
        that has them (the layer-normalised cells); their gradient comes from
        the hand-written backward like every other.
      W_hr: optional (P, H) projection, P < H (LSTMP, Sak et al. 2014; PyTorch's
        ``weight_hr``), for a cell whose h_{t−1} enters only through R_t (the
        LSTM): the cell's h-output u_t = o_t ⊙ tanh(c_t) becomes h_t = u_t W_hrᵀ,
        the carry (and the output) is (h_t: P, c_t: H), and W is (G·H, P). The
        projection is one more matmul of the driver's per step, forward and
        backward; dW_hr = Σ_t (dJ/dh_t)ᵀ u_t is one matmul after the scan.
      heads: NH >= 1: a block-diagonal recurrent matrix, per gate NH blocks of
        (H/NH, H/NH) (multi-head recurrence, as in the sLSTM of Beck et al.
        2024), stored as W of shape (G·H, H/NH): row j holds the weights from
        unit j's own head (:mod:`jrnn._blockdiag`). R_t is then one batched
        matmul over the heads per step, forward and backward, and dW one einsum
        after the scan. 1 (the default) is the dense W. With ``W_hr`` (NH dividing
        P and H) the blocks are (H/NH, P/NH) and W is (G·H, P/NH): each head's
        gates read its own slice of the projected h; W_hr stays dense.

    Returns:
      ``(hs, final)``: hs (T, B, H) every hidden state (zeros at masked steps),
      and the final state (the state after the last valid step).

    >>> import jax, jax.numpy as jnp, jrnn
    >>> p = jrnn.elman.init(jax.random.key(0), input_size=3, hidden_size=4, output_size=2)
    >>> hs, h_T = jrnn.rnn("elman", p.U, p.W, p.b, jnp.ones((5, 2, 3)))
    >>> hs.shape, h_T.shape
    ((5, 2, 4), (2, 4))
    """
    cell = _cells.get(cell)
    _checks.backward(backward)
    U, W, b, b_r, xs, mask, reset, W_hr = (_checks.array(name, a) for name, a in zip(
        ("U", "W", "b", "b_r", "xs", "mask", "reset", "W_hr"),
        (U, W, b, b_r, xs, mask, reset, W_hr)))
    h0 = jax.tree.map(lambda a: _checks.array("h0", a), h0)
    heads = check_heads(heads)
    H, P = _check_args(cell, U, W, b, b_r, xs, h0, mask, reset, W_hr, heads)
    if lengths is not None:
        lengths = check_lengths(lengths, xs.shape[0], xs.shape[1:-1])
        by_length = lengths_to_mask(lengths, xs.shape[0])
        mask = by_length if mask is None else mask & by_length
    if mask is not None:  # padded steps never reach an output or a gradient (module doc)
        xs = jnp.where(mask[..., None], xs, jnp.zeros((), xs.dtype))
    unbatched = xs.ndim == 2
    if unbatched:  # a batch of one: (T, D) -> (T, 1, D), (T,) -> (T, 1), (H,) -> (1, H)
        xs, mask, reset = jax.tree.map(lambda a: a[:, None], (xs, mask, reset))
        h0 = jax.tree.map(lambda a: a[None], h0)
    carry0 = tuple(cell.to_carry(h0) if h0 is not None else
                   tuple(jnp.zeros((xs.shape[1], P if i == 0 else H), W.dtype)
                         for i in range(cell.carry_size)))
    record = None
    if backward == "manual" and _diagnostics.recording():
        record = _diagnostics.register(cell.name, bool(reverse), xs.shape)
    noise, zoneout_p = _check_noise(cell, W, xs, recurrent_mask, zoneout, unbatched, H, P)
    md = _matmul.check(matmul_dtype)
    _checks.cell_params(cell, cell_params, H, W.dtype, "W")
    loop = choose_kernel(kernel, backward, cell, W, md, mask, reset, record,
                         noise=noise != Noise() or zoneout_p is not None,
                         projected=W_hr is not None, heads=heads)
    static = _Static(cell, bool(reverse), default_unroll() if unroll is None else int(unroll),
                     md, record, loop, zoneout_p, heads)
    if backward == "manual":
        _checks.reject_forward_mode("jrnn.rnn", U, W, b, b_r, xs, carry0, W_hr)
        hs, final = _rnn_manual(static, U, W, b, b_r, xs, carry0, mask, reset, noise,
                                cell_params, W_hr)
    else:
        hs, final, _, _, _ = _forward(static, U, W, b, b_r, xs, carry0, mask, reset, noise,
                                      cell_params, W_hr, keep_residuals=False)
    if unbatched:
        hs, final = hs[:, 0], jax.tree.map(lambda a: a[0], final)
    return hs, cell.from_carry(tuple(final))
