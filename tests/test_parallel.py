"""Data parallelism on forced host devices: the same gradients and steps as one device."""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import jrnn

# jax is already initialised here with one CPU device, so the multi-device run
# is a subprocess with the devices forced before jax starts.
SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, functools
    import jrnn
    from jrnn import parallel, charlm
    from jrnn.models import tagger
    assert len(jax.devices()) == 4, jax.devices()

    # 1. gradients and three optimizer steps, sharded over 4 devices vs one.
    k = jax.random.split(jax.random.key(0), 3)
    p = tagger.init(k[0], "lstm", 3, 5, 4, num_layers=2, bidirectional=True,
                    dtype=jnp.float64)
    xs = jax.random.normal(k[1], (6, 8, 3), jnp.float64)
    ys = jax.random.randint(k[2], (6, 8), 0, 4)
    lengths = jnp.array([6, 5, 4, 3, 6, 2, 1, 6])
    loss = lambda p, batch: (tagger.loss(p, batch[0], batch[1], lengths=batch[2],
                                         reduction="mean"), None)
    opt = jrnn.train.adam(1e-2)
    step = jrnn.train.make_train_step(loss, opt)
    grad = jax.jit(jax.grad(lambda p, batch: loss(p, batch)[0]))
    mesh = parallel.batch_mesh()
    batch = (xs, ys, lengths)
    sharded = parallel.shard_batch((xs, ys), mesh, axis=1) + (
        parallel.shard_batch(lengths, mesh, axis=0),)
    assert len(sharded[0].sharding.device_set) == 4
    g1, g4 = grad(p, batch), grad(parallel.replicate(p, mesh), sharded)
    worst = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
                for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)))
    print("grad", worst)
    assert worst < 1e-12, worst
    s1 = (p, opt.init(p))
    s4 = parallel.replicate(s1, mesh)
    for _ in range(3):
        s1 = step(*s1, batch)[:2]
        s4 = step(*s4, sharded)[:2]
    worst = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(s1[0]), jax.tree.leaves(s4[0])))
    print("steps", worst)
    assert worst < 1e-12, worst

    # 2. the char-LM run (float32 parameters) on 2 devices against 1: reductions reorder.
    runs = [charlm.run(charlm.Config(max_chars=20000, hidden=12, seq=8, batch=4, steps=5,
                                     devices=d), progress=False, log=lambda s: None)
            for d in (1, 2)]
    for a, b in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("ok")
""")


def test_sharded_training_matches_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("ok")


def test_uneven_batch_is_an_error_naming_the_size():
    mesh = jrnn.parallel.batch_mesh(jax.devices()[:1] * 1)
    x = np.zeros((4, 3, 2))
    assert jrnn.parallel.shard_batch(x, mesh).shape == (4, 3, 2)  # one device: always even
    with pytest.raises(ValueError, match="batch axis 2"):
        jrnn.parallel.shard_batch(np.zeros((4, 3)), mesh, axis=2)
