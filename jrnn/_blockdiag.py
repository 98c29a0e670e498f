r"""The recurrent product of a multi-head (block-diagonal) recurrence, and its adjoints.

With ``heads`` = NH, a cell of width H = NH·DH and a recurrent input h of width
K = NH·DK (K = H, or the projected width P of an LSTMP, Sak et al. 2014), each
gate's (H, K) recurrent matrix is block-diagonal with NH blocks of (DH, DK): a
head's gates read only that head's slice of h (the sLSTM of Beck et al. 2024,
"xLSTM", mixes units only within a head). jrnn stores only the blocks, in the
rows of the dense layout: W is (G·H, DK), its row j of gate g holds the DK
weights from unit j's own head, so that

.. math::

    W^{(g)}_{n} = W[gH + nD_H : gH + (n+1)D_H, :] \in \mathbb{R}^{D_H \times D_K},
    \qquad R_t^{(g, n)} = h_{t-1}^{(n)} W_n^{(g)\top}

where h^{(n)} is head n's slice of h. Arranged once before the loop as
(NH, G, DH, DK) (:func:`by_head`; the backward's transposed product reads a second
arrangement, :func:`by_head_transposed`), W is one batched matmul per step (a
contraction over DK, batched over the heads), and with NH = 1 it is the dense
(G·H, K) layout and the dense product exactly.
Backward, for dR_t (B, G·H) and the state h_in that step read:

.. math::

    \frac{\partial J}{\partial h_{t-1}^{(n)}} = \sum_g dR_t^{(g,n)} W^{(g)}_n, \qquad
    dW^{(g)}_n = \sum_{t,b} dR_t^{(g,n)\top} h_{t-1}^{(n)}

the second one einsum over all T·B rows after the scan, as for a dense W.
"""
from __future__ import annotations

from jrnn import _matmul


def _blocks(W, G: int, heads: int):
    """(G·H, DK) -> (G, NH, DH, DK), a view of the stored layout."""
    return W.reshape(G, heads, W.shape[0] // (G * heads), W.shape[1])


def by_head(W, G: int, heads: int):
    """(G·H, DK) -> (NH, G, DH, DK): head n's G blocks side by side. The drivers
    arrange W so once, outside the loop: XLA:CPU's batched product wants the heads
    leading, and a W handed over in the stored layout was relaid out (a copy of all
    of W) at every step, forward and backward (benchmarks/NOTES.md)."""
    return _blocks(W, G, heads).transpose(1, 0, 2, 3)


def product(h, blocks, md=None):
    """R = h Wᵀ for the block-diagonal W given :func:`by_head`: (B, K) -> (B, G·H)."""
    heads, DK = blocks.shape[0], blocks.shape[3]
    R = _matmul.einsum("bnd,nged->bgne", h.reshape(h.shape[0], heads, DK), blocks, md)
    return R.reshape(h.shape[0], -1)


def by_head_transposed(W, G: int, heads: int):
    """(G·H, DK) -> (NH, DK, DH, G), the arrangement the transposed product reads
    (:func:`transpose`); made once, outside the loop, like :func:`by_head`."""
    return _blocks(W, G, heads).transpose(1, 3, 2, 0)


def transpose(dR, blocks_t, md=None):
    """dR W for the block-diagonal W given :func:`by_head_transposed`: (B, G·H) -> (B, K),
    the cotangent of h."""
    heads, _, DH, G = blocks_t.shape
    dh = _matmul.einsum("bgne,ndeg->bnd", dR.reshape(dR.shape[0], G, heads, DH), blocks_t, md)
    return dh.reshape(dR.shape[0], -1)


def weight_gradient(dR_g, h_in, heads: int, md=None):
    """One gate's block rows of dW from all N = T·B rows: (N, H), (N, K) -> (H, DK)."""
    N, H = dR_g.shape
    DK = h_in.shape[1] // heads
    dW = _matmul.einsum("rne,rnd->ned", dR_g.reshape(N, heads, H // heads),
                        h_in.reshape(N, heads, DK), md)
    return dW.reshape(H, DK)
