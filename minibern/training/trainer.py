"""The training loop: seeded minibatches, weight updates, validation, checkpoints, hooks.

One run = one :class:`TrainConfig` + a seed. Three independent host random streams are derived
from the seed (:func:`minibern.backend.spawn_rngs`): weight initialisation, batch order, and one
reserved for the hooks (:attr:`Trainer.hook_rng`: the Bernoulli gates draw their masks from it),
so the same seed on the same backend repeats a run exactly, and a run resumed from a checkpoint
ends with the weights of an uninterrupted one.

Per step: gather a batch, ``forward``, softmax cross-entropy (L18)–(L19), ``backward``, every
hook's ``after_backward`` (weights not yet updated), optimiser step (O1)/(O2), then every hook's
``after_step``. Per epoch: validation error on the
fixed validation split, every hook's ``after_epoch``, history, checkpoint. The test set is
evaluated once, after the last epoch ("final epoch, not best").

Hooks are how a method plugs in without the loop knowing it (the Bernoulli gates,
:class:`minibern.bernoulli.hook.GateTrainer`: Δ estimates and the θ update in ``after_backward``,
θ snapshots at epoch ends). A hook's ``state_dict`` goes into the checkpoint, its ``metrics``
into metrics.json, and its ``kept_units`` into the size counts of :mod:`.summary`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minibern import backend as B
from minibern.kernels import blas
from minibern.kernels import threads as T
from minibern.losses import softmax_cross_entropy
from minibern.optim import SGD, Adam
from minibern.training import checkpoint as ckpt
from minibern.training.lock import run_lock
from minibern.training.meta import check_meta
from minibern.training.progress import Progress
from minibern.training.summary import summarize

np = B.host

OPTIMIZERS = ("adam", "sgd")

#: Checkpoint meta key of :attr:`Trainer.hook_rng`'s state. The name dates from when the trainer
#: drew the gate masks itself; it is kept so that checkpoints written before still resume.
HOOK_RNG_KEY = "gate_rng"


#: An epoch diverged when its mean training loss exceeds DIVERGENCE_FACTOR · ln C (C classes:
#: ln C is the loss of a network that guesses uniformly) and the loss of the run's first step
#: (the untrained network's, which a large --init-scale may put above the former).
DIVERGENCE_FACTOR = 10.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (the message names the epoch and step), or an epoch's
    mean loss passed the :data:`DIVERGENCE_FACTOR` bound."""


@dataclass
class TrainConfig:
    """Everything that determines a run (saved in the checkpoint and metrics.json)."""

    model: str = "lenet300"
    epochs: int = 10
    batch_size: int = 100
    seed: int = 0
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    width_mult: float = 1.0
    init: str = "he"
    init_scale: float = 1.0
    train_subset: int | None = None
    eval_batch_size: int = 1000

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field, its value and the fix."""
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            positive_int(name)
        if self.train_subset is not None:
            positive_int("train_subset")
        def finite(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return value
        for name in ("lr", "width_mult", "init_scale"):
            if finite(name) <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not 0 <= finite("momentum") < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}; e.g. 0.9")
        if finite("weight_decay") < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}; "
                             "e.g. 0 (off) or 5e-4")
        if self.lr_decay is not None and not (isinstance(self.lr_decay, (int, float))
                                              and math.isfinite(self.lr_decay) and self.lr_decay > 0):
            raise ValueError(f"lr_decay must be a positive number of epochs (or None), got "
                             f"{self.lr_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        return self


class Hook:
    """Called by :class:`Trainer`; override what you need. State goes into checkpoints."""

    def before_fit(self, trainer: "Trainer") -> None:
        """Called once when :meth:`Trainer.fit` starts (after any checkpoint is loaded)."""

    def after_backward(self, trainer: "Trainer") -> None:
        """Gradients of the batch are ready (``trainer.batch_images``/``batch_labels``);
        the weights are not yet updated."""

    def after_step(self, trainer: "Trainer") -> None:
        """The optimiser has updated the weights."""

    def after_epoch(self, trainer: "Trainer") -> None:
        """The epoch's validation error is in ``trainer.history``; sizes are counted after this."""

    def metrics(self) -> dict:
        """Entries this hook adds to metrics.json (JSON-able values)."""
        return {}

    def kept_units(self) -> dict:
        """``{layer name: units left on after that layer}`` in the deterministic network, for
        layers that switch units off without removing them (a gate's 1[θ ≥ ½]); see
        :func:`minibern.training.summary.summarize`."""
        return {}

    def state_dict(self) -> dict:
        """Host arrays and JSON-able values to checkpoint."""
        return {}

    def settings(self) -> dict:
        """``{section: {field: value}}``: settings a resumed run must share with its checkpoint
        (compared by :func:`resume_problems`)."""
        return {}

    def load_structure(self, state: dict) -> None:
        """Called with this hook's saved state *before* a checkpoint's weights are loaded, so
        the network can take the shapes they were saved with (e.g. units pruning removed)."""

    def load_state_dict(self, state: dict) -> None:
        """Called with this hook's saved state after the checkpoint's weights are loaded."""


