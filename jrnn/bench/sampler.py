"""The step-by-step sampler in the benchmark suite: jrnn's generation path beside its peers'.

Each implementation generates T tokens for B sequences from one layer and a linear head,
feeding every drawn token back as a one-hot input (so D = C), drawing from
softmax(o_t) (temperature 1), as a user of each library would write it:

* ``jrnn``: :func:`jrnn.models._common.autoregress`, the loop behind
  :func:`jrnn.models.tagger.sample`: :func:`jrnn.layers.step_stack` (the same pointwise
  cells as the scan) inside one jitted ``lax.scan``; ``jrnn native``: the same function with
  ``kernel="native"`` (:mod:`jrnn.native_sampler`: each chunk of steps one C++ call);
* ``flax``: the Flax linen cell and an ``nn.Dense`` head applied once per step inside
  one jitted ``lax.scan``;
* ``torch``: the ``torch.nn`` module called on one step at a time in a Python loop
  (``torch.no_grad``), ``torch.multinomial`` on the softmax.

Every builder returns a function that runs the whole generation and waits for it.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _check(cfg) -> None:
    if cfg.D != cfg.C:
        from jrnn.bench.suite import Missing
        raise Missing(f"the sampler feeds tokens back as inputs, so it needs D == C, got "
                      f"D {cfg.D}, C {cfg.C}")


def jrnn_sampler(cell: str, cfg, heads: int = 1, kernel: str = "auto") -> Callable[[], object]:
    """jrnn's generation loop over a one-layer tagger's parameters."""
    from jrnn import layers
    from jrnn.models import _common, tagger
    _check(cfg)
    params = tagger.init(jax.random.key(0), cell, cfg.D, cfg.H, cfg.C, heads=heads)
    states = tuple(state for (state,) in layers.zero_states(params.rnn, (cfg.B,)))
    embed = lambda token: jax.nn.one_hot(token, cfg.D, dtype=jnp.float32)

    @jax.jit
    def generate(params, states, key):
        return _common.autoregress(params.rnn, params.head, states,
                                   embed(jnp.zeros((cfg.B,), jnp.int32)), embed, key, cfg.T,
                                   1.0, kernel=kernel)
    key = jax.random.key(1)
    return lambda: jax.block_until_ready(generate(params, states, key))


def flax_sampler(cell: str, cfg) -> Callable[[], object]:
    """The Flax linen cell stepped in a jitted ``lax.scan``."""
    import flax.linen as nn
    _check(cfg)
    cell_cls = {"elman": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]

    class Step(nn.Module):
        @nn.compact
        def __call__(self, carry, x):
            carry, h = cell_cls(features=cfg.H)(carry, x)
            return carry, nn.Dense(cfg.C)(h)

    model = Step()
    x0 = jnp.zeros((cfg.B, cfg.D), jnp.float32)
    carry0 = cell_cls(features=cfg.H, parent=None).initialize_carry(jax.random.key(0),
                                                                   x0.shape)
    params = model.init(jax.random.key(0), carry0, x0)

    @jax.jit
    def generate(params, carry, key):
        def step(state, key):
            carry, x = state
            carry, logits = model.apply(params, carry, x)
            token = jax.random.categorical(key, logits)
            return (carry, jax.nn.one_hot(token, cfg.D, dtype=x.dtype)), token
        return jax.lax.scan(step, (carry, x0), jax.random.split(key, cfg.T))[1]
    key = jax.random.key(1)
    return lambda: jax.block_until_ready(generate(params, carry0, key))


def torch_sampler(cell: str, cfg) -> Callable[[], object]:
    """The ``torch.nn`` module called one step at a time (CPU, or CUDA on a GPU)."""
    import torch
    _check(cfg)
    gpu = jax.default_backend() == "gpu"
    device = torch.device("cuda" if gpu else "cpu")
    torch.manual_seed(0)
    rnn = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        cfg.D, cfg.H).to(device)
    head = torch.nn.Linear(cfg.H, cfg.C).to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)

    def generate():
        tokens = []
        with torch.no_grad():
            x, state = torch.zeros(1, cfg.B, cfg.D, device=device), None
            for _ in range(cfg.T):
                out, state = rnn(x, state)
                probs = torch.softmax(head(out[0]), dim=-1)
                token = torch.multinomial(probs, 1)[:, 0]
                tokens.append(token)
                x = torch.nn.functional.one_hot(token, cfg.D).to(torch.float32)[None]
        result = torch.stack(tokens)
        sync()
        return result
    return generate


def tokens(run: Callable[[], object]) -> np.ndarray:
    """The (T, B) tokens a sampler drew, as a numpy array (for the suite's tests)."""
    out = run()
    return np.asarray(out.cpu() if hasattr(out, "cpu") else out)
