"""The character-level language model run: training with checkpoints, exact resume, sampling.

The recipe of Karpathy's min-char-rnn (2015) at a useful scale. A recurrent
network (any cell, any depth) reads one-hot characters and predicts the next
one; a long text is cut into ``batch`` parallel streams and trained by
truncated BPTT in chunks of ``seq`` characters, the state carried from chunk
to chunk (:func:`jrnn.train.make_tbptt_step`). With no ``text`` the corpus is
the Python standard library's own source, so nothing is downloaded.

Everything a run needs to continue is checkpointed (:mod:`jrnn.checkpoint`):
parameters, optimizer state, the carried state, the sampling key, the step,
the position in the text, the loss history and the configuration. Training
is deterministic, so a run killed at any moment and resumed from its last
checkpoint ends with the same parameters, bit for bit on a CPU, as one never
interrupted. A step whose loss or gradients are not finite changes nothing;
training stops there with the step named, and the checkpoints already written
stay as they were.

A time limit (``Config.time_limit``, ``jrnn train --time-limit``) stops training
after that many seconds of training (wall-clock, compilation included), counted
over every process of the run: a checkpoint records the seconds spent up to it,
and a resumed run goes on counting from there. The limit only decides *where* a
run stops, never what a step computes (the learning-rate schedule still spans
``steps``), so every step of a time-limited, interrupted and resumed run has the
parameters of the same step of an uninterrupted run, bit for bit; the step it
stops at depends on the machine's speed. On stopping it writes a checkpoint of
that step; resuming it with a larger limit continues the same schedule.

Regularisation (:mod:`jrnn.dropout`: ``Config.dropout``, ``input_dropout``,
``recurrent_dropout``, ``weight_drop``, ``zoneout``, ``zoneout_cell``) draws
fresh masks for every chunk from :func:`noise_key` (the seed and the step
alone), so it keeps the bit-for-bit resume; validation and sampling run in
evaluation mode (no noise, zoneout as its expectation).

``scripts/char_lm.py`` and ``jrnn train`` / ``jrnn sample`` are front ends to
this module; ``scripts/regularisation.py`` compares a plain and a regularised run.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
import warnings
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import cells, checkpoint, diagnostics, layers, parallel, train as training
from jrnn.dropout import Dropout, check_cell
from jrnn.data import CharVocab, stdlib_source, streams, unigram_entropy
from jrnn.models import tagger

__all__ = ["Config", "Result", "NonFiniteError", "CorpusError", "RunFolderError", "run", "load",
           "generate", "evaluate", "noise_key", "saved_config", "corpus", "read_text",
           "check_prompt", "default_prompt", "LOG_NAME"]

LOG_NAME = "train_log.jsonl"   # one JSON object per step, beside the checkpoints
VALID_SHARE = 0.05             # the end of the text, held out for the validation loss
# What a run writes into its folder besides step_*.npz: a new run refuses a folder holding any.
RUN_FILES = (LOG_NAME, "loss.png", "gradient_flow.png")


@dataclasses.dataclass(frozen=True)
class Config:
    """A char-LM run. Defaults: the README's demo (about 2-3 minutes on 2 CPU cores)."""

    text: Optional[str] = None       # a UTF-8 file; None: the stdlib source
    max_chars: int = 2_000_000       # characters of the default corpus
    cell: str = "elman"
    hidden: int = 512
    layers: int = 1
    heads: int = 1                   # block-diagonal recurrent matrix (1: dense)
    proj_size: int = 0               # LSTM projection P < hidden (0: none)
    seq: int = 64                    # truncated-BPTT chunk length
    batch: int = 32                  # parallel streams
    steps: int = 6000                # training chunks
    lr: float = 2e-3                 # peak Adam learning rate (cosine decay to a tenth)
    clip: float = 5.0                # global-norm gradient clip
    seed: int = 0
    backward: str = "manual"         # or "autodiff"
    kernel: str = "auto"             # or "native": the losses on jrnn.native's C++ loops (CPU)
    devices: int = 1                 # data-parallel over this many devices
    checkpoint_dir: Optional[str] = None
    checkpoint_every: int = 500
    keep: int = 3                    # checkpoints kept
    time_limit: Optional[float] = None  # stop after this many training seconds (None: never)
    # Regularisation (jrnn.dropout), each a probability in [0, 1); 0 turns it off.
    dropout: float = 0.0             # between stacked layers (PyTorch's dropout=)
    input_dropout: float = 0.0       # one mask per stream on each layer's input
    recurrent_dropout: float = 0.0   # one mask per stream on h_{t-1} before W
    weight_drop: float = 0.0         # DropConnect on W, one mask per chunk
    zoneout: float = 0.0             # every unit of h keeps its value with this probability
    zoneout_cell: Optional[float] = None  # the same for the LSTM's c (None: as zoneout)

    REGULARISATION = {"dropout": "between", "input_dropout": "input",
                      "recurrent_dropout": "recurrent", "weight_drop": "weight",
                      "zoneout": "zoneout", "zoneout_cell": "zoneout_cell"}

    def regularisation(self) -> Optional[Dropout]:
        """The run's :class:`jrnn.dropout.Dropout`, or None when every option is off."""
        if not any(getattr(self, name) for name in self.REGULARISATION):
            return None
        return Dropout(**{field: getattr(self, name)
                          for name, field in self.REGULARISATION.items()})

    def __post_init__(self):
        if self.cell not in cells.layer_names():
            raise ValueError(f"cell: expected one of {cells.layer_names()}, got {self.cell!r}")
        if self.backward not in ("manual", "autodiff"):
            raise ValueError(f"backward: expected 'manual' or 'autodiff', got {self.backward!r}")
        for name in ("hidden", "layers", "seq", "batch", "steps", "checkpoint_every", "keep",
                     "devices", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        if self.time_limit is not None and not (
                isinstance(self.time_limit, (int, float)) and not isinstance(self.time_limit, bool)
                and math.isfinite(self.time_limit) and self.time_limit > 0):
            raise ValueError(f"time_limit: expected a finite number of seconds > 0 or None, "
                             f"got {self.time_limit!r}")
        if not self.lr > 0 or not self.clip > 0:
            raise ValueError(f"lr, clip: expected positive numbers, got {self.lr}, {self.clip}")
        for name in self.REGULARISATION:
            p = getattr(self, name)
            if not (p is None and name == "zoneout_cell") and not (
                    isinstance(p, (int, float)) and 0 <= p < 1):
                raise ValueError(f"{name}: expected a probability in [0, 1), got {p!r}")
        if self.dropout and self.layers == 1:
            raise ValueError("dropout: acts between stacked layers (not after the last), so "
                             "with one layer it would do nothing; stack two or more layers, "
                             "or use input or recurrent dropout, weight drop or zoneout")
        for name, field in self.REGULARISATION.items():  # what the cell cannot take
            if getattr(self, name):
                try:
                    check_cell(Dropout(**{field: getattr(self, name)}), cells.get(self.cell))
                except ValueError as e:
                    raise ValueError(f"{name}: {str(e).partition(': ')[2]}") from None
        if self.zoneout_cell is not None and cells.get(self.cell).carry_size < 2:
            raise ValueError(f"zoneout_cell: zones out the LSTM's cell state c, and cell "
                             f"{self.cell!r} has none; use zoneout")
        if self.kernel not in ("auto", "native"):
            raise ValueError(f"kernel: expected 'auto' or 'native', got {self.kernel!r}")

    def check_trainable(self) -> None:
        """Raises ValueError where this machine cannot train the run as configured: with
        ``kernel="native"``, a model or a machine the native path cannot run. Not part of
        the construction, so that a checkpoint's configuration loads (to sample, say) on
        any machine."""
        if self.kernel == "native":
            reason = (f"runs on one device, this run has devices={self.devices}"
                      if self.devices > 1 else _native_refusal(self))
            if reason:
                raise ValueError(f"kernel: 'native' {reason}; use 'auto'")

    # What must match for a checkpoint to be resumed by this configuration. The time limit
    # is not among them: it decides where a run stops, never what a step computes.
    MODEL_FIELDS = ("text", "max_chars", "cell", "hidden", "layers", "seq", "batch", "steps",
                    "lr", "clip", "seed", "backward", "kernel", "dropout", "input_dropout",
                    "recurrent_dropout", "weight_drop", "zoneout", "zoneout_cell")


class Result(NamedTuple):
    params: object
    vocab: CharVocab
    losses: list            # training loss (nats/char) of every chunk so far
    val_loss: float         # nats/char on the held-out 5%
    baseline: float         # unigram entropy of the training text, nats/char
    seconds: float          # training time of this process
    key: object             # the run's sampling key (checkpointed with it)
    train_seconds: float = 0.0   # training time of the whole run, every process (resumes) summed
    time_limited: bool = False   # stopped by Config.time_limit before Config.steps


class NonFiniteError(RuntimeError):
    """Training met a NaN or Inf; the message names the step."""


class CorpusError(ValueError):
    """The corpus cannot be read, is not text, or is too short; the message names the file."""


class RunFolderError(ValueError):
    """A new run was pointed at a folder that holds another run's files."""


def read_text(path: str) -> str:
    """The contents of a UTF-8 text file, or :class:`CorpusError` saying what is wrong with it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CorpusError(f"text: {path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"text: {path} is a folder; give a UTF-8 text file") from None
    except OSError as e:
        raise CorpusError(f"text: {path} cannot be read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"text: {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                          f"offset {e.start:,}); give a UTF-8 text file") from None
    if "\0" in text:
        raise CorpusError(f"text: {path} looks binary (it holds NUL bytes); give a UTF-8 "
                          f"text file")
    if not text:
        raise CorpusError(f"text: {path} is empty")
    return text


def corpus(config: Config) -> tuple[str, str]:
    """(text, description) of the run's corpus."""
    if config.text:
        return read_text(config.text), config.text
    return stdlib_source(config.max_chars), "Python standard library source"


def minimum_chars(batch: int, seq: int) -> int:
    """The shortest text that gives ``batch`` training streams of ``seq + 1`` characters and
    a validation share of 2 characters per stream."""
    n = math.ceil(max(batch * (seq + 1) / (1 - VALID_SHARE), 2 * batch / VALID_SHARE)) - 1
    while _split(n) < batch * (seq + 1) or n - _split(n) < 2 * batch:
        n += 1
    return n


def _split(n: int) -> int:
    return int((1 - VALID_SHARE) * n)


def default_prompt(vocab: CharVocab) -> str:
    """What sampling continues when no prompt is given: "def " if the corpus has those
    characters (the default corpus does), else a newline, else its first character."""
    if set("def ") <= set(vocab.chars):
        return "def "
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


def check_prompt(vocab: CharVocab, prompt: str) -> np.ndarray:
    """The prompt's token ids; ValueError if it is empty or uses characters the corpus lacks."""
    if not prompt:
        raise ValueError("prompt: expected at least one character")
    try:
        return vocab.encode(prompt, "prompt")
    except ValueError as e:
        raise ValueError(f"{e}: the model knows only its corpus's characters") from None


def _optimizer(config: Config):
    import optax
    schedule = optax.cosine_decay_schedule(config.lr, config.steps, alpha=0.1)
    return training.adam(schedule, config.clip)


def _initial(config: Config, vocab_size: int):
    """The state at step 0: {"params", "opt_state", "h", "key"}."""
    key_init, key_sample = jax.random.split(jax.random.key(config.seed))
    params = tagger.init(key_init, config.cell, vocab_size, config.hidden, vocab_size,
                         num_layers=config.layers, heads=config.heads,
                         proj_size=config.proj_size)
    return {"params": params, "opt_state": _optimizer(config).init(params),
            "h": layers.zero_states(params.rnn, (config.batch,)), "key": key_sample}


def _loss_and_state(backward: str, vocab_size: int, dropout: Optional[Dropout] = None,
                    kernel: str = "auto"):
    """The chunk loss; with ``dropout``, a training loss that takes each chunk's ``key``."""
    def loss_and_state(p, xs, ys, h0, key=None):
        one_hot = jax.nn.one_hot(xs, vocab_size, dtype=p.head.V.dtype)
        regularise = {} if dropout is None else dict(dropout=dropout, key=key, training=True)
        return tagger.loss_and_state(p, one_hot, ys, h0, reduction="mean", backward=backward,
                                     kernel=kernel, **regularise)
    return loss_and_state


def _native_refusal(config: Config) -> Optional[str]:
    """Why the training loss cannot run with ``kernel="native"`` ("cannot run this layer:
    ..."), or None: the loss traced (not run) at this model's sizes on two characters, so
    that the reason is the one the layers or the head give."""
    dropout = config.regularisation()
    params = jax.eval_shape(lambda: tagger.init(
        jax.random.key(0), config.cell, 2, config.hidden, 2, num_layers=config.layers,
        heads=config.heads, proj_size=config.proj_size))
    h0 = jax.eval_shape(lambda p: layers.zero_states(p.rnn, (1,)), params)
    ids = jax.ShapeDtypeStruct((2, 1), jnp.int32)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype) if dropout else None
    loss = _loss_and_state(config.backward, 2, dropout, "native")
    try:
        jax.eval_shape(loss, params, ids, ids, h0, key)
    except ValueError as e:  # "kernel='native' <reason>; use kernel='scan' or 'auto'"
        reason = str(e).split("; use kernel=")[0]
        return reason.removeprefix("kernel='native' ") if reason.startswith(
            "kernel='native' ") else f"cannot train this model: {reason}"
    return None


