"""Checkpoints: round trip, atomic writes, keep-N, damaged files, exact resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import checkpoint
from jrnn.models import tagger


def state():
    params = tagger.init(jax.random.key(0), "lstm", 3, 4, 5, num_layers=2, dtype=jnp.float32)
    opt_state = jrnn.train.adam(1e-3).init(params)
    return {"params": params, "opt_state": opt_state, "key": jax.random.key(7),
            "h": jrnn.layers.zero_states(params.rnn, (2,))}


def assert_same(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_every_leaf_bit_for_bit(tmp_path):
    s = state()
    s["params"] = jax.tree.map(lambda a: a + 0.1, s["params"])
    path = checkpoint.save(str(tmp_path), 12, s, {"position": 345, "note": "x"})
    restored, meta = checkpoint.restore(path, state())
    assert_same(restored, s)
    assert meta == {"step": 12, "position": 345, "note": "x"}
    # The key comes back as a typed key that draws the same numbers.
    np.testing.assert_array_equal(jax.random.normal(restored["key"], (3,)),
                                  jax.random.normal(s["key"], (3,)))


def test_file_is_plain_npz_with_json_metadata(tmp_path):
    path = checkpoint.save(str(tmp_path), 1, state(), {"config": {"cell": "lstm"}})
    with np.load(path, allow_pickle=False) as z:  # loads without pickle
        meta = json.loads(z["__meta__"].tobytes())
    assert meta["format"] == "jrnn-checkpoint" and meta["version"] == 1
    assert meta["metadata"]["config"] == {"cell": "lstm"}


def test_keeps_the_last_n_and_leaves_no_temporary_files(tmp_path):
    for step in range(1, 6):
        checkpoint.save(str(tmp_path), step, state(), keep=2)
    assert checkpoint.list_steps(str(tmp_path)) == [4, 5]
    assert sorted(os.listdir(tmp_path)) == ["step_000000004.npz", "step_000000005.npz"]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, damage):
    good = state()
    checkpoint.save(str(tmp_path), 1, good)
    newest = checkpoint.save(str(tmp_path), 2, jax.tree.map(lambda a: a, good))
    data = open(newest, "rb").read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one flipped byte inside an array: its SHA-256 no longer matches
        i = data.index(b"\x93NUMPY") + 130  # past the 128-byte .npy header
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    open(newest, "wb").write(data)
    with pytest.raises(checkpoint.CheckpointError, match="step_000000002.npz"):
        checkpoint.restore(newest, state())
    with pytest.warns(RuntimeWarning, match="step_000000002.npz"):
        restored, meta = checkpoint.restore_latest(str(tmp_path), state())
    assert meta["step"] == 1
    assert_same(restored, good)
    assert os.path.exists(newest)  # left for inspection, not deleted


def test_checkpoint_of_another_model_is_refused_naming_the_leaf(tmp_path):
    path = checkpoint.save(str(tmp_path), 1, state())
    other = state()
    other["params"] = tagger.init(jax.random.key(0), "lstm", 3, 6, 5, num_layers=2,
                                  dtype=jnp.float32)
    other["opt_state"] = jrnn.train.adam(1e-3).init(other["params"])
    with pytest.raises(checkpoint.CheckpointError, match=r"step_000000001.npz.*shape"):
        checkpoint.restore(path, other)


def test_unknown_format_version_is_refused(tmp_path):
    path = checkpoint.save(str(tmp_path), 1, {"w": jnp.ones(2)})
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["version"] = 99
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="version 99"):
        checkpoint.restore(path, {"w": jnp.ones(2)})


def test_non_array_leaves_are_refused(tmp_path):
    with pytest.raises(TypeError, match="'w'"):
        checkpoint.save(str(tmp_path), 1, {"w": object()})
    assert checkpoint.list_steps(str(tmp_path)) == []


# A tiny char-LM run, in a subprocess so that SIGKILL is real. With KILL_AT set,
# the process kills itself with SIGKILL right after that chunk, between checkpoints.
RUN = textwrap.dedent("""
    import json, os, signal, sys
    from jrnn import charlm
    kill_at = int(os.environ.get("KILL_AT", "0"))
    def on_chunk(step, state):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    config = charlm.Config(max_chars=20000, cell=sys.argv[2], hidden=12, seq=8, batch=4,
                           steps=24, checkpoint_every=5, keep=2, checkpoint_dir=sys.argv[1],
                           **json.loads(sys.argv[3]))
    charlm.run(config, resume=True, progress=False, on_chunk=on_chunk, log=lambda s: None)
""")


def run_lm(directory, cell, options, kill_at=0):
    env = {**os.environ, "KILL_AT": str(kill_at), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", RUN, str(directory), cell, json.dumps(options)],
                          env=env, capture_output=True, text=True, timeout=300)


# Every kind of regularisation: masks drawn afresh at every step must be drawn again,
# identically, after the resume.
REGULARISED = dict(layers=2, dropout=0.2, input_dropout=0.1, recurrent_dropout=0.2,
                   weight_drop=0.2, zoneout=0.1, zoneout_cell=0.05)


@pytest.mark.parametrize("cell,options", [("gru", {}), ("lstm", REGULARISED)],
                         ids=["gru", "lstm-regularised"])
def test_killed_run_resumes_bit_identical(tmp_path, cell, options):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_lm(whole, cell, options).returncode == 0
    crash = run_lm(killed, cell, options, kill_at=13)
    assert crash.returncode == -signal.SIGKILL
    assert checkpoint.list_steps(str(killed)) == [5, 10]
    resumed = run_lm(killed, cell, options)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (np.load(str(d / "step_000000024.npz")) for d in (whole, killed))
    names = [k for k in a.files if k != "__meta__"]
    assert any(k.startswith("params/") for k in names) and any("opt_state" in k for k in names)
    for k in names:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    meta_a, meta_b = (json.loads(z["__meta__"].tobytes())["metadata"] for z in (a, b))
    assert meta_a["losses"] == meta_b["losses"] and meta_a["position"] == meta_b["position"]


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", b"\x80\x02cos\nsystem\n"])
def test_a_file_that_is_not_a_checkpoint_is_called_so(tmp_path, content):
    """Not NumPy's message about pickled data: the file is named and called what it is."""
    path = tmp_path / "step_000000001.npz"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CorruptCheckpoint,
                       match=r"step_000000001\.npz: not a jrnn checkpoint \(not an \.npz archive\)"):
        checkpoint.restore(str(path), state())
    with pytest.warns(RuntimeWarning, match="not a jrnn checkpoint"):
        assert checkpoint.latest(str(tmp_path)) is None
