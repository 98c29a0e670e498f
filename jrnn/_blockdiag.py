r"""The recurrent product of a multi-head (block-diagonal) recurrence, and its adjoints.

With ``heads`` = NH and H = NH·DH, each gate's (H, H) recurrent matrix is
block-diagonal with NH blocks of (DH, DH) (the sLSTM of Beck et al. 2024,
"xLSTM", mixes units only within a head). jrnn stores only the blocks, in the
rows of the dense layout: W is (G·H, DH), its row j of gate g holds the DH
weights from unit j's own head, so that

.. math::

    W^{(g)}_{n} = W[gH + nD_H : gH + (n+1)D_H, :] \in \mathbb{R}^{D_H \times D_H},
    \qquad R_t^{(g, n)} = h_{t-1}^{(n)} W_n^{(g)\top}

where h^{(n)} is head n's slice of h. Viewed as (G, NH, DH, DH), W is one
batched matmul per step (a contraction over DH, batched over the heads), and
with NH = 1 it is the dense (G·H, H) layout and the dense product exactly.
Backward, for dR_t (B, G·H) and the state h_in that step read:

.. math::

    \frac{\partial J}{\partial h_{t-1}^{(n)}} = \sum_g dR_t^{(g,n)} W^{(g)}_n, \qquad
    dW^{(g)}_n = \sum_{t,b} dR_t^{(g,n)\top} h_{t-1}^{(n)}

the second one einsum over all T·B rows after the scan, as for a dense W.
"""
from __future__ import annotations

from jrnn import _matmul


def _blocks(W, G: int, heads: int):
    """(G·H, DH) -> (G, NH, DH_out, DH_in)."""
    DH = W.shape[1]
    return W.reshape(G, heads, DH, DH)


def product(h, W, G: int, heads: int, md=None):
    """R = h Wᵀ for the block-diagonal W: (B, H) -> (B, G·H)."""
    B, DH = h.shape[0], W.shape[1]
    R = _matmul.einsum("bnd,gned->bgne", h.reshape(B, heads, DH), _blocks(W, G, heads), md)
    return R.reshape(B, -1)


def transpose(dR, W, G: int, heads: int, md=None):
    """dR W for the block-diagonal W: (B, G·H) -> (B, H), the cotangent of h."""
    B, DH = dR.shape[0], W.shape[1]
    dh = _matmul.einsum("bgne,gned->bnd", dR.reshape(B, G, heads, DH), _blocks(W, G, heads), md)
    return dh.reshape(B, -1)


def weight_gradient(dR_g, h_in, heads: int, md=None):
    """One gate's block rows of dW from all N = T·B rows: (N, H), (N, H) -> (H, DH)."""
    N, H = dR_g.shape
    DH = H // heads
    dW = _matmul.einsum("rne,rnd->ned", dR_g.reshape(N, heads, DH), h_in.reshape(N, heads, DH),
                        md)
    return dW.reshape(H, DH)
