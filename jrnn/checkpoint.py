"""Checkpoints that load without executing code, are written atomically, and resume exactly.

A checkpoint is one ``.npz`` file (numpy's zip of ``.npy`` arrays, read with
``allow_pickle=False``) holding

* every array leaf of the saved pytrees, under its path (``params/rnn/0/0/W``);
* ``__meta__``: JSON, as UTF-8 bytes, with the format name and version, the
  step, the caller's metadata (the run's configuration, the data position...)
  and, for each leaf, its dtype, its SHA-256, and whether it was a typed PRNG key.

It is written to a temporary file in the same folder, flushed to disk, and
renamed over ``step_<N>.npz``: a reader sees the old file or the new one,
never half of one, even if the writer is killed. The metadata records a
SHA-256 of every array, so a truncated or corrupted file fails to load with
:class:`CheckpointError` naming it, and :func:`restore_latest` falls back to
the newest good one.

Loading needs a template (``like``) with the structure to fill, as in Orbax
and Equinox: the file holds arrays, never code or class names.

    >>> save(ckpt_dir, step, {"params": params, "opt_state": opt_state}, {"config": cfg})
    >>> state, meta = restore_latest(ckpt_dir, {"params": params, "opt_state": opt_state})
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

__all__ = ["CheckpointError", "CorruptCheckpoint", "save", "restore", "restore_latest", "latest",
           "metadata", "list_steps", "path_for"]

FORMAT = "jrnn-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.npz$")


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file that is truncated, damaged, or not a jrnn checkpoint at all."""


def path_for(directory: str, step: int) -> str:
    return os.path.join(directory, f"step_{step:09d}.npz")


