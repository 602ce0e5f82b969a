"""The robust-by-design sections of docs/RESULTS.md: kept units per start with and
without each departure, and the offline test of removal priced with the consumer re-fitted.

The paper's title claim is that the method finds the same network from every start. The first
table puts side by side, per configuration, the kept units per gate layer from 300-100, 600-200
and 1200-400 (means over the seeds run) and the largest deviation of a layer's kept units from
their mean over the three starts (the issue's target: within ±15 %), with the test error, the
share of gates at a vertex and the share of all gates that the decision rule certified. The
default's runs are the ``robustness`` grid's ``width*_scale1``; the departures' are the
``compensated`` grid's (docs/derivations/compensated.md).

The second table reads ``compensated_removal.json`` (written by
``experiments/compensated_removal.py`` from finished runs' exported networks): per run, the
kept units per layer of the exported network, after greedy removal at the run's κ with the
other weights held (the paper's Δ) and with the consumer re-fitted, and the test errors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: (label, grid, run-name prefix) of each configuration; a run is ``<prefix>_seed<k>``, the
#: prefix a pattern of ``{width}`` or ``{start width: prefix}``.
CONFIGURATIONS = (
    ("default", "robustness", "width{width}_scale1"),
    ("default, 40 epochs", "longer", {"1": "gated_40_epochs", "2": "gated_40_epochs_width2",
                                      "4": "gated_40_epochs_width4"}),
    ("θ bound to epoch 2 (R7)", "compensated", "bound2_width{width}"),
    ("compensated (R4)–(R6)", "compensated", "compensated_width{width}"),
    ("compensated + θ bound", "compensated", "compensated_bound2_width{width}"),
    ("compensated, κ = 2", "compensated", "compensated_kappa2_width{width}"),
)
WIDTHS = ("1", "2", "4")
OFFLINE_FILE = "compensated_removal.json"


def _runs(root: Path, grid: str, prefix: str) -> list[dict]:
    """metrics.json of every finished seed of one configuration."""
    return [json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
            for directory in sorted((root / grid).glob(f"{prefix}_seed*"))
            if (directory / "metrics.json").exists()]


def found_runs(root: Path, grid: str, prefix) -> dict:
    """{start width: metrics of its finished seeds} of one configuration (starts without runs
    left out)."""
    names = prefix if isinstance(prefix, dict) else {width: prefix.format(width=width)
                                                     for width in WIDTHS}
    return {width: runs for width in WIDTHS if (runs := _runs(root, grid, names[width]))}


def kept_means(found: dict) -> dict:
    """{start width: mean kept units per gate layer over its seeds}."""
    return {width: np.mean([run["architecture"] for run in runs], axis=0)
            for width, runs in found.items()}


def deviations(found: dict):
    """Per gate layer, the largest deviation of a start's mean kept units from their mean over
    the three starts, as a fraction of that mean; None unless every start has runs."""
    kept = kept_means(found)
    if len(kept) < len(WIDTHS):
        return None
    layers = np.array([kept[width] for width in WIDTHS])  # starts × gate layers
    return np.abs(layers - layers.mean(axis=0)).max(axis=0) / layers.mean(axis=0)


def _row(label: str, found: dict) -> str:
    """One configuration: kept units per start, the spread over the starts, errors, shares."""
    kept = kept_means(found)
    cells = [" / ".join(f"{units:.0f}" for units in kept[width]) if width in kept else "–"
             for width in WIDTHS]
    spread = "–"
    if (deviation := deviations(found)) is not None:
        spread = " / ".join(f"{100 * value:+.0f} %" for value in deviation)

    def mean(key, scale=100.0):
        values = [scale * run[key] for runs in found.values() for run in runs if key in run]
        return f"{np.mean(values):.2f}" if values else "–"

    by_rule = [100 * run["decisions"]["share_by_rule"] for runs in found.values()
               for run in runs if "share_by_rule" in (run.get("decisions") or {})]
    errors = " / ".join(f"{100 * np.mean([run['test_error'] for run in found[width]]):.2f}"
                        if width in found else "–" for width in WIDTHS)
    seeds = "/".join(str(len(found.get(width, []))) for width in WIDTHS)
    return (f"| {label} | {seeds} | {' | '.join(cells)} | {spread} | {errors} | "
            f"{mean('decided_1e-3')} | {f'{np.mean(by_rule):.1f}' if by_rule else '–'} |")


def markdown(root: Path) -> str:
    """The per-start table, or "" when none of its departures' runs exist."""
    rows = []
    for label, grid, prefix in CONFIGURATIONS:
        if found := found_runs(root, grid, prefix):
            rows.append(_row(label, found))
    if len(rows) < 2:
        return ""
    header = ["configuration", "seeds (per start)", "kept from 300-100", "from 600-200",
              "from 1200-400", "largest deviation from the mean over starts, per layer",
              "test error % per start", "gates at 0 or 1 %", "certified by the rule %"]
    return "\n".join([
        "## robust by design: the same network from every start?\n",
        "Kept units per gate layer (input pixels / h1 / h2 are the three numbers; means over "
        "the seeds run) from each start, the largest deviation of a layer's kept units from "
        "their mean over the three starts (the target: within ±15 %), the final test error "
        "per start, the share of gates within 1e-3 of 0 or 1, and the share of all gates that "
        "the decision rule (C9) certified (metrics.json's `decisions.share_by_rule`). "
        "Default: grid `robustness` (40 epochs: grid `longer`); the departures "
        "(docs/derivations/compensated.md): grid `compensated`.\n",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""])


def offline_markdown(root: Path) -> str:
    """The offline test's table from ``OFFLINE_FILE``, or "" when it is not there."""
    path = root / OFFLINE_FILE
    if not path.exists():
        return ""
    rows = []
    for report in json.loads(path.read_text(encoding="utf-8")):
        held, refit = report["held"], report["refit"]
        start = {1: "300-100", 2: "600-200", 4: "1200-400"}.get(report["start"],
                                                                  f"×{report['start']}")
        rows.append(
            f"| {start} | {report['seed']} | {' / '.join(map(str, held['exported']))} | "
            f"{' / '.join(map(str, held['all_layers']))} | "
            f"{' / '.join(map(str, refit['all_layers']))} | "
            f"{100 * held['test_error_before']:.2f} | {100 * held['test_error_after']:.2f} | "
            f"{100 * refit['test_error_after']:.2f} |")
    header = ["start", "seed", "exported (inputs / h1 / h2)", "greedy, weights held",
              "greedy, consumer re-fitted", "test error % exported", "held", "re-fitted"]
    return "\n".join([
        "## removal priced with the consumer re-fitted: the offline test\n",
        "`experiments/compensated_removal.py` on the exported networks of finished gated "
        "LeNet-300-100 runs (default recipe, 20 epochs): greedy removal, last hidden layer "
        "first, of the unit whose removal raises the summed training loss least, while that "
        "rise stays below the run's κ; the rise measured with every other weight held (the "
        "paper's Δ) or with the unit's activation replaced by its ridge fit on the layer's "
        "other units and folded into their outgoing weights ((R2)–(R6) of "
        "docs/derivations/compensated.md).\n",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""])


__all__ = ["markdown", "offline_markdown", "found_runs", "kept_means", "deviations",
           "CONFIGURATIONS", "WIDTHS"]
