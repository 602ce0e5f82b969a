"""The training loop: seeded minibatches, weight updates, validation, checkpoints, hooks.

One run = one :class:`TrainConfig` + a seed. Three independent host random streams are derived
from the seed (:func:`minibern.backend.spawn_rngs`): weight initialisation, batch order, and one
reserved for the hooks (:attr:`Trainer.hook_rng`: the Bernoulli gates draw their masks from it),
so the same seed on the same backend repeats a run exactly, and a run resumed from a checkpoint
ends with the weights of an uninterrupted one.

Per step: gather a batch, ``forward``, softmax cross-entropy (L18)–(L19), ``backward``, every
hook's ``after_backward`` (weights not yet updated), optimiser step (O1)/(O2), then every hook's
``after_step``. Per epoch: validation error on the
fixed validation split, every hook's ``after_epoch``, the test error, history, checkpoint. The
test error of every epoch goes into the history (``test_error``) for the results page's
protocols (docs/RESULTS.md, section "protocol"), never into a choice the run makes; the run's
``test_error`` is the last epoch's ("final epoch, not best"), and ``val_chosen`` the test error
at the epoch of the lowest validation error. Evaluating it draws no random number and leaves
the weights alone, so a run's weights are those of a run that never looked at the test set.

Hooks are how a method plugs in without the loop knowing it (the Bernoulli gates,
:class:`minibern.bernoulli.hook.GateTrainer`: Δ estimates and the θ update in ``after_backward``,
θ snapshots at epoch ends). A hook's ``state_dict`` goes into the checkpoint, its ``metrics``
into metrics.json, and its ``kept_units`` into the size counts of :mod:`.summary`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minibern import backend as B
from minibern.losses import softmax_cross_entropy
from minibern.optim import inverse_time_decay
from minibern.training import checkpoint as ckpt
from minibern.training import run_state
from minibern.training.config import (TrainConfig, make_optimizer, run_rngs,
                                      steps_per_epoch)
from minibern.training.divergence import (TrainingDiverged, check_epoch_loss,  # noqa: F401 (re-exported)
                                          check_step_loss, check_weights)
from minibern.training.lock import run_lock
from minibern.training.progress import Progress
from minibern.training.resume import RUN_FILES
from minibern.training.summary import summarize

np = B.host

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
        (compared by :func:`~minibern.training.resume.resume_problems`)."""
        return {}

    def load_structure(self, state: dict) -> None:
        """Called with this hook's saved state *before* a checkpoint's weights are loaded, so
        the network can take the shapes they were saved with (e.g. units pruning removed)."""

    def load_state_dict(self, state: dict) -> None:
        """Called with this hook's saved state after the checkpoint's weights are loaded."""


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

    @property
    def n_train(self) -> int:
        """N, the training images of the run (the gates' κ/N, (B15), is priced for it)."""
        return self.splits["train"].size

    @property
    def steps_per_epoch(self) -> int:
        """Minibatches per epoch, ⌈N / batch size⌉."""
        return steps_per_epoch(self.n_train, self.config.batch_size)

    # -- evaluation ---------------------------------------------------------------------------
    def summary(self, start: dict | None = None) -> dict:
        """:func:`~minibern.training.summary.summarize` of the network, with the units the hooks
        switch off (:meth:`Hook.kept_units`)."""
        kept = {name: units for hook in self.hooks for name, units in hook.kept_units().items()}
        return summarize(self.net, start=start, kept=kept)

    def error_rate(self, split: Split) -> float:
        """Fraction of ``split`` misclassified by the current (deterministic) network."""
        return error_rate(self.net, split, self.config.eval_batch_size)

    # -- one epoch ----------------------------------------------------------------------------
    def learning_rate(self, epoch: int) -> float:
        """η_e = η / (1 + e/τ) with τ = ``lr_decay`` epochs (constant η without it)."""
        return inverse_time_decay(self.config.lr, epoch, self.config.lr_decay)

    def train_epoch(self) -> float:
        """One pass over the training split in a seeded random order; returns the mean loss."""
        if self.config.lr_decay is not None:
            self.optimizer.lr = self.learning_rate(self.epoch)
        train = self.splits["train"]
        size, batch = train.size, self.config.batch_size
        order = B.asarray(self.batch_rng.permutation(size))
        n_steps = self.steps_per_epoch
        progress = Progress(n_steps, f"epoch {self.epoch + 1}/{self.config.epochs}",
                            self.progress_stream)
        total = 0.0
        for self.step in range(n_steps):
            index = order[self.step * batch:(self.step + 1) * batch]
            self.batch_images, self.batch_labels = train.images[index], train.labels[index]
            loss, dlogits = softmax_cross_entropy(self.net.forward(self.batch_images),
                                                  self.batch_labels, check=False)
            value = B.to_float(loss)
            check_step_loss(self, value)
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

    # -- checkpoints (packed and restored by minibern.training.run_state) ----------------------
    def state(self) -> tuple[dict, dict]:
        """(host arrays, JSON meta) describing the run after ``self.epoch`` epochs."""
        return run_state.pack(self)

    def save_checkpoint(self, path) -> Path:
        """Write the run's state to ``path``; refuse (TrainingDiverged) to write non-finite
        weights, so the checkpoint on disk is always a good one."""
        arrays, meta = self.state()
        check_weights(self, run_state.non_finite(arrays))
        return ckpt.write_npz(path, arrays, meta)

    def load_checkpoint(self, path) -> None:
        """Restore weights, optimiser, RNG streams, history and hooks from ``path``
        (:func:`~minibern.training.run_state.load`)."""
        run_state.load(self, path)

    # -- the run ------------------------------------------------------------------------------
    def fit(self, out_dir=None, resume: bool = False) -> dict:
        """Train the remaining epochs; with ``out_dir``, checkpoint every epoch and write
        ``history.npz``, holding the directory's lock (:func:`~minibern.training.lock.run_lock`)
        throughout. Returns the metrics dict."""
        if out_dir is None:
            return self._fit(None, resume)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with run_lock(Path(out_dir), self.log):
            return self._fit(Path(out_dir), resume)

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
            run_state.replay_end_of_run(self)
        while self.epoch < self.config.epochs:
            self.run_epoch(out)
        return self.metrics()

    def run_epoch(self, out) -> None:
        """Train one epoch, validate, run the hooks; with ``out`` write the checkpoint and
        history.npz."""
        start = time.perf_counter()
        train_loss = self.train_epoch()
        check_epoch_loss(self, train_loss)
        B.synchronize()
        seconds = time.perf_counter() - start
        self.epoch += 1
        self.step = 0
        val_error = self.error_rate(self.splits["val"])
        record(self.history, train_loss=train_loss, val_error=val_error, epoch_seconds=seconds)
        for hook in self.hooks:
            hook.after_epoch(self)
        size = self.summary()
        record(self.history, params=size["params"], flops_per_example=size["flops_per_example"],
               test_error=self.error_rate(self.splits["test"]))
        self.log(f"epoch {self.epoch}/{self.config.epochs}  train loss {train_loss:.4f}  "
                 f"val error {100 * val_error:.2f}%  {seconds:.2f} s")
        if out:
            self.save_checkpoint(out / "checkpoint.npz")
            ckpt.write_npz(out / "history.npz", {k: np.asarray(v) for k, v in self.history.items()})
            self.log(f"checkpoint saved: epoch {self.epoch}")

    def metrics(self) -> dict:
        """The run's summary for metrics.json (:func:`run_metrics`)."""
        return run_metrics(self)


