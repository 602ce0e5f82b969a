"""The early-pruning section of docs/RESULTS.md: kept units and units in the arrays per epoch.

Issue 12 asks that the weight arrays hold at most 1.25× the final kept units after epoch 3.
Two things can keep them fuller: units whose θ is still ≥ ½ then (the method's own kept set
has not settled), and units below ½ that the pruning condition (P6) of
docs/derivations/pruning.md has not yet removed. ``history.npz`` records both per epoch
(``kept_<gate>``, ``units_<gate>``); this table gives their means over the seeds of the
``lenet300`` grid's gated configurations at a few epochs, beside the training loss.

The project also aims at a whole gated run that costs no more wall time than the un-gated one.
:func:`epoch_seconds_markdown` gives the ``timing`` grid's seconds per epoch (runs one at a time
on an otherwise idle machine), gated and un-gated, at the same epochs and summed: whether the
gated epochs, once pruned, become cheap enough to pay back the dearer first ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GRID = "lenet300"
CONFIGURATIONS = ("gated", "gated_no_rule")
EPOCHS = (1, 3, 5, 10, 15, 20)
_EPOCHS_TEXT = ", ".join(str(e) for e in EPOCHS)


def _section(title: str, caption: str, header: list[str], rows: list[str]) -> str:
    """A results-page section: its title, a caption paragraph and a table of ``rows``."""
    return "\n".join([f"## {title}\n", caption + "\n", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header), *rows, ""])


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
    return _section(
        "early pruning: kept units and units in the arrays, epoch by epoch",
        f"Grid `{GRID}`, means over the seeds, after epochs {_EPOCHS_TEXT} (those run). Kept: "
        "θ ≥ ½. In the arrays: units still in the weight arrays (below ½ but not yet removed by "
        "the pruning condition (P6) of docs/derivations/pruning.md, or kept). Training loss: "
        "the epoch's mean.",
        ["configuration", "seeds", "gate layer", "kept", "in the arrays"], rows)


TIMING_GRID = "timing"
TIMING_CONFIGURATIONS = ("gated", "gated_at_one", "plain")
LAST_EPOCHS = 5


def epoch_seconds_markdown(root: Path) -> str:
    """The timing section, or "" when no run of the grid has a history: per configuration of
    LeNet-300-100, the mean training-pass seconds of its epochs (history ``epoch_seconds``)."""
    rows = []
    for configuration in TIMING_CONFIGURATIONS:
        histories = []
        for directory in sorted((root / TIMING_GRID).glob(f"{configuration}_seed*")):
            if (directory / "history.npz").exists():
                with np.load(directory / "history.npz") as history:
                    histories.append(np.asarray(history["epoch_seconds"], dtype=float))
        if not histories:
            continue
        epochs = min(len(seconds) for seconds in histories)
        mean = np.mean([seconds[:epochs] for seconds in histories], axis=0)
        shown = " / ".join(f"{mean[e - 1]:.2f}" for e in EPOCHS if e <= epochs)
        last = mean[-LAST_EPOCHS:].mean()
        rows.append(f"| {configuration} | {len(histories)} | {shown} | {last:.2f} | "
                    f"{mean.sum():.1f} ({epochs}) |")
    if not rows:
        return ""
    return _section(
        "whole-run cost: seconds per epoch, gated and un-gated",
        f"Grid `{TIMING_GRID}`'s LeNet-300-100 runs (see its table above for how they ran), "
        f"means over the seeds of the training pass: after epochs {_EPOCHS_TEXT} (those run), "
        f"the mean of the last {LAST_EPOCHS} epochs, and the sum over the epochs every seed "
        "ran (their count in brackets).",
        ["configuration", "seeds", "seconds per epoch", "last epochs", "all epochs"], rows)


__all__ = ["epoch_seconds_markdown", "markdown", "per_epoch"]