def noise_key(seed: int, step: int):
    """The PRNG key of training step ``step`` + 1's dropout masks: a function of the seed and
    the step alone, so that a resumed run draws the masks an uninterrupted one would."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)


def _check_resumable(path: str, saved: dict, config: Config, vocab: CharVocab) -> None:
    defaults = Config()  # a checkpoint written before a field existed ran with its default
    for name in Config.MODEL_FIELDS:
        was = saved["config"].get(name, getattr(defaults, name))
        if was != getattr(config, name):
            raise checkpoint.CheckpointError(
                f"{path}: saved with {name}={was!r}, this run has "
                f"{name}={getattr(config, name)!r}; resume with the same settings or start a "
                f"new checkpoint directory")
    if saved["vocab"] != vocab.chars:
        raise checkpoint.CheckpointError(f"{path}: its vocabulary differs from this corpus's")


def _claim_folder(directory: str, resume: bool, config: Config, vocab: CharVocab,
                  log) -> Optional[tuple[str, dict]]:
    """Checks the run folder before any work; returns the checkpoint to resume from, if any.

    A new run refuses a folder holding another run's files (never mixes two runs).
    A resume refuses a folder whose checkpoints are all damaged (never overwrites
    them); damaged files beside a good one are renamed ``*.damaged`` so that no later
    save or clean-up can overwrite or delete them.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise RunFolderError(f"{directory} is a file; --checkpoint-dir takes a folder")
    steps = checkpoint.list_steps(directory)
    if not resume:
        present = [n for n in RUN_FILES if os.path.exists(os.path.join(directory, n))]
        if steps or present:
            what = (f"checkpoints of steps {', '.join(map(str, steps))}" if steps else
                    ", ".join(present))
            raise RunFolderError(f"{directory} already holds a run ({what}): add --resume to "
                                 f"continue it, or choose another --checkpoint-dir")
        return None
    if not steps:
        log(f"resume: no checkpoint in {directory}: starting at step 0")
        return None
    good, damaged = [], []
    for step in steps:
        path = checkpoint.path_for(directory, step)
        try:
            good.append((path, checkpoint.metadata(path)))
        except checkpoint.CorruptCheckpoint as e:
            damaged.append((path, e))
    if not good:
        names = ", ".join(os.path.basename(p) for p, _ in damaged)
        raise checkpoint.CheckpointError(
            f"resume: no checkpoint in {directory} can be read ({names}: {damaged[-1][1]}"
            f"{'...' if len(damaged) > 1 else ''}); nothing was changed. Move them away to "
            f"start again there, or choose another --checkpoint-dir")
    path, meta = good[-1]
    _check_resumable(path, meta, config, vocab)  # before anything is restored or moved
    for bad, error in damaged:
        os.replace(bad, bad + ".damaged")
        warnings.warn(f"{error}; kept as {os.path.basename(bad)}.damaged", RuntimeWarning,
                      stacklevel=3)
    return path, meta


