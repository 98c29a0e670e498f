"""Plots (matplotlib, the ``examples`` extra): loss curves and gradient flow.

Every function writes a PNG and returns its path; matplotlib is imported
when one is called, with the non-interactive Agg backend.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

__all__ = ["loss_curve", "gradient_flow"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_curve(losses: Sequence[float], path: str, baseline: Optional[float] = None,
               smoothing: int = 50) -> str:
    """Training loss per step (and its running mean over ``smoothing`` steps)."""
    plt = _pyplot()
    losses = np.asarray(losses, np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.35, color="C0")
    if len(losses) >= smoothing:
        mean = np.convolve(losses, np.ones(smoothing) / smoothing, mode="valid")
        ax.plot(steps[smoothing - 1:], mean, color="C0", label=f"mean of {smoothing}")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="unigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def gradient_flow(flows, path: str, title: Optional[str] = None,
                  labels: Optional[Sequence[str]] = None) -> str:
    """‖∂J/∂h_t‖ and ‖∇_W^(t) J‖ (‖∇_U^(t) J‖ for a linear layer) against t, log scale,
    one line per layer (:func:`jrnn.diagnostics.gradient_flow`'s flows, or several runs')."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    for i, flow in enumerate(flows):
        label = labels[i] if labels is not None else flow.label
        t = np.arange(1, len(flow.dh_norm) + 1)
        axes[0].semilogy(t, np.maximum(flow.dh_norm, 1e-300), label=label, lw=1.2)
        axes[1].semilogy(t, np.maximum(flow.dW_norm, 1e-300), label=label, lw=1.2)
    axes[0].set_ylabel(r"$\|\partial J / \partial h_t\|$")
    weights = sorted({flow.weight for flow in flows})
    axes[1].set_ylabel(r"$\|\nabla_{%s}^{(t)} J\|$" % ",".join(weights))
    for ax in axes:
        ax.set_xlabel("step t")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
