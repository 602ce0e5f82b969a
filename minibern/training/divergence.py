"""When a run has diverged, and the message that says so: which checkpoint is kept, what to lower.

Three checks: a non-finite loss at any step (:func:`check_step_loss`), an epoch whose mean loss
passed the bound of :data:`DIVERGENCE_FACTOR` (:func:`check_epoch_loss`, before its checkpoint
is written), and non-finite weights at an epoch's end (:func:`check_weights`: never
checkpointed, so the checkpoint on disk is always a good one).
"""
from __future__ import annotations

import math

from minibern.training.config import TrainConfig

#: An epoch diverged when its mean training loss exceeds DIVERGENCE_FACTOR · ln C (C classes:
#: ln C is the loss of a network that guesses uniformly) and the loss of the run's first step
#: (the untrained network's, which a large --init-scale may put above the former).
DIVERGENCE_FACTOR = 10.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (the message names the epoch and step), or an epoch's
    mean loss passed the :data:`DIVERGENCE_FACTOR` bound."""


def remedy(config: TrainConfig, lr: float) -> str:
    """What to lower after a divergence: the learning rate, and the initial scale and weight
    decay when they are not at their defaults (either alone can make a run diverge)."""
    parts = [f"the learning rate (now {lr})"]
    if config.init_scale != TrainConfig.init_scale:
        parts.append(f"--init-scale (now {config.init_scale})")
    if config.weight_decay:
        parts.append(f"--weight-decay (now {config.weight_decay})")
    return "lower " + (" or ".join(parts) if len(parts) < 3
                       else ", ".join(parts[:-1]) + " or " + parts[-1])


def kept_checkpoint(trainer, epoch: int | None = None) -> str:
    """Which checkpoint survives a failure in the epoch after ``epoch`` (default: the epochs
    completed)."""
    epoch = trainer.epoch if epoch is None else epoch
    if trainer.checkpoint_path is not None and epoch > 0:
        return f"the last good checkpoint (end of epoch {epoch}) is kept"
    return "no checkpoint of this run was written"


def check_step_loss(trainer, value: float) -> None:
    """Raise TrainingDiverged if the step's loss ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss became {value} at epoch {trainer.epoch + 1}, step {trainer.step + 1}; "
            f"{kept_checkpoint(trainer)} — {remedy(trainer.config, trainer.optimizer.lr)}, or "
            "check the data for NaN")


def check_epoch_loss(trainer, train_loss: float) -> None:
    """Raise TrainingDiverged if the epoch's mean ``train_loss`` passed the bound of
    :data:`DIVERGENCE_FACTOR` (before its checkpoint is written)."""
    chance = math.log(trainer.n_classes)
    bound = max(DIVERGENCE_FACTOR * chance, trainer.first_loss)
    if train_loss > bound:
        raise TrainingDiverged(
            f"training diverged in epoch {trainer.epoch + 1}: its mean loss {train_loss:.4g} is "
            f"above {DIVERGENCE_FACTOR:g} x ln {trainer.n_classes} = "
            f"{DIVERGENCE_FACTOR * chance:.4g} (ln {trainer.n_classes}: guessing uniformly) and "
            f"above the untrained network's {trainer.first_loss:.4g}; {kept_checkpoint(trainer)} — "
            f"{remedy(trainer.config, trainer.optimizer.lr)}")


def check_weights(trainer, bad: list) -> None:
    """Raise TrainingDiverged if ``bad`` names weight arrays that became non-finite in an epoch
    whose loss was finite."""
    if bad:
        raise TrainingDiverged(
            f"the weights became non-finite ({', '.join(bad)}) in epoch {trainer.epoch} although "
            f"its loss was finite; {kept_checkpoint(trainer, trainer.epoch - 1)} — "
            f"{remedy(trainer.config, trainer.optimizer.lr)}")