def _restart_log(directory: str, step: int):
    """Opens the run's JSON-lines log for appending, keeping only the lines of steps <= step
    (those after the checkpoint resumed from are run again)."""
    path = os.path.join(directory, LOG_NAME)
    kept = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line.rstrip("\n") + "\n")
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut short by a kill
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    return open(path, "a", encoding="utf-8", buffering=1)


def run(config: Config, *, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] = print,
        on_chunk: Optional[Callable[[int, dict], None]] = None,
        prompt: Optional[str] = None) -> Result:
    """Trains (or resumes) a char-LM run; returns the trained parameters and figures.

    Args:
      config: the run.
      resume: continue from the newest good checkpoint in
        ``config.checkpoint_dir`` (a fresh start if there is none).
      progress: show a tqdm bar.
      log: where to print.
      on_chunk: called as ``on_chunk(step, state)`` after every chunk (used by
        tests and diagnostics; ``state`` holds params, opt_state, h, key).
      prompt: text that will be sampled after training; checked against the
        corpus's vocabulary before the first step, so a bad one wastes no run.

    With ``config.checkpoint_dir``, the folder gets the checkpoints, ``loss.png``,
    ``gradient_flow.png`` and :data:`LOG_NAME` (one JSON object per step: step,
    loss, seconds, characters per second). A new run refuses a folder that
    holds another run's files; ``resume`` continues the run there.

    Raises:
      NonFiniteError: a step's loss or gradients were not finite. Its update
        was skipped and nothing was saved after it.
      CorpusError: the text cannot be read or is too short.
      RunFolderError: a new run was given a folder that holds another run.
      CheckpointError: ``resume`` met a checkpoint of another configuration, or
        found checkpoints of which none can be read (they are left untouched).
      ValueError: ``prompt`` uses characters the corpus lacks; too few devices; a
        ``kernel`` this machine or model cannot run (:meth:`Config.check_trainable`).
    """
    config.check_trainable()
    text, source = corpus(config)
    vocab = CharVocab.from_text(text)
    if prompt is not None:
        check_prompt(vocab, prompt)
    ids = vocab.encode(text)
    V, T = vocab.size, config.seq
    need = minimum_chars(config.batch, T)
    if len(ids) < need:
        raise CorpusError(
            f"text: {source} has {len(ids):,} characters, too few for --batch {config.batch} "
            f"streams of --seq {T}: training needs {config.batch * (T + 1):,} and the validation "
            f"share (the last {VALID_SHARE:.0%}) takes the rest, so at least {need:,}; give a "
            f"longer text or a smaller --batch or --seq")
    split = _split(len(ids))
    train_ids, valid_ids = streams(ids[:split], config.batch), streams(ids[split:], config.batch)
    if config.devices > 1 and len(jax.devices()) < config.devices:
        raise ValueError(f"devices: asked for {config.devices}, this process sees "
                         f"{len(jax.devices())}")
    found = None
    if config.checkpoint_dir:
        found = _claim_folder(config.checkpoint_dir, resume, config, vocab, log)
    baseline = unigram_entropy(ids[:split], V)
    log(f"corpus: {source}, {len(ids):,} characters, vocabulary {V}; "
        f"{len(ids) - split:,} held out")
    log(f"model: {config.cell}, {config.layers} layer(s), H={config.hidden}, {config.batch} "
        f"streams x {T} steps per chunk, backward={config.backward}, kernel={config.kernel}, "
        f"devices={config.devices} x {jax.devices()[0].platform}")
    if config.regularisation() is not None:
        log("regularisation: " + ", ".join(f"{name}={getattr(config, name)}" for name in
                                           Config.REGULARISATION
                                           if getattr(config, name) is not None))

    state = _initial(config, V)
    # Gradient flow over a fixed window of 4 chunks, drawn beside the checkpoints, at step 0
    # (the initial parameters, the same whether or not this process resumes) and at the end.
    flow_ids = train_ids[:min(len(train_ids) - 1, 4 * T) + 1]
    plots_wanted = config.checkpoint_dir is not None
    flow_start = _flow(state["params"], flow_ids, V) if plots_wanted else None
    step, position, losses, spent = 0, 0, [], 0.0
    if found is not None:
        path, meta = found
        state, meta = checkpoint.restore(path, state)
        step, position, losses = meta["step"], meta["position"], meta["losses"]
        spent = float(meta.get("train_seconds", 0.0))  # older checkpoints did not record it
        log(f"resumed from {path} (step {step} of {config.steps}, {spent:.0f} s of training)")
    train_log = None
    if config.checkpoint_dir:
        os.makedirs(config.checkpoint_dir, exist_ok=True)
        train_log = _restart_log(config.checkpoint_dir, step)
        log(f"writing to {config.checkpoint_dir}: a checkpoint every {config.checkpoint_every} "
            f"steps (the last {config.keep} kept), {LOG_NAME} (every step), plots at the end")
    else:
        log("no checkpoint folder: nothing is saved")

    mesh = None
    if config.devices > 1:
        mesh = parallel.batch_mesh(jax.devices()[:config.devices])
        state = {**parallel.replicate({k: v for k, v in state.items() if k != "h"}, mesh),
                 "h": parallel.shard_batch(state["h"], mesh, axis=0)}

    regularisation = config.regularisation()
    train_step = training.make_tbptt_step(_loss_and_state(config.backward, V, regularisation,
                                                          config.kernel),
                                          _optimizer(config))
    step_key = ((lambda step: None) if regularisation is None else
                functools.partial(noise_key, config.seed))
    zeros = layers.zero_states(state["params"].rnn, (config.batch,))
    if mesh is not None:
        zeros = parallel.shard_batch(zeros, mesh, axis=0)

    saved_step = step

    def save():
        nonlocal saved_step
        if config.checkpoint_dir:
            checkpoint.save(config.checkpoint_dir, step, state,
                            {"config": dataclasses.asdict(config), "vocab": vocab.chars,
                             "position": position, "losses": losses,
                             "train_seconds": spent + time.perf_counter() - t0},
                            keep=config.keep)
            saved_step = step

    def out_of_time() -> bool:
        return (config.time_limit is not None
                and spent + time.perf_counter() - t0 >= config.time_limit)

    from tqdm import tqdm
    bar = tqdm(total=config.steps, initial=step, desc="training", unit="chunk",
               file=sys.stdout, mininterval=1.0, disable=not progress)
    t0, smooth = time.perf_counter(), None
    t_last, time_limited = t0, False
    try:
        while step < config.steps:
            if step > 0 and out_of_time():  # a new run always takes its first step
                time_limited = True
                break
            if position + T + 1 > len(train_ids):  # end of the text: the streams start again
                position, state["h"] = 0, zeros
            xs = train_ids[position:position + T]
            ys = train_ids[position + 1:position + T + 1]
            if mesh is not None:
                xs, ys = parallel.shard_batch((xs, ys), mesh, axis=1)
            params, opt_state, h, metrics = train_step(state["params"], state["opt_state"],
                                                       state["h"], xs, ys, step_key(step))
            loss = float(metrics.loss)
            if not bool(metrics.finite):
                bar.close()
                kept = (checkpoint.list_steps(config.checkpoint_dir) if config.checkpoint_dir
                        else [])
                intact = f"; the last checkpoint, step {kept[-1]}, is intact" if kept else ""
                raise NonFiniteError(f"non-finite loss or gradient at step {step + 1} (loss "
                                     f"{loss}); the update was skipped and training stopped"
                                     f"{intact}. Try a lower lr or clip.")
            state = {**state, "params": params, "opt_state": opt_state, "h": h}
            step, position = step + 1, position + T
            losses.append(loss)
            now = time.perf_counter()
            if train_log is not None:
                train_log.write(json.dumps(
                    {"step": step, "loss": loss, "seconds": round(now - t_last, 6),
                     "chars_per_second": round(T * config.batch / max(now - t_last, 1e-9), 1),
                     "elapsed": round(now - t0, 3)}) + "\n")
            t_last = now
            if on_chunk is not None:
                on_chunk(step, state)
            smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.3f}", refresh=False)
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
        if time_limited and saved_step != step:
            save()
    finally:
        if train_log is not None:
            train_log.close()
    bar.close()
    seconds = time.perf_counter() - t0
    if time_limited:
        log(f"time limit: {config.time_limit:g} s of training reached at step {step} of "
            f"{config.steps}")
    if plots_wanted:
        _write_loss_plot(config.checkpoint_dir, losses, baseline, log)
        _write_flow_plot(config.checkpoint_dir, flow_start,
                         _flow(state["params"], flow_ids, V), step, log)
        kept = checkpoint.list_steps(config.checkpoint_dir)
        log(f"checkpoints: {checkpoint.path_for(config.checkpoint_dir, kept[-1])} (steps "
            f"{', '.join(map(str, kept))} kept); training log: "
            f"{os.path.join(config.checkpoint_dir, LOG_NAME)}")

    val_loss = evaluate(state["params"], valid_ids, V, dropout=config.regularisation(),
                        kernel=config.kernel)
    return Result(jax.device_get(state["params"]), vocab, losses, val_loss, baseline, seconds,
                  state["key"], spent + seconds, time_limited)


