"""The results page's section "protocol": one run's test error read by several protocols.

The runs of grid ``protocol`` (gated LeNet-300-100 with the default recipe and the un-gated
baseline, 40 epochs, seeds 0–2) record the test error after every epoch (``history.npz``'s
``test_error``, beside ``val_error``). The first table reads each run by five protocols, test
error in %, mean ± std over the seeds (the value alone for one seed):

- *final, 20* and *final, 40*: the error after epoch 20 (the page's protocol: the recipe's 20
  epochs; the learning rate and the θ step follow the epoch, not the run's length, so epoch 20
  is where a 20-epoch run stops) and after epoch 40;
- *val-chosen, ≤ 20* and *val-chosen, ≤ 40*: the error at the epoch of lowest validation error
  among the first 20 (or all 40) epochs, the first of ties: a choice made without the test set;
- *best test epoch*: the lowest test error of all 40 epochs, the optimistic protocol some
  published numbers may follow (the epoch is chosen on the test set itself): shown to size
  that optimism, not a number we claim.

A row "gated − plain" gives the difference of the two configurations' means per protocol. The
second table gives the epochs each protocol chose, per seed. The third follows the gated runs'
decisions beside the errors: at epochs 3, 10, 20 and 40, the units kept (θ ≥ ½) per gate layer
and the training loss, validation and test error of the gated runs, and the plain runs'
validation and test error, means over the seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRID = "protocol"
CONFIGURATIONS = ("gated", "plain")
SHORT, LONG = 20, 40
#: Epochs at which the third table follows the decisions.
EPOCHS = (3, 10, 20, 40)
PROTOCOLS = ("final, 20", "val-chosen, ≤ 20", "final, 40", "val-chosen, ≤ 40",
             "best test epoch (optimistic)")


def read_runs(root: Path, configuration: str) -> list[dict]:
    """Each finished seed of ``configuration`` in grid ``protocol`` that recorded its test error
    per epoch: ``{"seed", "metrics", "history"}`` (history: host arrays), by seed."""
    runs = []
    for directory in sorted((root / GRID).glob(f"{configuration}_seed*")):
        metrics_path, history_path = directory / "metrics.json", directory / "history.npz"
        if not (metrics_path.exists() and history_path.exists()):
            continue
        with np.load(history_path) as archive:
            history = {key: archive[key] for key in archive.files}
        if "test_error" not in history:
            continue
        runs.append({"seed": directory.name.rsplit("_seed", 1)[1],
                     "metrics": json.loads(metrics_path.read_text(encoding="utf-8")),
                     "history": history})
    return runs


def chosen_epochs(history: dict) -> dict:
    """{protocol: the 1-based epoch it reads, or None where the history is too short}."""
    val, test = np.asarray(history["val_error"]), np.asarray(history["test_error"])

    def within(epochs: int, errors) -> int | None:
        return int(np.argmin(errors[:epochs])) + 1 if len(errors) >= epochs else None

    return dict(zip(PROTOCOLS, (SHORT if len(test) >= SHORT else None, within(SHORT, val),
                                LONG if len(test) >= LONG else None, within(LONG, val),
                                within(LONG, test))))


def protocol_errors(history: dict) -> dict:
    """{protocol: test error (fraction) at its epoch, or None}."""
    test = np.asarray(history["test_error"])
    return {name: None if epoch is None else float(test[epoch - 1])
            for name, epoch in chosen_epochs(history).items()}


def _complete(values: list) -> bool:
    """Whether ``values`` has a value for every seed (a mean over fewer would mislead)."""
    return bool(values) and not any(value is None or np.isnan(value) for value in values)


def _cell(values: list, scale: float = 100.0, digits: int = 2) -> str:
    """mean ± sample std of ``values`` × ``scale``; the value alone for one; "—" unless
    :func:`_complete`."""
    if not _complete(values):
        return "—"
    scaled = scale * np.asarray(values, dtype=float)
    if len(scaled) == 1:
        return f"{scaled[0]:.{digits}f}"
    return f"{scaled.mean():.{digits}f} ± {scaled.std(ddof=1):.{digits}f}"


def _architecture(runs: list[dict]) -> str:
    """Kept units per layer at the end, mean ± std over the seeds."""
    layers = np.array([run["metrics"]["architecture"] for run in runs], dtype=float)
    return " / ".join(_cell(list(column), scale=1.0, digits=0) for column in layers.T)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def error_table(found: dict) -> list[str]:
    """Per configuration: the test error by each protocol and the kept architecture; then the
    difference of the means, gated − plain, where both ran."""
    rows, means = [], {}
    for configuration, runs in found.items():
        errors = [protocol_errors(run["history"]) for run in runs]
        columns = {name: [error[name] for error in errors] for name in PROTOCOLS}
        means[configuration] = {name: float(np.mean(values)) if _complete(values) else None
                                for name, values in columns.items()}
        rows.append([configuration, str(len(runs)), *(_cell(columns[name]) for name in PROTOCOLS),
                     _architecture(runs)])
    if all(name in means for name in CONFIGURATIONS):
        gated, plain = (means[name] for name in CONFIGURATIONS)
        rows.append(["gated − plain", "", *("—" if gated[name] is None or plain[name] is None
                                           else f"{100 * (gated[name] - plain[name]):+.2f}"
                                           for name in PROTOCOLS), ""])
    return _table(["configuration", "seeds", *PROTOCOLS, "architecture"], rows)


def epoch_table(found: dict) -> list[str]:
    """Per configuration and seed: the epoch each protocol read."""
    rows = []
    for configuration, runs in found.items():
        for run in runs:
            epochs = chosen_epochs(run["history"])
            rows.append([configuration, run["seed"],
                         *("—" if epochs[name] is None else str(epochs[name])
                           for name in PROTOCOLS[1::2] + PROTOCOLS[4:])])
    return _table(["configuration", "seed", *PROTOCOLS[1::2], PROTOCOLS[4]], rows)


def _at(runs: list[dict], key: str, epoch: int, scale: float = 100.0, digits: int = 2) -> str:
    """Mean over ``runs`` of history ``key`` after ``epoch``; "—" where one lacks it."""
    values = [run["history"][key][epoch - 1] for run in runs
              if key in run["history"] and len(run["history"][key]) >= epoch]
    if not runs or len(values) < len(runs):
        return "—"
    return f"{scale * float(np.mean(values)):.{digits}f}"


def decisions_table(found: dict) -> list[str]:
    """The gated runs' kept units per gate layer and errors at :data:`EPOCHS` (means), beside
    the plain runs' validation and test error."""
    gated, plain = found.get("gated", []), found.get("plain", [])
    if not gated:
        return []
    layers = [gate["name"] for gate in gated[0]["metrics"].get("gates", [])]
    header = ["epoch", *(f"kept {name}" for name in layers), "train loss", "val error",
              "test error", "plain val error", "plain test error"]
    rows = [[str(epoch), *(_at(gated, f"kept_{name}", epoch, scale=1.0, digits=0)
                           for name in layers),
             _at(gated, "train_loss", epoch, scale=1.0, digits=4),
             _at(gated, "val_error", epoch), _at(gated, "test_error", epoch),
             _at(plain, "val_error", epoch), _at(plain, "test_error", epoch)]
            for epoch in EPOCHS]
    return _table(header, rows)