def record(history: dict, **values) -> None:
    """Append each of ``values`` to its list in ``history`` (created if missing)."""
    for key, value in values.items():
        history.setdefault(key, []).append(value)


def error_rate(net, split: Split, batch_size: int) -> float:
    """Fraction of ``split`` misclassified by ``net`` in evaluation mode (every gate at its
    deterministic mask), in batches of ``batch_size``."""
    wrong = 0
    net.eval()
    try:
        for start in range(0, split.size, batch_size):
            stop = min(start + batch_size, split.size)
            logits = net.forward(split.images[start:stop])
            wrong += int(B.to_numpy((logits.argmax(axis=1) != split.labels[start:stop]).sum()))
    finally:
        net.train()
    return wrong / split.size


def val_chosen(history: dict) -> dict | None:
    """metrics.json's ``val_chosen``: ``{"epoch", "val_error", "test_error"}`` at the epoch
    (1-based, the first of ties) of the lowest validation error, the protocol that chooses an
    epoch without the test set; None before the first epoch. Its ``test_error`` is None where
    the history holds none for that epoch (NaN: an epoch trained before it was recorded,
    :func:`~minibern.training.run_state.restore`)."""
    errors = history.get("val_error") or []
    if not errors:
        return None
    best = min(range(len(errors)), key=errors.__getitem__)
    tests = history.get("test_error") or []
    test = tests[best] if best < len(tests) else None
    return {"epoch": best + 1, "val_error": errors[best],
            "test_error": None if test is None or np.isnan(test) else test}


def final_test_error(trainer) -> float:
    """The last epoch's test error: recorded in the history by that epoch (no second pass over
    the test set), evaluated now where the history has none (no epoch run, or NaN for an epoch
    trained before the record existed)."""
    recorded = trainer.history.get("test_error") or []
    if len(recorded) == len(trainer.history["val_error"]) and recorded and \
            not np.isnan(recorded[-1]):
        return recorded[-1]
    return trainer.error_rate(trainer.splits["test"])


def run_metrics(trainer) -> dict:
    """The run's summary for metrics.json: configuration, size of the network (now and at the
    start), validation and test error, timing, and what every hook adds."""
    summary = trainer.summary(start=trainer.start_summary)
    extra = {}
    for hook in trainer.hooks:
        extra.update(hook.metrics())
    return {
        "model": trainer.config.model, "seed": trainer.config.seed,
        "backend": B.get_backend().name, "epochs": trainer.epoch,
        **summary,
        "val_error": trainer.history["val_error"][-1] if trainer.history["val_error"] else None,
        "test_error": final_test_error(trainer),
        "val_chosen": val_chosen(trainer.history),
        "epoch_seconds": list(trainer.history["epoch_seconds"]),
        "train_loss": list(trainer.history["train_loss"]),
        "config": asdict(trainer.config),
        **extra,
    }


def write_run_files(out_dir, metrics: dict) -> Path:
    """metrics.json in ``out_dir`` (atomic)."""
    return ckpt.write_json(Path(out_dir) / "metrics.json", json.loads(json.dumps(metrics)))