def evaluate(params, valid_ids: np.ndarray, vocab_size: int, chunk: int = 512,
             dropout: Optional[Dropout] = None, kernel: str = "auto") -> float:
    """Mean NLL (nats/char) over time-major streams ``valid_ids`` (N, B), state carried.

    Deterministic: a regularised model (``dropout``) runs in evaluation mode, where
    only zoneout acts, as its expectation. ``kernel``: as :func:`jrnn.models.tagger.loss`'s."""
    score = _evaluator()
    total, h = 0.0, layers.zero_states(params.rnn, (valid_ids.shape[1],))
    for xs, ys in training.chunks(valid_ids[:-1], valid_ids[1:], chunk):
        J, h = score(params, jax.nn.one_hot(xs, vocab_size, dtype=params.head.V.dtype), ys, h,
                     dropout=dropout, kernel=kernel)
        total += float(J)
    return total / ((len(valid_ids) - 1) * valid_ids.shape[1])


@functools.lru_cache(maxsize=None)
def _evaluator():
    return jax.jit(functools.partial(tagger.loss_and_state, reduction="sum"),
                   static_argnames=("dropout", "kernel"))


def _write_loss_plot(directory: str, losses, baseline: float, log) -> None:
    try:
        from jrnn import plots
        path = plots.loss_curve(losses, os.path.join(directory, "loss.png"), baseline=baseline)
        log(f"loss curve: {path}")
    except ImportError:
        log("loss curve not drawn: matplotlib is not installed (pip install 'jrnn[examples]')")