def run_rngs(seed: int) -> list:
    """The run's three host streams: [weight init, batch order, hooks (the gate masks)]."""
    return B.spawn_rngs(seed, 3)


#: TrainConfig fields a resumed run may change: more epochs (the loop continues), and the
#: evaluation batch size (it changes no result).
RESUME_MAY_CHANGE = ("epochs", "eval_batch_size")


#: Settings a hook still records, at the value that turned their removed mode off, but no longer
#: offers: ``{(section, key): why a checkpoint with another value cannot resume}``, filled by
#: the hooks (:data:`minibern.bernoulli.config.RETIRED`).
RETIRED_SETTINGS: dict = {}


#: Checkpoint meta key of :func:`thread_counts`: the host's execution settings that fix a run's
#: bits besides its configuration.
THREADS_KEY = "threads"


def thread_counts() -> dict:
    """The thread counts that fix a run's numbers on the CPU: minibern's kernel threads
    (:mod:`minibern.kernels.threads`) and NumPy's BLAS threads (:mod:`minibern.kernels.blas`; None if unknown)."""
    return {"kernel_threads": T.get_threads(), "blas_threads": blas.get_threads()}


def _thread_problems(meta: dict, threads: dict) -> list[str]:
    """One line per thread count that differs from the checkpoint's (none if it predates the
    record: see :func:`resume_problems`)."""
    saved = meta.get(THREADS_KEY)
    if saved is None:
        return []
    fixes = {"kernel_threads": "--threads {} (or MINIBERN_THREADS={})",
             "blas_threads": "OMP_NUM_THREADS={} and OPENBLAS_NUM_THREADS={}"}
    return [f"{key.replace('_', ' ')}: {saved.get(key)!r} in the checkpoint, {value!r} now "
            f"(set {fixes[key].format(saved.get(key), saved.get(key))})"
            for key, value in threads.items() if saved.get(key) != value]


def _merged(hook_settings) -> dict:
    merged = {}
    for settings in hook_settings:
        merged.update(settings)
    return merged


