"""A run's state in a checkpoint: what :class:`~minibern.training.trainer.Trainer` saves after
every epoch and restores on ``--resume``.

A checkpoint is ``(host arrays, JSON meta)`` written atomically by
:func:`minibern.training.checkpoint.write_npz`: the parameters (``param/<name>``), the
optimiser's state (``opt/...``), the history (``history/<key>``), each hook's arrays
(``hook<i>/<key>``); the meta holds the epoch and step counters, the configuration, both RNG
streams, the hooks' settings and JSON state, the divergence bound and the thread counts. Loading
checks the settings first (:func:`~minibern.training.resume.check_resume`), then lets the hooks
restore the pruned shapes before the weights are put back.
"""
from __future__ import annotations

from dataclasses import asdict

from minibern import backend as B
from minibern.training import checkpoint as ckpt
from minibern.training.resume import THREADS_KEY, check_resume, thread_counts

np = B.host

#: Checkpoint meta key of :attr:`~minibern.training.trainer.Trainer.hook_rng`'s state. The name dates from when the trainer
#: drew the gate masks itself; it is kept so that checkpoints written before still resume.
HOOK_RNG_KEY = "gate_rng"


def non_finite(arrays: dict) -> list[str]:
    """Names of the float weight and optimiser arrays in ``arrays`` holding NaN or infinity."""
    return [key for key, value in arrays.items() if key.startswith(("param/", "opt/"))
            and value.dtype.kind == "f" and not np.isfinite(value).all()]


def pack(trainer) -> tuple[dict, dict]:
    """(host arrays, JSON meta) describing the run after ``trainer.epoch`` epochs."""
    arrays = {f"param/{k}": B.to_numpy(v) for k, v in trainer.net.named_parameters().items()}
    opt_state = trainer.optimizer.state_dict()
    arrays.update({f"opt/{k}": v for k, v in opt_state.items() if k != "steps"})
    arrays.update({f"history/{k}": np.asarray(v) for k, v in trainer.history.items()})
    hook_meta = []
    for i, hook in enumerate(trainer.hooks):
        state = hook.state_dict()
        arrays.update({f"hook{i}/{k}": v for k, v in state.items() if isinstance(v, np.ndarray)})
        hook_meta.append({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})
    meta = {"epoch": trainer.epoch, "global_step": trainer.global_step,
            "optimizer_steps": opt_state["steps"], "config": asdict(trainer.config),
            "batch_rng": trainer.batch_rng.bit_generator.state,
            HOOK_RNG_KEY: trainer.hook_rng.bit_generator.state, "hooks": hook_meta,
            "hook_settings": [hook.settings() for hook in trainer.hooks],
            "first_loss": trainer.first_loss, "n_classes": trainer.n_classes,
            THREADS_KEY: thread_counts()}
    return arrays, meta


def load(trainer, path) -> None:
    """Restore weights, optimiser, RNG streams, history and hooks from ``path``; damaged
    contents (missing or misshapen arrays, a malformed state) raise CheckpointError naming
    the file and the fix."""
    arrays, meta = ckpt.read_npz(path)
    check_resume(path, meta, trainer.config, [hook.settings() for hook in trainer.hooks])
    bad = non_finite(arrays)
    if bad:
        raise ckpt.CheckpointError(
            f"checkpoint {path} holds non-finite weights ({', '.join(bad)}), so it is no good "
            "to resume from; start a new run (another --out) with a lower learning rate")
    try:
        restore(trainer, arrays, meta)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ckpt.CheckpointError(
            f"checkpoint {path} is damaged ({type(error).__name__}: {error}); delete it to "
            "start the run over, or choose another --out") from error
    if THREADS_KEY not in meta:
        trainer.log(f"note: {path} does not record the thread counts it was trained with "
                    f"(written before they were recorded); resuming with {thread_counts()}: "
                    "the result equals an uninterrupted run's only if those were the same")


def restore(trainer, arrays: dict, meta: dict) -> None:
    """:func:`load` once the file and its settings are checked."""
    hook_states = []
    for i, hook in enumerate(trainer.hooks):
        state = dict(meta["hooks"][i]) if i < len(meta["hooks"]) else {}
        prefix = f"hook{i}/"
        state.update({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        hook_states.append(state)
        hook.load_structure(state)
    for name, value in trainer.net.named_parameters().items():
        saved = arrays.get(f"param/{name}")
        if saved is None or saved.shape != tuple(value.shape) or saved.dtype.kind != "f":
            found = "missing" if saved is None else f"{saved.dtype} {saved.shape}"
            raise ValueError(f"parameter {name} is {found}, expected float {tuple(value.shape)}")
        trainer.net.set_parameter(name, B.asarray(saved))
    opt_state = {k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")}
    opt_state["steps"] = meta["optimizer_steps"]
    trainer.optimizer.load_state_dict(opt_state)
    trainer.history = {k[len("history/"):]: v.tolist() for k, v in arrays.items()
                       if k.startswith("history/")}
    # A checkpoint written before the test error was recorded per epoch: NaN for its epochs.
    trainer.history.setdefault("test_error", [float("nan")] * int(meta["epoch"]))
    for key in ("train_loss", "val_error", "epoch_seconds", "test_error"):
        if len(trainer.history.get(key, ())) != int(meta["epoch"]):
            raise ValueError(f"history/{key} has {len(trainer.history.get(key, ()))} entries "
                             f"for {meta['epoch']} epochs")
    trainer.batch_rng.bit_generator.state = meta["batch_rng"]
    trainer.hook_rng.bit_generator.state = meta[HOOK_RNG_KEY]
    for hook, state in zip(trainer.hooks, hook_states):
        hook.load_state_dict(state)
    trainer.epoch, trainer.global_step = int(meta["epoch"]), int(meta["global_step"])
    trainer.first_loss, trainer.n_classes = meta.get("first_loss"), meta.get("n_classes")


def replay_end_of_run(trainer) -> None:
    """Resuming a finished run trains nothing, but what the hooks computed at the end of
    its last epoch and the checkpoint does not hold (the gates' audit of their decisions)
    would be missing from its metrics. So the hooks' ``after_epoch`` of the last epoch runs
    once more on a scratch copy of the history (the checkpoint holds the history already):
    the weights, the checkpoint and history.npz stay as they were."""
    history = trainer.history
    trainer.history = {key: list(value) for key, value in history.items()}
    try:
        for hook in trainer.hooks:
            hook.after_epoch(trainer)
    finally:
        trainer.history = history
