"""The early-pruning section of docs/RESULTS.md: kept units and units in the arrays per epoch.

Issue 12 asks that the weight arrays hold at most 1.25× the final kept units after epoch 3.
Two things can keep them fuller: units whose θ is still ≥ ½ then (the method's own kept set
has not settled), and units below ½ that the pruning condition (P6) of
docs/derivations/pruning.md has not yet removed. ``history.npz`` records both per epoch
(``kept_<gate>``, ``units_<gate>``); this table gives their means over the seeds of the
``lenet300`` grid's gated configurations at a few epochs, beside the training loss.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GRID = "lenet300"
CONFIGURATIONS = ("gated", "gated_no_rule")
EPOCHS = (1, 3, 5, 10, 15, 20)


def per_epoch(directories: list[Path]) -> dict | None:
    """Means over the runs in ``directories`` of every gate layer's kept units and units in the
    arrays, and of the training loss, per epoch: {"layers": names, "kept": (L, E), "arrays":
    (L, E), "train_loss": (E,), "runs": count}; None if no run has a history."""
    histories = []
    for directory in directories:
        path = directory / "history.npz"
        if path.exists():
            with np.load(path) as history:
                histories.append({key: history[key] for key in history.files})
    if not histories:
        return None
    layers = [key[len("kept_"):] for key in histories[0] if key.startswith("kept_")]
    epochs = min(len(history["train_loss"]) for history in histories)

    def mean(key):
        return np.mean([history[key][:epochs] for history in histories], axis=0)

    return {"layers": layers, "runs": len(histories), "train_loss": mean("train_loss"),
            "kept": np.array([mean(f"kept_{name}") for name in layers]),
            "arrays": np.array([mean(f"units_{name}") for name in layers])}


def markdown(root: Path) -> str:
    """The section, or "" when no run of the grid has a history."""
    rows = []
    for configuration in CONFIGURATIONS:
        directories = sorted((root / GRID).glob(f"{configuration}_seed*"))
        found = per_epoch(directories)
        if found is None:
            continue
        epochs = [e for e in EPOCHS if e <= len(found["train_loss"])]
        for index, name in enumerate(found["layers"]):
            kept = " / ".join(f"{found['kept'][index][e - 1]:.0f}" for e in epochs)
            arrays = " / ".join(f"{found['arrays'][index][e - 1]:.0f}" for e in epochs)
            rows.append(f"| {configuration} | {found['runs']} | {name} | {kept} | {arrays} |")
        loss = " / ".join(f"{found['train_loss'][e - 1]:.3f}" for e in epochs)
        rows.append(f"| {configuration} | {found['runs']} | training loss | {loss} | |")
    if not rows:
        return ""
    epochs_text = ", ".join(str(e) for e in EPOCHS)
    return "\n".join([
        "## early pruning: kept units and units in the arrays, epoch by epoch\n",
        f"Grid `{GRID}`, means over the seeds, after epochs {epochs_text} (those run). Kept: θ ≥ ½. In the "
        "arrays: units still in the weight arrays (below ½ but not yet removed by the pruning "
        "condition (P6) of docs/derivations/pruning.md, or kept). Training loss: the epoch's "
        "mean.\n",
        "| configuration | seeds | gate layer | kept | in the arrays |",
        "|---|---|---|---|---|",
        *rows, ""])


__all__ = ["markdown", "per_epoch"]
