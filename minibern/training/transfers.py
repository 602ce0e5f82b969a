"""A hook that records the strict backend's host↔device transfers per training step.

Run a :class:`~minibern.training.trainer.Trainer` under the ``strict`` backend with a
:class:`StepTransfers` as its *last* hook; after an epoch, :meth:`StepTransfers.per_step` holds
the copies to the device, to the host and the scalar pulls of every step but the first
(:class:`minibern.backend.TransferCounts`: what a GPU would transfer and wait for).
"""
from __future__ import annotations

from minibern import backend as B
from minibern.training.trainer import Hook


class StepTransfers(Hook):
    """Reads the process-wide transfer counts after every step; the differences between
    consecutive reads are whole steps (forward, loss, backward, the other hooks, the update)."""

    def __init__(self):
        self.marks = []

    def after_step(self, trainer) -> None:
        self.marks.append(B.transfer_counts().as_dict())

    def per_step(self) -> list[dict]:
        """``{"to_device", "to_host", "scalars"}`` of each step after the first."""
        return [{kind: after[kind] - before[kind] for kind in before}
                for before, after in zip(self.marks, self.marks[1:])]
