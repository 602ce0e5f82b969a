"""What determines a run: :class:`TrainConfig`, the optimiser it names, its seeded streams."""
from __future__ import annotations

import math
from dataclasses import dataclass

from minibern import backend as B
from minibern.optim import SGD, Adam

OPTIMIZERS = ("adam", "sgd")


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


def make_optimizer(config: TrainConfig):
    if config.optimizer == "adam":
        return Adam(lr=config.lr, weight_decay=config.weight_decay)
    return SGD(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def run_rngs(seed: int) -> list:
    """The run's three host streams: [weight init, batch order, hooks (the gate masks)]."""
    return B.spawn_rngs(seed, 3)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """⌈N / B⌉ minibatches make one pass over N training images (the last one may be short)."""
    return -(-n_train // batch_size)