def markdown(root: Path) -> str:
    """The results page's section; "" when grid ``protocol`` has no finished run."""
    found = {name: runs for name in CONFIGURATIONS if (runs := read_runs(Path(root), name))}
    if not found:
        return ""
    lines = ["## protocol: the test error by the protocol that reads it "
             "(`experiments/protocol.py`)\n",
             "Grid `protocol`: the default gated LeNet-300-100 and the un-gated baseline, 40 "
             "epochs, the test error recorded after every epoch. Test error in %, mean ± std "
             "over the seeds. *final, 20* / *final, 40*: after epoch 20 (the page's protocol; "
             "the learning rate and θ step follow the epoch, not the run's length, so epoch 20 "
             "is where the 20-epoch recipe stops) / after epoch 40. "
             "*val-chosen*: at the epoch of lowest validation error among the first 20 / all 40 "
             "epochs, chosen without the test set. *best test epoch (optimistic)*: the lowest "
             "test error of the 40 epochs, the epoch chosen on the test set itself; some "
             "published numbers may follow this protocol, it is shown to size its optimism and "
             "is not a number we claim. *architecture*: kept units at the end (inputs / h1 / "
             "h2). *gated − plain*: the difference of the means, in points.\n",
             *error_table(found), "",
             "The epochs each protocol read, per seed:\n", *epoch_table(found)]
    decisions = decisions_table(found)
    if decisions:
        lines += ["", "Whether the gates still decide while the errors move: the gated runs' "
                  "kept units (θ ≥ ½) per gate layer, training loss and validation and test "
                  "error (%) after the epoch, beside the plain runs' validation and test "
                  "error; means over the seeds.\n", *decisions]
    return "\n".join(lines) + "\n"
