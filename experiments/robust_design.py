"""The robust-by-design sections of docs/RESULTS.md: kept units per start with and
without each departure, and the offline test of removal priced with the consumer re-fitted.

The paper's title claim is that the method finds the same network from every start. The first
table puts side by side, per configuration, the kept units per gate layer from each start
(300-100, 600-200 and 1200-400 at init scale 1; 300-100 at init scales ½ and 2; means over the
seeds run) and the largest deviation of a layer's kept units from their mean over the three
widths and over all five starts (the target: within ±15 %); the second, the same runs' test
error per start, the share of gates at a vertex and the share of all gates that the decision
rule certified. The default's runs are the ``robustness`` grid's; the departures' are the
``compensated`` grid's (docs/derivations/compensated.md).

The offline section's table reads ``compensated_removal.json`` (written by
``experiments/compensated_removal.py`` from finished runs' exported networks): per run, the
kept units per layer of the exported network, after greedy removal at the run's κ with the
other weights held (the paper's Δ) and with the consumer re-fitted, and the test errors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: The starts of the robustness target: three widths at init scale 1, and 300-100 at init
#: scales ½ and 2.
WIDTHS = ("1", "2", "4")
SCALES = ("0.5x", "2x")
STARTS = WIDTHS + SCALES
START_NAMES = {"1": "300-100", "2": "600-200", "4": "1200-400", "0.5x": "init ×0.5",
               "2x": "init ×2"}

#: How the grids name a start in a run's name (``{start}`` of a prefix pattern).
START_SUFFIXES = {"1": "width1", "2": "width2", "4": "width4", "0.5x": "scale0.5",
                  "2x": "scale2"}

#: (label, grid, run-name prefix) of each configuration; a run is ``<prefix>_seed<k>``, the
#: prefix a pattern of ``{width}`` (the three widths), of ``{start}`` (all five starts, named
#: as in :data:`START_SUFFIXES`) or ``{start: prefix}``.
CONFIGURATIONS = (
    ("default", "robustness", {"1": "width1_scale1", "2": "width2_scale1", "4": "width4_scale1",
                               "0.5x": "width1_scale0.5", "2x": "width1_scale2"}),
    ("default, 40 epochs", "longer", {"1": "gated_40_epochs", "2": "gated_40_epochs_width2",
                                      "4": "gated_40_epochs_width4"}),
    ("θ bound to epoch 2 (R7)", "compensated", "bound2_width{width}"),
    ("compensated (R4)–(R6)", "compensated", "compensated_{start}"),
    ("compensated + θ bound", "compensated", "compensated_bound2_{start}"),
    ("compensated + θ bound to epoch 5", "compensated", "compensated_bound5_{start}"),
    ("compensated + θ bound, certifying at 1", "compensated", "compensated_bound2_at_one_{start}"),
    ("compensated + θ bound, no decision rule", "compensated",
     "compensated_bound2_no_rule_{start}"),
    ("compensated, κ = 2", "compensated", "compensated_kappa2_width{width}"),
)
OFFLINE_FILE = "compensated_removal.json"


def _runs(root: Path, grid: str, prefix: str) -> list[dict]:
    """metrics.json of every finished seed of one configuration."""
    return [json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
            for directory in sorted((root / grid).glob(f"{prefix}_seed*"))
            if (directory / "metrics.json").exists()]


def found_runs(root: Path, grid: str, prefix) -> dict:
    """{start: metrics of its finished seeds} of one configuration (starts without runs left
    out)."""
    if isinstance(prefix, dict):
        names = prefix
    elif "{start}" in prefix:
        names = {start: prefix.format(start=suffix) for start, suffix in START_SUFFIXES.items()}
    else:
        names = {width: prefix.format(width=width) for width in WIDTHS}
    return {start: runs for start in STARTS
            if start in names and (runs := _runs(root, grid, names[start]))}


def kept_means(found: dict) -> dict:
    """{start: mean kept units per gate layer over its seeds}."""
    return {start: np.mean([run["architecture"] for run in runs], axis=0)
            for start, runs in found.items()}


def deviations(found: dict, starts=WIDTHS):
    """Per gate layer, the largest deviation of a start's mean kept units from their mean over
    ``starts`` (default: the three widths), as a fraction of that mean; None unless every one
    of them has runs."""
    kept = kept_means(found)
    if any(start not in kept for start in starts):
        return None
    layers = np.array([kept[start] for start in starts])  # starts × gate layers
    return np.abs(layers - layers.mean(axis=0)).max(axis=0) / layers.mean(axis=0)


def _spread(found: dict, starts) -> str:
    deviation = deviations(found, starts)
    return "–" if deviation is None else " / ".join(f"{100 * v:+.0f} %" for v in deviation)


def _kept_row(label: str, found: dict) -> str:
    """Kept units per start and the spread over the widths and over all five starts."""
    kept = kept_means(found)
    cells = [" / ".join(f"{units:.0f}" for units in kept[start]) if start in kept else "–"
             for start in STARTS]
    seeds = "/".join(str(len(found.get(start, []))) for start in STARTS)
    return (f"| {label} | {seeds} | {' | '.join(cells)} | {_spread(found, WIDTHS)} | "
            f"{_spread(found, STARTS)} |")


def _outcome_row(label: str, found: dict) -> str:
    """Test error per start, the share of gates at a vertex, the share the rule certified."""
    def mean(key, scale=100.0):
        values = [scale * run[key] for runs in found.values() for run in runs if key in run]
        return f"{np.mean(values):.2f}" if values else "–"

    by_rule = [100 * run["decisions"]["share_by_rule"] for runs in found.values()
               for run in runs if "share_by_rule" in (run.get("decisions") or {})]
    errors = " / ".join(f"{100 * np.mean([run['test_error'] for run in found[start]]):.2f}"
                        if start in found else "–" for start in STARTS)
    return (f"| {label} | {errors} | {mean('decided_1e-3')} | "
            f"{f'{np.mean(by_rule):.1f}' if by_rule else '–'} |")


def markdown(root: Path) -> str:
    """The per-start tables, or "" when none of its departures' runs exist."""
    found = [(label, runs) for label, grid, prefix in CONFIGURATIONS
             if (runs := found_runs(root, grid, prefix))]
    if len(found) < 2:
        return ""
    starts = [START_NAMES[start] for start in STARTS]
    kept_header = ["configuration", "seeds per start", *(f"kept from {s}" for s in starts),
                   "largest deviation, 3 widths", "largest deviation, all 5 starts"]
    outcome_header = ["configuration", "test error % from " + " / ".join(starts),
                      "gates at 0 or 1 %", "certified by the rule %"]
    return "\n".join([
        "## robust by design: the same network from every start?\n",
        "Kept units per gate layer (input pixels / h1 / h2; means over the seeds run) from "
        "each start — 300-100, 600-200 and 1200-400 at init scale 1, and 300-100 at init "
        "scales ½ and 2 — and the largest deviation of a layer's kept units from their mean "
        "over the three widths and over all five starts (the target: within ±15 %). Default: "
        "grid `robustness` (40 epochs: grid `longer`); the departures "
        "(docs/derivations/compensated.md): grid `compensated`.\n",
        "| " + " | ".join(kept_header) + " |", "|" + "---|" * len(kept_header),
        *(_kept_row(label, runs) for label, runs in found), "",
        "The same runs' final test error per start, the share of gates within 1e-3 of 0 or 1, "
        "and the share of all gates that the decision rule (C9) certified "
        "(metrics.json's `decisions.share_by_rule`):\n",
        "| " + " | ".join(outcome_header) + " |", "|" + "---|" * len(outcome_header),
        *(_outcome_row(label, runs) for label, runs in found), ""])


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


__all__ = ["markdown", "offline_markdown", "found_runs", "kept_means", "deviations", "STARTS",
           "CONFIGURATIONS", "WIDTHS"]
