"""Where ``python -m minibern train`` takes an option the command line leaves out.

A new run takes the model's :data:`RECIPES` (the settings docs/RESULTS.md reports for it), then
the defaults of :class:`~minibern.training.config.TrainConfig` and
:class:`~minibern.bernoulli.config.GateConfig`. A resumed run (``--resume``) takes every
setting its checkpoint recorded (:func:`take_recorded`), so the command that started a run
continues it even after a default changed; an option given on the command line is compared
with the checkpoint instead (:mod:`minibern.training.resume`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from minibern.training import checkpoint as ckpt
from minibern.training.config import TrainConfig

#: The recipe docs/RESULTS.md reports for each model, with and without ``--gates`` (the
#: ``lenet300`` and ``lenet5`` grids of experiments/grids.py): TrainConfig fields the CLI
#: defaults to for that model. A test holds the grids to it.
RECIPES = {"lenet300": {"epochs": 20, "lr_decay": 5.0},
           "lenet5": {"epochs": 20, "lr_decay": 5.0}}

#: θ snapshots per epoch of a new gated run without ``--snapshot-every``: enough to see a
#: layer whose gates settle within the first epoch.
SNAPSHOTS_PER_EPOCH = 5

#: TrainConfig fields that are options of the command line (same names as their ``dest``).
TRAIN_OPTIONS = ("epochs", "batch_size", "seed", "optimizer", "lr", "lr_decay", "momentum",
                 "weight_decay", "width_mult", "init", "init_scale", "train_subset")

#: Gate options whose flag switches a GateConfig field off: ``dest → field``.
NEGATED = {"no_hyperprior": "hyperprior", "no_prune": "prune", "no_audit": "audit"}


def recipe_help(field: str) -> str:
    """``default: …`` of a recipe option for ``--help``: its value per model."""
    values = ", ".join(f"{model} {recipe[field]:g}" for model, recipe in RECIPES.items())
    return f"default: the recipe docs/RESULTS.md reports ({values}), with or without --gates"


def recipe_args(model: str) -> list[str]:
    """``model``'s recipe as command-line arguments, e.g. ``["--epochs", "20", "--lr-decay",
    "5"]`` (for a runner that spells out every run's settings)."""
    return [text for field, value in RECIPES.get(model, {}).items()
            for text in (f"--{field.replace('_', '-')}", f"{value:g}")]


def given_options(build_parser, argv) -> set:
    """The ``dest`` of every option the command line ``argv`` gives (``build_parser()`` parsed
    with every default suppressed)."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def fill_recipe(args) -> None:
    """A new run: the recipe options the command line left out take ``args.model``'s recipe,
    else TrainConfig's default."""
    for field in TRAIN_OPTIONS:
        if not hasattr(args, field):
            setattr(args, field, RECIPES.get(args.model, {}).get(field,
                                                                 getattr(TrainConfig, field)))


def _recorded_gates(meta: dict) -> dict:
    """The gate settings of a checkpoint's meta ({} for an un-gated run); checkpoints written
    before hook settings were recorded kept them as the hook's ``config``."""
    settings = meta.get("hook_settings")
    if settings is None:
        settings = [{"gates": hook["config"]} for hook in meta.get("hooks", []) if "config" in hook]
    merged = {}
    for entry in settings:
        merged.update(entry)
    return merged.get("gates", {})


def take_recorded(args, given: set, gate_dests) -> None:
    """``--resume``: every option of ``TRAIN_OPTIONS`` and ``gate_dests`` that the command line
    did not give (``given``) takes the value recorded in ``--out``'s checkpoint; a TrainConfig
    field the checkpoint predates takes its default, a gate setting it predates the CLI's
    default (off: see :func:`~minibern.training.resume.resume_problems`). ``--gates`` itself
    is never taken: without it a gated checkpoint is refused. No checkpoint: nothing changes
    (the resume check names the problem). Raises CheckpointError if it is unreadable."""
    path = Path(args.out) / "checkpoint.npz"
    if not path.is_file():
        return
    meta = ckpt.read_npz(path)[1]
    saved = meta.get("config", {})
    for field in TRAIN_OPTIONS:
        if field not in given:
            setattr(args, field, saved.get(field, getattr(TrainConfig, field)))
    gates = _recorded_gates(meta)
    for dest in gate_dests:
        field = NEGATED.get(dest, dest)
        if dest not in given and field in gates:
            setattr(args, dest, not gates[field] if dest in NEGATED else gates[field])