def _flow(params, ids, vocab_size: int):
    """Gradient flow of the loss on one window of the text, from a zero state."""
    params = jax.device_get(params)
    xs, ys = ids[:-1], ids[1:]
    h0 = layers.zero_states(params.rnn, (ids.shape[1],))
    loss = lambda p: _loss_and_state("manual", vocab_size)(p, xs, ys, h0)[0]
    return diagnostics.gradient_flow(loss, params)[1]


def _write_flow_plot(directory: str, start, end, step: int, log) -> None:
    flows, labels = [], []
    for when, fs in (("step 0", start), (f"step {step}", end)):
        for f in fs or []:
            flows.append(f)
            labels.append(f"{when}, {f.label}")
    d_first, d_last = end[0].dh_norm[0], end[0].dh_norm[-1]
    log(f"gradient flow at step {step}, layer 0: |dJ/dh_1| / |dJ/dh_T| = {d_first / d_last:.2e} "
        f"over T = {len(end[0].dh_norm)}")
    try:
        from jrnn import plots
        path = plots.gradient_flow(flows, os.path.join(directory, "gradient_flow.png"),
                                   title="gradient flow over one window of the text "
                                         "(mean loss per character)", labels=labels)
        log(f"gradient flow: {path}")
    except ImportError:
        log("gradient flow not drawn: matplotlib is not installed (pip install 'jrnn[examples]')")


