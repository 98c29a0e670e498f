r"""The recurrent product of a multi-head (block-diagonal) recurrence, and its adjoints.

With ``heads`` = NH and H = NH·DH, each gate's (H, H) recurrent matrix is
block-diagonal with NH blocks of (DH, DH) (the sLSTM of Beck et al. 2024,
"xLSTM", mixes units only within a head). jrnn stores only the blocks, in the
rows of the dense layout: W is (G·H, DH), its row j of gate g holds the DH
weights from unit j's own head, so that

.. math::

    W^{(g)}_{n} = W[gH + nD_H : gH + (n+1)D_H, :] \in \mathbb{R}^{D_H \times D_H},
    \qquad R_t^{(g, n)} = h_{t-1}^{(n)} W_n^{(g)\top}

where h^{(n)} is head n's slice of h. Arranged once before the loop as
(NH, G, DH, DH) (:func:`by_head`; the backward's transposed product reads a second
arrangement, :func:`by_head_transposed`), W is one batched matmul per step (a
contraction over DH, batched over the heads), and with NH = 1 it is the dense
(G·H, H) layout and the dense product exactly.
Backward, for dR_t (B, G·H) and the state h_in that step read:

.. math::

    \frac{\partial J}{\partial h_{t-1}^{(n)}} = \sum_g dR_t^{(g,n)} W^{(g)}_n, \qquad
    dW^{(g)}_n = \sum_{t,b} dR_t^{(g,n)\top} h_{t-1}^{(n)}

the second one einsum over all T·B rows after the scan, as for a dense W.
"""
from __future__ import annotations

from jrnn import _matmul


def by_head(W, G: int, heads: int):
    """(G·H, DH) -> (NH, G, DH_out, DH_in): head n's G blocks side by side. The drivers
    arrange W so once, outside the loop: XLA:CPU's batched product wants the heads
    leading, and a W handed over in the stored layout was relaid out (a copy of all
    of W) at every step, forward and backward (benchmarks/NOTES.md)."""
    DH = W.shape[1]
    return W.reshape(G, heads, DH, DH).transpose(1, 0, 2, 3)


def product(h, blocks, md=None):
    """R = h Wᵀ for the block-diagonal W given :func:`by_head`: (B, H) -> (B, G·H)."""
    heads, G, DH = blocks.shape[:3]
    R = _matmul.einsum("bnd,nged->bgne", h.reshape(h.shape[0], heads, DH), blocks, md)
    return R.reshape(h.shape[0], -1)


def by_head_transposed(W, G: int, heads: int):
    """(G·H, DH) -> (NH, DH_in, DH_out, G), the arrangement the transposed product reads
    (:func:`transpose`); made once, outside the loop, like :func:`by_head`."""
    DH = W.shape[1]
    return W.reshape(G, heads, DH, DH).transpose(1, 3, 2, 0)


def transpose(dR, blocks_t, md=None):
    """dR W for the block-diagonal W given :func:`by_head_transposed`: (B, G·H) -> (B, H),
    the cotangent of h."""
    heads, DH, _, G = blocks_t.shape
    dh = _matmul.einsum("bgne,ndeg->bnd", dR.reshape(dR.shape[0], G, heads, DH), blocks_t, md)
    return dh.reshape(dR.shape[0], -1)


def weight_gradient(dR_g, h_in, heads: int, md=None):
    """One gate's block rows of dW from all N = T·B rows: (N, H), (N, H) -> (H, DH)."""
    N, H = dR_g.shape
    DH = H // heads
    dW = _matmul.einsum("rne,rnd->ned", dR_g.reshape(N, heads, DH), h_in.reshape(N, heads, DH),
                        md)
    return dW.reshape(H, DH)