def resume_problems(meta: dict, config: TrainConfig, hook_settings: list,
                    threads: dict | None = None) -> list[str]:
    """What stops a run with ``config`` and hooks' ``hook_settings`` (each a
    :meth:`Hook.settings` dict) from resuming the checkpoint whose JSON meta is ``meta``.

    Every TrainConfig field must be the checkpoint's but those in :data:`RESUME_MAY_CHANGE`;
    ``epochs`` may not fall below the epochs already trained; the hooks' settings (the Bernoulli
    gates and every gate setting) must match exactly, except that a setting the checkpoint
    predates (added to the code later) counts as off: it matches while it is off now (False,
    0 or None), which is how every new setting is introduced; likewise a TrainConfig field the
    checkpoint predates matches while it has its default. The thread counts (``threads``,
    default :func:`thread_counts` now) must be the checkpoint's, unless it predates their record
    (then they are unknown and accepted; :meth:`Trainer.load_checkpoint` says so in the log).
    Returns one line per difference, empty when the run may resume.
    """
    saved = meta["config"]
    defaults = asdict(TrainConfig())
    problems = [f"{key}: {saved[key]!r} in the checkpoint, {value!r} now" if key in saved else
                f"{key}: not recorded in the checkpoint (written before it existed), so only "
                f"its default {defaults[key]!r} may resume it, {value!r} now"
                for key, value in asdict(config).items()
                if key not in RESUME_MAY_CHANGE and saved.get(key, defaults[key]) != value]
    problems += _thread_problems(meta, thread_counts() if threads is None else threads)
    done = int(meta.get("epoch", 0))
    if config.epochs < done:
        problems.append(f"epochs: the checkpoint has trained {done} epochs, {config.epochs} "
                        f"asked for now (pass --epochs {done} or more)")
    before = meta.get("hook_settings")
    if before is None:  # checkpoints written before hook settings were recorded
        before = [{"gates": hook["config"]} for hook in meta.get("hooks", []) if "config" in hook]
    before, now = _merged(before), _merged(hook_settings)
    for section in sorted(set(before) | set(now)):
        if section not in now:
            problems.append(f"the checkpoint was trained with --{section}, this run is without")
        elif section not in before:
            problems.append(f"the checkpoint was trained without --{section}, this run is with")
        else:
            problems += [f"{section} {key}: {before[section].get(key)!r} in the checkpoint, "
                         f"{value!r} now{RETIRED_SETTINGS.get((section, key), '')}"
                         for key, value in now[section].items()
                         if before[section].get(key) != value
                         and not (key not in before[section] and not value)]
    return problems


def check_resume(path, meta: dict, config: TrainConfig, hook_settings: list) -> None:
    """Raise CheckpointError listing every :func:`resume_problems` of checkpoint ``path``
    (first :func:`~minibern.training.meta.check_meta`: a damaged meta names what is wrong)."""
    check_meta(path, meta)
    problems = resume_problems(meta, config, hook_settings)
    if problems:
        raise ckpt.CheckpointError(
            f"cannot resume {path}: its settings differ from this run's:\n  "
            + "\n  ".join(problems)
            + "\nresume with the checkpoint's settings (only --epochs may grow), or choose "
            "another --out for a new run; nothing was changed")


def _remedy(config: "TrainConfig", lr: float) -> str:
    """What to lower after a divergence: the learning rate, and the initial scale and weight
    decay when they are not at their defaults (either alone can make a run diverge)."""
    parts = [f"the learning rate (now {lr})"]
    if config.init_scale != TrainConfig.init_scale:
        parts.append(f"--init-scale (now {config.init_scale})")
    if config.weight_decay:
        parts.append(f"--weight-decay (now {config.weight_decay})")
    return "lower " + (" or ".join(parts) if len(parts) < 3
                       else ", ".join(parts[:-1]) + " or " + parts[-1])


#: The files of a run directory that a new run would overwrite (train.log is only appended to).
RUN_FILES = ("checkpoint.npz", "metrics.json", "history.npz", "model.npz")


def check_out_path(out) -> Path:
    """``out`` as a Path; ValueError if it is empty or an existing file."""
    if not str(out).strip():
        raise ValueError(f"--out {str(out)!r} names no run directory; give a folder for the run, "
                         "e.g. --out runs/lenet300")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose another --out")
    return out