def load(checkpoint_dir: str) -> tuple[object, CharVocab, dict]:
    """Parameters, vocabulary and metadata of the newest good checkpoint of a run."""
    if not os.path.isdir(checkpoint_dir):
        raise checkpoint.CheckpointError(f"{checkpoint_dir}: no such folder")
    steps = checkpoint.list_steps(checkpoint_dir)
    if not steps:
        raise checkpoint.CheckpointError(f"{checkpoint_dir}: no checkpoints (step_*.npz) here")
    found = checkpoint.latest(checkpoint_dir)
    if found is None:
        names = ", ".join(os.path.basename(checkpoint.path_for(checkpoint_dir, s)) for s in steps)
        raise checkpoint.CheckpointError(f"{checkpoint_dir}: no checkpoint can be read ({names})")
    path, meta = found
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("vocab"), str):
        raise checkpoint.CheckpointError(f"{path}: a jrnn checkpoint, but not of a `jrnn train` "
                                         f"run (no configuration or vocabulary in it)")
    # The configuration lies in the file: it builds the template to fill.
    config = saved_config(meta)
    state, meta = checkpoint.restore(path, _initial(config, len(meta["vocab"])))
    return state["params"], CharVocab(meta["vocab"]), meta


def saved_config(meta: dict) -> Config:
    """The :class:`Config` a checkpoint's metadata holds (fields it lacks: the defaults)."""
    fields = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in meta["config"].items() if k in fields})


def generate(params, vocab: CharVocab, key, prompt: str, length: int,
             temperature: float = 0.7, dropout: Optional[Dropout] = None) -> str:
    """``length`` characters sampled after ``prompt`` (which must use the vocabulary).

    ``dropout``: the run's regularisation (:meth:`Config.regularisation`); sampling
    runs in evaluation mode, so only zoneout acts, as its expectation."""
    tokens = tagger.sample(params, key, jnp.asarray(check_prompt(vocab, prompt)), length,
                           temperature=temperature, dropout=dropout)
    return vocab.decode(tokens)


def summary(result: Result, config: Config) -> str:
    b, v = result.baseline, result.val_loss
    stopped = (f", stopped by the time limit ({config.time_limit:g} s of training; the "
               f"schedule has {config.steps})" if result.time_limited else "")
    return (f"trained to step {len(result.losses)} ({len(result.losses) * config.seq * config.batch:,}"
            f" characters); this process {result.seconds:.0f} s{stopped}\n"
            f"unigram baseline : {b:.3f} nats/char ({b / math.log(2):.2f} bits)\n"
            f"validation loss  : {v:.3f} nats/char ({v / math.log(2):.2f} bits), "
            f"{v / b:.0%} of the baseline")
