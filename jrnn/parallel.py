"""Data parallelism with JAX's own engine: a mesh, the batch axis sharded, parameters replicated.

jrnn adds no communication of its own. A jitted training step whose inputs
are laid out by these helpers runs on every device of the mesh: each holds
the parameters and its slice of the batch, the recurrence runs on the slices
independently, and XLA's SPMD partitioner inserts the all-reduce that sums the
gradients (the post-scan dW, dU, db are sums over batch rows).

One host, several devices (GPUs, or CPU devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``)::

    mesh = jrnn.parallel.batch_mesh()                 # all devices
    params, opt_state = jrnn.parallel.replicate((params, opt_state), mesh)
    xs, ys = jrnn.parallel.shard_batch((xs, ys), mesh, axis=1)   # time-major (T, B, ...)
    params, opt_state, metrics = train_step(params, opt_state, (xs, ys))

Several hosts: call ``jax.distributed.initialize()`` first on every process
(with the coordinator's address, or from the cluster's environment: SLURM,
Open MPI, Kubernetes), then the same code; ``jax.devices()`` then lists every
process's devices, and :func:`shard_batch` takes each process's *local* part
of the batch and assembles the global array with
``jax.make_array_from_process_local_data``. tests/test_multiprocess.py runs
two such processes on one machine (127.0.0.1) and checks gradients, three
optimizer steps and a checkpoint against one process.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_mesh", "replicate", "shard_batch", "batch_sharding", "BATCH"]

BATCH = "batch"


def batch_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A one-axis mesh named ``"batch"`` over ``devices`` (default: all of them)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    return Mesh(np.array(devices), (BATCH,))


def batch_sharding(mesh: Mesh, ndim: int, axis: int) -> NamedSharding:
    """Arrays of rank ``ndim`` split along ``axis`` over the mesh, whole along the rest."""
    spec = [None] * ndim
    spec[axis] = BATCH
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicate(tree, mesh: Mesh):
    """Every leaf copied whole to every device of the mesh (parameters, optimizer state)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree, mesh: Mesh, axis: int = 1):
    """Every leaf split along its batch ``axis`` over the mesh.

    ``axis=1`` for time-major sequences (T, B, ...) and ``axis=0`` for states
    (B, H). With several processes each passes its local rows and gets the
    global array. The batch must divide evenly: an uneven split would leave
    devices with different shapes, so it is an error, not silent padding.
    """
    n = mesh.devices.size // jax.process_count()

    def put(path, x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim <= axis:
            raise ValueError(f"{jax.tree_util.keystr(path) or 'batch'}: expected a batch axis "
                             f"{axis}, got an array of shape {tuple(x.shape)}")
        if x.shape[axis] % n:
            raise ValueError(f"{jax.tree_util.keystr(path) or 'batch'}: batch axis {axis} of "
                             f"size {x.shape[axis]} does not divide over {n} devices")
        sharding = batch_sharding(mesh, x.ndim, axis)
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)
    return jax.tree_util.tree_map_with_path(put, tree)
