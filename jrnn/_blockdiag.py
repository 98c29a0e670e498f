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

where h^{(n)} is head n's slice of h. Viewed as (G, NH, DH, DK), W is one
batched matmul per step (a contraction over DK, batched over the heads), and
with NH = 1 it is the dense (G·H, K) layout and the dense product exactly.
Backward, for dR_t (B, G·H) and the state h_in that step read:

.. math::

    \frac{\partial J}{\partial h_{t-1}^{(n)}} = \sum_g dR_t^{(g,n)} W^{(g)}_n, \qquad
    dW^{(g)}_n = \sum_{t,b} dR_t^{(g,n)\top} h_{t-1}^{(n)}

the second one einsum over all T·B rows after the scan, as for a dense W.
"""
from __future__ import annotations

from jrnn import _matmul


def _blocks(W, G: int, heads: int):
    """(G·H, DK) -> (G, NH, DH, DK)."""
    return W.reshape(G, heads, W.shape[0] // (G * heads), W.shape[1])


def product(h, W, G: int, heads: int, md=None):
    """R = h Wᵀ for the block-diagonal W: (B, K) -> (B, G·H)."""
    B, DK = h.shape[0], W.shape[1]
    R = _matmul.einsum("bnd,gned->bgne", h.reshape(B, heads, DK), _blocks(W, G, heads), md)
    return R.reshape(B, -1)


def transpose(dR, W, G: int, heads: int, md=None):
    """dR W for the block-diagonal W: (B, G·H) -> (B, K), the cotangent of h."""
    blocks = _blocks(W, G, heads)
    dh = _matmul.einsum("bgne,gned->bnd", dR.reshape(dR.shape[0], G, heads, blocks.shape[2]),
                        blocks, md)
    return dh.reshape(dR.shape[0], -1)


def weight_gradient(dR_g, h_in, heads: int, md=None):
    """One gate's block rows of dW from all N = T·B rows: (N, H), (N, K) -> (H, DK)."""
    N, H = dR_g.shape
    DK = h_in.shape[1] // heads
    dW = _matmul.einsum("rne,rnd->ned", dR_g.reshape(N, heads, H // heads),
                        h_in.reshape(N, heads, DK), md)
    return dW.reshape(H, DK)
