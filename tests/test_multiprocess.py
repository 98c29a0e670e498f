"""Several processes, really: two processes on this machine joined by
``jax.distributed.initialize`` on 127.0.0.1, each with two CPU devices of its
own, train data-parallel over one mesh of four devices (jrnn.parallel). Their
gradients and three optimizer steps equal the one-process result, and a
checkpoint saved from the run is written once and restores in both.

The test starts and stops its own processes, with timeouts.
"""
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from helpers import TOL, rel_error

WORKER = textwrap.dedent("""
    import os, sys
    process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=120)
    import numpy as np
    sys.path.insert(0, os.path.dirname(out))
    import problem
    from jrnn import checkpoint, parallel
    assert jax.process_count() == 2 and len(jax.local_devices()) == 2, jax.devices()
    mesh = parallel.batch_mesh()
    assert mesh.devices.size == 4
    p, (xs, ys, lengths), grad, step, opt = problem.build()
    rows = slice(4 * process_id, 4 * process_id + 4)  # this process's half of the batch
    batch = parallel.shard_batch((xs[:, rows], ys[:, rows]), mesh, axis=1) + (
        parallel.shard_batch(lengths[rows], mesh, axis=0),)
    state = parallel.replicate((p, opt.init(p)), mesh)
    g = grad(state[0], batch)
    for _ in range(3):
        state = step(*state, batch)[:2]
    writes = []
    savez = np.savez
    np.savez = lambda *a, **k: (writes.append(1), savez(*a, **k))[1]
    path = checkpoint.save(os.path.join(os.path.dirname(out), "ckpt"), 3, {"params": state[0]})
    np.savez = savez
    restored, meta = checkpoint.restore(path, {"params": state[0]})
    leaves = lambda tree: [np.asarray(a) for a in jax.tree.leaves(tree)]
    np.savez(out, writes=len(writes), step=meta["step"],
             **{f"grad{i}": a for i, a in enumerate(leaves(g))},
             **{f"param{i}": a for i, a in enumerate(leaves(state[0]))},
             **{f"restored{i}": a for i, a in enumerate(leaves(restored["params"]))})
    jax.distributed.shutdown()
""")

PROBLEM = textwrap.dedent("""
    import jax, jax.numpy as jnp
    import jrnn
    from jrnn.models import tagger

    def build():
        k = jax.random.split(jax.random.key(0), 3)
        p = tagger.init(k[0], "lstm", 3, 5, 4, num_layers=2, bidirectional=True,
                        dtype=jnp.float64)
        xs = jax.random.normal(k[1], (6, 8, 3), jnp.float64)
        ys = jax.random.randint(k[2], (6, 8), 0, 4)
        lengths = jnp.array([6, 5, 0, 3, 6, 2, 1, 6])
        loss = lambda p, b: (tagger.loss(p, b[0], b[1], lengths=b[2], reduction="mean"), None)
        opt = jrnn.train.adam(1e-2)
        grad = jax.jit(jax.grad(lambda p, b: loss(p, b)[0]))
        return p, (xs, ys, lengths), grad, jrnn.train.make_train_step(loss, opt), opt
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
    (tmp_path / "problem.py").write_text(PROBLEM)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port = free_port()
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i, out in enumerate(outs)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs), "\n".join(logs)[-5000:]

    sys.path.insert(0, str(tmp_path))
    try:
        import problem
    finally:
        sys.path.remove(str(tmp_path))
    p, batch, grad, step, opt = problem.build()
    g = grad(p, batch)
    state = (p, opt.init(p))
    for _ in range(3):
        state = step(*state, batch)[:2]
    results = [np.load(out) for out in outs]
    assert sum(int(r["writes"]) for r in results) == 1  # the checkpoint is written once
    assert len(list((tmp_path / "ckpt").iterdir())) == 1
    for r in results:
        n = len(jax.tree.leaves(p))
        assert rel_error([r[f"grad{i}"] for i in range(n)], jax.tree.leaves(g)) <= TOL[jnp.float64]
        params = [r[f"param{i}"] for i in range(n)]
        assert rel_error(params, jax.tree.leaves(state[0])) <= TOL[jnp.float64]
        assert int(r["step"]) == 3
        for i in range(n):
            np.testing.assert_array_equal(r[f"restored{i}"], params[i])