def check_run_dir(out, resume: bool, config: TrainConfig, hook_settings: list) -> None:
    """Raise ValueError unless run directory ``out`` may receive this run, before anything is
    written: a new run needs a folder without :data:`RUN_FILES`; ``resume`` needs a
    ``checkpoint.npz`` whose settings match (:func:`check_resume`)."""
    out = check_out_path(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not resume:
        if found:
            raise ValueError(f"{out} already holds a run ({', '.join(found)}); pass --resume to "
                             "continue it, or choose another --out; nothing was changed")
        return
    if "checkpoint.npz" not in found:
        held = f" (it holds {', '.join(found)}, whose run cannot be continued)" if found else ""
        raise ValueError(f"--resume: {out} has no checkpoint.npz to resume from{held}; start a "
                         "new run without --resume in a new --out; nothing was changed")
    path = out / "checkpoint.npz"
    check_resume(path, ckpt.read_npz(path)[1], config, hook_settings)


def make_optimizer(config: TrainConfig):
    if config.optimizer == "adam":
        return Adam(lr=config.lr, weight_decay=config.weight_decay)
    return SGD(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


@dataclass
class Split:
    """One data split on the current backend: images (N, ...) and int64 labels (N,)."""

    images: object
    labels: object

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


def device_splits(data, input_shape, train_subset=None) -> dict:
    """Move the MNIST arrays to the current backend, shaped for a model's ``input_shape``."""
    def split(images, labels, limit=None):
        images = images.reshape((images.shape[0],) + tuple(input_shape))
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return Split(B.asarray(images), B.asarray(labels))

    if train_subset is not None and train_subset > data.train_images.shape[0]:
        raise ValueError(f"train_subset={train_subset} exceeds the {data.train_images.shape[0]} "
                         "training images; use a smaller subset or omit it")
    return {"train": split(data.train_images, data.train_labels, train_subset),
            "val": split(data.val_images, data.val_labels),
            "test": split(data.test_images, data.test_labels)}


@dataclass
class Trainer:
    """Runs :class:`TrainConfig` on ``net`` over ``splits`` (see :func:`device_splits`)."""

    net: object
    splits: dict
    config: TrainConfig
    hooks: list = field(default_factory=list)
    log: object = print
    progress_stream: object = None

    def __post_init__(self):
        self.config.validate()
        _, self.batch_rng, self.hook_rng = run_rngs(self.config.seed)
        self.optimizer = make_optimizer(self.config)
        self.epoch = 0          # epochs completed
        self.step = 0           # steps completed in the current epoch
        self.global_step = 0
        self.history = {"train_loss": [], "val_error": [], "epoch_seconds": [], "params": [],
                        "flops_per_example": []}
        self.start_summary = self.summary()  # the network before any pruning
        self.first_loss = self.n_classes = None  # the run's first step (divergence bound)
        self.checkpoint_path = None

    # -- evaluation ---------------------------------------------------------------------------
    def summary(self, start: dict | None = None) -> dict:
        """:func:`~minibern.training.summary.summarize` of the network, with the units the hooks
        switch off (:meth:`Hook.kept_units`)."""
        kept = {}
        for hook in self.hooks:
            kept.update(hook.kept_units())
        return summarize(self.net, start=start, kept=kept)

    def error_rate(self, split: Split) -> float:
        """Fraction of ``split`` misclassified by the current (deterministic) network."""
        wrong = 0
        self.net.eval()
        try:
            for start in range(0, split.size, self.config.eval_batch_size):
                stop = min(start + self.config.eval_batch_size, split.size)
                logits = self.net.forward(split.images[start:stop])
                wrong += int(B.to_numpy((logits.argmax(axis=1) != split.labels[start:stop]).sum()))
        finally:
            self.net.train()
        return wrong / split.size

    # -- one epoch ----------------------------------------------------------------------------
    def learning_rate(self, epoch: int) -> float:
        """η_e = η / (1 + e/τ) with τ = ``lr_decay`` epochs (constant η without it)."""
        if self.config.lr_decay is None:
            return self.config.lr
        return self.config.lr / (1.0 + epoch / self.config.lr_decay)

    def train_epoch(self) -> float:
        """One pass over the training split in a seeded random order; returns the mean loss."""
        if self.config.lr_decay is not None:
            self.optimizer.lr = self.learning_rate(self.epoch)
        train = self.splits["train"]
        size, batch = train.size, self.config.batch_size
        order = B.asarray(self.batch_rng.permutation(size))
        n_steps = math.ceil(size / batch)
        progress = Progress(n_steps, f"epoch {self.epoch + 1}/{self.config.epochs}",
                            self.progress_stream)
        total = 0.0
        for self.step in range(n_steps):
            index = order[self.step * batch:(self.step + 1) * batch]
            self.batch_images, self.batch_labels = train.images[index], train.labels[index]
            loss, dlogits = softmax_cross_entropy(self.net.forward(self.batch_images),
                                                  self.batch_labels, check=False)
            value = B.to_float(loss)
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} at epoch {self.epoch + 1}, step {self.step + 1}; "
                    f"{self._kept()} — {_remedy(self.config, self.optimizer.lr)}, or check "
                    "the data for NaN"
                )
            if self.first_loss is None:
                self.first_loss, self.n_classes = value, int(dlogits.shape[1])
            self.net.backward(dlogits, input_grad=False)  # no one needs ∂L/∂images
            for hook in self.hooks:
                hook.after_backward(self)
            self.optimizer.step(self.net)
            self.global_step += 1
            for hook in self.hooks:
                hook.after_step(self)
            total += value
            progress.update(note=f"loss {value:.4f}")
        progress.close()
        return total / n_steps

    def _kept(self, epoch: int | None = None) -> str:
        """Which checkpoint survives a failure in the epoch after ``epoch`` (default: now)."""
        epoch = self.epoch if epoch is None else epoch
        if self.checkpoint_path is not None and epoch > 0:
            return f"the last good checkpoint (end of epoch {epoch}) is kept"
        return "no checkpoint of this run was written"

    def check_divergence(self, train_loss: float) -> None:
        """Raise TrainingDiverged if the epoch's mean ``train_loss`` passed the bound of
        :data:`DIVERGENCE_FACTOR` (before its checkpoint is written)."""
        chance = math.log(self.n_classes)
        bound = max(DIVERGENCE_FACTOR * chance, self.first_loss)
        if train_loss > bound:
            raise TrainingDiverged(
                f"training diverged in epoch {self.epoch + 1}: its mean loss {train_loss:.4g} is "
                f"above {DIVERGENCE_FACTOR:g} x ln {self.n_classes} = "
                f"{DIVERGENCE_FACTOR * chance:.4g} (ln {self.n_classes}: guessing uniformly) and "
                f"above the untrained network's {self.first_loss:.4g}; {self._kept()} — "
                f"{_remedy(self.config, self.optimizer.lr)}")

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """(host arrays, JSON meta) describing the run after ``self.epoch`` epochs."""
        arrays = {f"param/{k}": B.to_numpy(v) for k, v in self.net.named_parameters().items()}
        opt_state = self.optimizer.state_dict()
        arrays.update({f"opt/{k}": v for k, v in opt_state.items() if k != "steps"})
        arrays.update({f"history/{k}": np.asarray(v) for k, v in self.history.items()})
        hook_meta = []
        for i, hook in enumerate(self.hooks):
            state = hook.state_dict()
            arrays.update({f"hook{i}/{k}": v for k, v in state.items() if isinstance(v, np.ndarray)})
            hook_meta.append({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})
        meta = {"epoch": self.epoch, "global_step": self.global_step,
                "optimizer_steps": opt_state["steps"], "config": asdict(self.config),
                "batch_rng": self.batch_rng.bit_generator.state,
                HOOK_RNG_KEY: self.hook_rng.bit_generator.state, "hooks": hook_meta,
                "hook_settings": [hook.settings() for hook in self.hooks],
                "first_loss": self.first_loss, "n_classes": self.n_classes,
                THREADS_KEY: thread_counts()}
        return arrays, meta

    def save_checkpoint(self, path) -> Path:
        """Write the run's state to ``path``; refuse (TrainingDiverged) to write non-finite
        weights, so the checkpoint on disk is always a good one."""
        arrays, meta = self.state()
        bad = _non_finite(arrays)
        if bad:
            raise TrainingDiverged(
                f"the weights became non-finite ({', '.join(bad)}) in epoch {self.epoch} although "
                f"its loss was finite; {self._kept(self.epoch - 1)} — "
                f"{_remedy(self.config, self.optimizer.lr)}")
        return ckpt.write_npz(path, arrays, meta)

    def load_checkpoint(self, path) -> None:
        """Restore weights, optimiser, RNG streams, history and hooks from ``path``; damaged
        contents (missing or misshapen arrays, a malformed state) raise CheckpointError naming
        the file and the fix."""
        arrays, meta = ckpt.read_npz(path)
        check_resume(path, meta, self.config, [hook.settings() for hook in self.hooks])
        bad = _non_finite(arrays)
        if bad:
            raise ckpt.CheckpointError(
                f"checkpoint {path} holds non-finite weights ({', '.join(bad)}), so it is no good "
                "to resume from; start a new run (another --out) with a lower learning rate")
        try:
            self._restore(arrays, meta)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ckpt.CheckpointError(
                f"checkpoint {path} is damaged ({type(error).__name__}: {error}); delete it to "
                "start the run over, or choose another --out") from error
        if THREADS_KEY not in meta:
            self.log(f"note: {path} does not record the thread counts it was trained with "
                     f"(written before they were recorded); resuming with {thread_counts()}: "
                     "the result equals an uninterrupted run's only if those were the same")

    def _restore(self, arrays: dict, meta: dict) -> None:
        """:meth:`load_checkpoint` once the file and its settings are checked."""
        hook_states = []
        for i, hook in enumerate(self.hooks):
            state = dict(meta["hooks"][i]) if i < len(meta["hooks"]) else {}
            prefix = f"hook{i}/"
            state.update({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
            hook_states.append(state)
            hook.load_structure(state)
        for name, value in self.net.named_parameters().items():
            saved = arrays.get(f"param/{name}")
            if saved is None or saved.shape != tuple(value.shape) or saved.dtype.kind != "f":
                found = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
                raise ValueError(f"parameter {name} is {found}, expected float {tuple(value.shape)}")
            self.net.set_parameter(name, B.asarray(saved))
        opt_state = {k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")}
        opt_state["steps"] = meta["optimizer_steps"]
        self.optimizer.load_state_dict(opt_state)
        self.history = {k[len("history/"):]: v.tolist() for k, v in arrays.items()
                        if k.startswith("history/")}
        for key in ("train_loss", "val_error", "epoch_seconds"):
            if len(self.history.get(key, ())) != int(meta["epoch"]):
                raise ValueError(f"history/{key} has {len(self.history.get(key, ()))} entries "
                                 f"for {meta['epoch']} epochs")
        self.batch_rng.bit_generator.state = meta["batch_rng"]
        self.hook_rng.bit_generator.state = meta[HOOK_RNG_KEY]
        for hook, state in zip(self.hooks, hook_states):
            hook.load_state_dict(state)
        self.epoch, self.global_step = int(meta["epoch"]), int(meta["global_step"])
        self.first_loss, self.n_classes = meta.get("first_loss"), meta.get("n_classes")

    # -- the run ------------------------------------------------------------------------------
    def fit(self, out_dir=None, resume: bool = False) -> dict:
        """Train the remaining epochs; with ``out_dir``, checkpoint every epoch and write
        ``history.npz``, holding the directory's lock (:func:`~minibern.training.lock.run_lock`)
        throughout. Returns the metrics dict."""
        if out_dir is None:
            return self._fit(None, resume)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with run_lock(out, self.log):
            return self._fit(out, resume)

    def _fit(self, out, resume: bool) -> dict:
        checkpoint_path = self.checkpoint_path = out / "checkpoint.npz" if out else None
        for path in ckpt.remove_temporaries(out, RUN_FILES) if out else []:
            self.log(f"removed {path}, left by a run killed while writing")
        if out and resume and checkpoint_path.exists():
            self.load_checkpoint(checkpoint_path)
            self.log(f"resumed from {checkpoint_path} after epoch {self.epoch}")
        finished = self.epoch > 0 and self.epoch >= self.config.epochs
        for hook in self.hooks:
            hook.before_fit(self)
        if finished:
            self.replay_end_of_run()
        while self.epoch < self.config.epochs:
            self.run_epoch(out)
        return self.metrics()

    def replay_end_of_run(self) -> None:
        """Resuming a finished run trains nothing, but what the hooks computed at the end of
        its last epoch and the checkpoint does not hold (the gates' audit of their decisions)
        would be missing from its metrics. So the hooks' ``after_epoch`` of the last epoch runs
        once more on a scratch copy of the history (the checkpoint holds the history already):
        the weights, the checkpoint and history.npz stay as they were."""
        history = self.history
        self.history = {key: list(value) for key, value in history.items()}
        try:
            for hook in self.hooks:
                hook.after_epoch(self)
        finally:
            self.history = history

    def run_epoch(self, out) -> None:
        """Train one epoch, validate, run the hooks; with ``out`` write the checkpoint and
        history.npz."""
        start = time.perf_counter()
        train_loss = self.train_epoch()
        self.check_divergence(train_loss)
        B.synchronize()
        seconds = time.perf_counter() - start
        self.epoch += 1
        self.step = 0
        val_error = self.error_rate(self.splits["val"])
        for key, value in (("train_loss", train_loss), ("val_error", val_error),
                           ("epoch_seconds", seconds)):
            self.history[key].append(value)
        for hook in self.hooks:
            hook.after_epoch(self)
        size = self.summary()
        for key in ("params", "flops_per_example"):
            self.history.setdefault(key, []).append(size[key])
        self.log(f"epoch {self.epoch}/{self.config.epochs}  train loss {train_loss:.4f}  "
                 f"val error {100 * val_error:.2f}%  {seconds:.2f} s")
        if out:
            self.save_checkpoint(out / "checkpoint.npz")
            ckpt.write_npz(out / "history.npz", {k: np.asarray(v) for k, v in self.history.items()})
            self.log(f"checkpoint saved: epoch {self.epoch}")

    def metrics(self) -> dict:
        """The run's summary: configuration, size of the network, errors, timing."""
        summary = self.summary(start=self.start_summary)
        extra = {}
        for hook in self.hooks:
            extra.update(hook.metrics())
        return {
            "model": self.config.model, "seed": self.config.seed,
            "backend": B.get_backend().name, "epochs": self.epoch,
            **summary,
            "val_error": self.history["val_error"][-1] if self.history["val_error"] else None,
            "test_error": self.error_rate(self.splits["test"]),
            "epoch_seconds": list(self.history["epoch_seconds"]),
            "train_loss": list(self.history["train_loss"]),
            "config": asdict(self.config),
            **extra,
        }


def _non_finite(arrays: dict) -> list[str]:
    """Names of the float weight and optimiser arrays in ``arrays`` holding NaN or infinity."""
    return [key for key, value in arrays.items() if key.startswith(("param/", "opt/"))
            and value.dtype.kind == "f" and not np.isfinite(value).all()]


def write_run_files(out_dir, metrics: dict) -> Path:
    """metrics.json in ``out_dir`` (atomic)."""
    return ckpt.write_json(Path(out_dir) / "metrics.json", json.loads(json.dumps(metrics)))
