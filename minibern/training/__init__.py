"""The training loop and its run files; it knows hooks, not gates.

:mod:`~minibern.training.trainer` (``Trainer``, ``TrainConfig``, ``Hook``),
:mod:`~minibern.training.checkpoint` (atomic ``.npz``/JSON files),
:mod:`~minibern.training.summary` (architecture, parameters, FLOPs),
:mod:`~minibern.training.progress` (the terminal progress bar),
:mod:`~minibern.training.transfers` (host↔device transfers per step, strict backend).
"""
from minibern.training.trainer import (Hook, TrainConfig, Trainer, TrainingDiverged, device_splits,
                                       run_rngs, write_run_files)

__all__ = ["Hook", "TrainConfig", "Trainer", "TrainingDiverged", "device_splits", "run_rngs",
           "write_run_files"]
