"""Reading a finished gated LeNet-300-100 run directory, for the analysis scripts.

``python -m minibern train --model lenet300 --gates`` leaves ``metrics.json`` and the exported
network ``model.npz`` (every gate at 1[θ ≥ ½], removed units gone). The scripts that analyse
such a run (``vertex_cost.py``, ``error_gap.py``) check and read them the same way; each turns
:class:`GatedRunError` into its own error type.
"""
from __future__ import annotations

import json
from pathlib import Path

from minibern.bernoulli.export import load_network


class GatedRunError(ValueError):
    """The directory is not a finished gated LeNet-300-100 run with its exported network; the
    message says why and what to do."""


def gated_lenet300_metrics(directory: Path) -> dict:
    """The run's ``metrics.json``, checked to be that of a gated LeNet-300-100 run."""
    try:
        metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise GatedRunError(f"{directory}: no readable metrics.json ({error}); is it a finished "
                            "run directory?") from error
    if metrics.get("config", {}).get("model") != "lenet300" or not metrics.get("gate_config"):
        raise GatedRunError(f"{directory}: not a gated LeNet-300-100 run")
    return metrics


def exported_network(directory: Path):
    """The run's ``model.npz`` as engine layers (:func:`minibern.bernoulli.export.load_network`)."""
    if not (directory / "model.npz").exists():
        raise GatedRunError(f"{directory}: no model.npz (the exported network, which every "
                            "finished run writes); retrain the run to get one")
    try:
        return load_network(directory / "model.npz")
    except ValueError as error:
        raise GatedRunError(str(error)) from error
