"""jrnn: recurrent networks in JAX with backpropagation through time by hand.

The public API, re-exported explicitly:

* :func:`rnn`: one recurrent layer of any cell, with hand-written BPTT.
* :func:`checked`: raise on bad values under ``jit`` (lengths, labels), via checkify.
* :mod:`elman`: the textbook tanh RNN with softmax/NLL output (init, loss, ...).
* :mod:`heads`: the softmax/NLL output head with its hand-written VJP.
* :mod:`cells`: the pointwise cells and their registry.
* :mod:`linear`: the second driver, for linear recurrences (minGRU, minLSTM, LRU):
  a parallel or sequential scan with the adjoint as a reverse scan.
* :mod:`lru`: the LRU layer (complex diagonal recurrence, real readout).
* :mod:`layers`: layers that know their cell; deep and bidirectional stacks.
* :mod:`models`: the classic architectures: tagger (many-to-many), classifier
  (many-to-one), generator (one-to-many), seq2seq (encoder-decoder).
* :mod:`train`: optax training steps, truncated BPTT.
* :mod:`remat`: memory-bounded BPTT (store every k-th state, recompute).
* :mod:`diagnostics`: gradient flow through time (‖∂J/∂h_t‖, per-step ∇W).
* :mod:`gradcheck`: hand-written against autodiff gradients, any architecture
  and cell, at any sizes.
* :mod:`checkpoint`: atomic, pickle-free checkpoints that resume exactly.
* :mod:`parallel`: data parallelism over a device mesh (``jax.sharding``).
* :mod:`plots`: loss curves and gradient-flow plots (matplotlib, optional).
* :mod:`pytorch`: conversion to and from ``torch.nn.RNN``/``LSTM``/``GRU``
  (imports torch only when called).
"""
from jrnn import (cells, checkpoint, diagnostics, elman, heads, layers, linear, lru, models,
                  parallel, plots, pytorch, recurrence, remat, train)
from jrnn import gradcheck  # after models, which it imports
from jrnn._checks import checked
from jrnn.recurrence import default_unroll, lengths_to_mask, rnn

__all__ = ["checked", "cells", "checkpoint", "default_unroll", "diagnostics", "elman", "gradcheck", "heads", "layers",
           "lengths_to_mask", "linear", "lru", "models", "parallel", "plots", "pytorch", "recurrence", "remat", "rnn",
           "train"]
__version__ = "0.1.0"