def list_steps(directory: str) -> list[int]:
    """Steps of the checkpoint files in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(m.group(1)) for m in map(_NAME.match, os.listdir(directory)) if m)


def _key_string(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _flatten(tree) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in leaves:
        name = _key_string(path)
        if name in out or name == "__meta__":
            raise ValueError(f"state: two leaves share the path {name!r}")
        out[name] = leaf
    return out


def save(directory: str, step: int, state, metadata: Optional[dict] = None,
         keep: Optional[int] = 3) -> str:
    """Writes ``state`` (any pytree of arrays and PRNG keys) as checkpoint ``step``.

    Args:
      directory: created if missing.
      step: a non-negative int; the file is ``step_<step>.npz``.
      state: the pytree to save, e.g. ``{"params": ..., "opt_state": ..., "key": ...}``.
      metadata: JSON-serialisable facts about the run (configuration, data
        position, vocabulary), returned by :func:`restore`.
      keep: how many of the newest checkpoints to keep (None keeps all); older
        ones are deleted only after the new one is in place.

    Returns the path written. With several processes (``jax.distributed``)
    every process calls it with the same replicated state: process 0 writes
    the file once, and every process returns after it is in place, so each
    can restore it at once (on a file system they share).
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected a non-negative int, got {step!r}")
    os.makedirs(directory, exist_ok=True)
    arrays, leaves = {}, {}
    for name, leaf in _flatten(state).items():
        is_key = jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)
        if is_key:
            leaves[name] = {"key": True, "impl": str(jax.random.key_impl(leaf))}
            leaf = jax.random.key_data(leaf)
        array = np.asarray(jax.device_get(leaf))
        if array.dtype == object:
            raise TypeError(f"state: leaf {name!r} is not an array (got {type(leaf).__name__})")
        leaves.setdefault(name, {}).update(dtype=array.dtype.name, sha256=_digest(array))
        arrays[name] = array
    meta = {"format": FORMAT, "version": VERSION, "step": step, "leaves": leaves,
            "metadata": metadata or {}}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    final = path_for(directory, step)
    if jax.process_index() == 0:  # several processes hold the same replicated state
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        _fsync_dir(directory)
        if keep is not None:
            for old in list_steps(directory)[:-keep]:
                if old != step:
                    os.remove(path_for(directory, old))
    if jax.process_count() > 1:  # the others return once the file is in place
        multihost_utils.sync_global_devices(f"jrnn.checkpoint.save {final}")
    return final


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: str) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path}: no such checkpoint") from None
    except OSError as e:
        raise CorruptCheckpoint(f"{path}: cannot be read ({e.strerror or e})") from None
    if magic != b"PK\x03\x04":  # every .npz (a zip archive) starts so; a truncated one too
        raise CorruptCheckpoint(f"{path}: not a jrnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}  # reads and CRC-checks every member
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path}: no such checkpoint") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CorruptCheckpoint(f"{path}: truncated or corrupted checkpoint ({e})") from e
    if "__meta__" not in arrays:
        raise CorruptCheckpoint(f"{path}: not a jrnn checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpoint(f"{path}: unreadable metadata ({e})") from e
    if meta.get("format") != FORMAT:
        raise CorruptCheckpoint(f"{path}: not a jrnn checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')}, "
                              f"this jrnn reads version {VERSION}")
    for name, array in arrays.items():
        expected = meta.get("leaves", {}).get(name, {}).get("sha256")
        if expected != _digest(array):
            raise CorruptCheckpoint(f"{path}: {name} is corrupted (its SHA-256 differs from the "
                                  f"one recorded when it was saved)")
    return arrays, meta


def metadata(path: str) -> dict:
    """What :func:`save` was given as metadata, plus ``step``, without building any state."""
    meta = _read(path)[1]
    return {"step": meta["step"], **meta["metadata"]}


def restore(path: str, like) -> tuple[Any, dict]:
    """Reads the checkpoint at ``path`` into the structure of ``like``.

    ``like`` is a pytree with the structure, shapes and dtypes to expect (the
    freshly initialised state, for instance); its values are not used.
    Returns ``(state, metadata)``, where metadata holds ``step`` and what
    :func:`save` was given. A missing leaf, a shape or a dtype that differs,
    or a damaged file raises :class:`CheckpointError` naming the file.
    """
    arrays, meta = _read(path)
    template = _flatten(like)
    missing = sorted(template.keys() - arrays.keys())
    extra = sorted(arrays.keys() - template.keys())
    if missing or extra:
        raise CheckpointError(f"{path}: does not fit the expected state; missing "
                              f"{missing[:5]}, unexpected {extra[:5]}")
    values = []
    for name, leaf in template.items():
        array, info = arrays[name], meta["leaves"].get(name, {})
        if info.get("key"):
            value = jax.random.wrap_key_data(array, impl=info["impl"])
        else:
            value = array
        expected_shape = tuple(leaf.shape if hasattr(leaf, "shape") else np.shape(leaf))
        if tuple(value.shape) != expected_shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, "
                                  f"expected {expected_shape}")
        expected_dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if value.dtype != expected_dtype:
            raise CheckpointError(f"{path}: {name} has dtype {value.dtype}, "
                                  f"expected {expected_dtype}")
        values.append(value)
    treedef = jax.tree_util.tree_structure(like)
    state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(v) for v in values])
    return state, {"step": meta["step"], **meta["metadata"]}


def latest(directory: str) -> Optional[tuple[str, dict]]:
    """``(path, metadata)`` of the newest checkpoint in ``directory`` that reads, or None.

    A damaged newer file is reported with a warning naming it and skipped (and
    left in place for inspection). Reading checks every array's SHA-256, so
    the path returned restores.
    """
    for step in reversed(list_steps(directory)):
        path = path_for(directory, step)
        try:
            return path, metadata(path)
        except CorruptCheckpoint as e:
            warnings.warn(f"skipping checkpoint: {e}", RuntimeWarning, stacklevel=2)
    return None


def restore_latest(directory: str, like) -> tuple[Optional[Any], Optional[dict]]:
    """The newest checkpoint in ``directory`` that reads, restored into ``like``;
    ``(None, None)`` if there is none.

    Damaged newer files are skipped as in :func:`latest`. A readable checkpoint
    that does not fit ``like`` (another model) is an error, not skipped:
    falling back past it would resume from an older run.
    """
    found = latest(directory)
    return (None, None) if found is None else restore(found[0], like)
