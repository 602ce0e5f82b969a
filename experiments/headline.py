"""The head of docs/RESULTS.md: our networks beside the published ones, the size–error figure,
and whether the kept width depends on the start.

Our rows pool the seeds of the default recipe (20 epochs): LeNet-300-100 from grid
``lenet300`` (``gated``, ``plain``), LeNet-5-Caffe from grid ``lenet5``; their whole-run times
come from grid ``timing``, whose runs ran one at a time (the other grids ran two or three at a
time on a shared 2-core machine, so their seconds are not comparable across tables). The
figure adds grid ``kappa`` (κ per unit below the default 5.5). The robustness rows come from
:mod:`robust_design`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from published import PUBLISHED, references_markdown, size, source_cell
from robust_design import CONFIGURATIONS, STARTS, WIDTHS, deviations, found_runs, kept_means

FIGURE = "error_vs_params.png"
DEFAULT_KAPPA = 5.5
#: (network, method, grid of its runs, configuration, grid of its timing runs, configuration)
OURS = (
    ("LeNet-300-100", "plain", "lenet300", "plain", "timing", "plain"),
    ("LeNet-300-100", "gated", "lenet300", "gated", "timing", "gated"),
    ("LeNet-300-100", "gated, no decision rule", "lenet300", "gated_no_rule", "timing",
     "gated_no_rule"),
    ("LeNet-5-Caffe", "plain", "lenet5", "plain", "timing", "lenet5_plain"),
    ("LeNet-5-Caffe", "gated", "lenet5", "gated", "timing", "lenet5_gated"),
)
KAPPA_SWEEP = (("0.5", "kappa", "kappa0.5"), ("1", "kappa", "kappa1"),
               ("2.5", "kappa", "kappa2.5"), (str(DEFAULT_KAPPA), "lenet300", "gated"))
#: robustness rows of the head: labels of :data:`robust_design.CONFIGURATIONS`
ROBUST_ROWS = ("default", "default, 40 epochs", "compensated (R4)–(R6)",
               "compensated + θ bound", "compensated + θ bound, no decision rule")
LAYERS = ("inputs", "h1", "h2")


def metrics(root: Path, grid: str, configuration: str) -> list[dict]:
    """metrics.json of every finished seed of one configuration."""
    return [json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
            for directory in sorted((root / grid).glob(f"{configuration}_seed*"))
            if (directory / "metrics.json").exists()]


def spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def number(values, digits: int = 0, separator: bool = False) -> str:
    """``mean ± std`` over the seeds; the value alone for one seed or when all seeds agree."""
    mean, std = spread(values)
    form = f",.{digits}f" if separator else f".{digits}f"
    if len(values) == 1 or std == 0:
        return format(mean, form)
    return f"{format(mean, form)} ± {format(std, form)}"


def pooled(runs: list[dict]) -> dict:
    """Architecture, parameters, FLOPs and test error (%) of one configuration's seeds."""
    return {"architecture": "-".join(f"{units:.0f}" for units in
                                     np.mean([run["architecture"] for run in runs], axis=0)),
            "params": [run["params"] for run in runs],
            "flops": [run["flops_per_example"] for run in runs],
            "error": [100 * run["test_error"] for run in runs], "seeds": len(runs)}


def run_seconds(runs: list[dict]) -> str:
    """Whole-run training time (all epochs' training passes), mean over runs, and their count."""
    if not runs:
        return "–"
    seconds = [sum(run["epoch_seconds"]) for run in runs]
    return f"{np.mean(seconds):.0f} s ({len(runs)} run{'s' if len(runs) > 1 else ''})"


def ours(root: Path) -> list[tuple[str, str, dict, str]]:
    """(network, method, pooled numbers, time) of each of our rows that has runs."""
    rows = []
    for network, method, grid, configuration, timing_grid, timing in OURS:
        runs = metrics(root, grid, configuration)
        if runs:
            rows.append((network, method, pooled(runs),
                         run_seconds(metrics(root, timing_grid, timing))))
    return rows


def table(root: Path) -> str:
    """Our rows and the published ones, network by network (9 columns)."""
    header = ["network", "method", "architecture", "params", "FLOPs", "test error %",
              "whole run", "seeds", "source, protocol"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    found = ours(root)
    for network in ("LeNet-300-100", "LeNet-5-Caffe"):
        for net, method, numbers, seconds in found:
            if net == network:
                lines.append(
                    f"| {network} | {method} (ours) | {numbers['architecture']} | "
                    f"{number(numbers['params'], separator=True)} | "
                    f"{number(numbers['flops'], separator=True)} | "
                    f"{number(numbers['error'], 2)} | {seconds} | {numbers['seeds']} | "
                    "this repository, 20 epochs, final epoch |")
        for net, method, architecture, error, key, via, protocol in PUBLISHED:
            if net == network:
                params, flops = size(network, architecture)
                lines.append(f"| {network} | {method} | {architecture} | {params:,} | "
                             f"{flops:,} | {error} | – | – | {source_cell(key, via)}; "
                             f"{protocol} |")
    return "\n".join(lines) + "\n"


def summary(root: Path) -> str:
    """Two or three sentences with the numbers of :func:`table`: the size and error of gated
    against plain per network, and the whole-run times of LeNet-300-100."""
    found = {(network, method): (numbers, seconds)
             for network, method, numbers, seconds in ours(root)}
    sentences = []
    for network in ("LeNet-300-100", "LeNet-5-Caffe"):
        if (network, "gated") not in found or (network, "plain") not in found:
            continue
        gated, plain = found[network, "gated"][0], found[network, "plain"][0]
        ratio = np.mean(plain["params"]) / np.mean(gated["params"])
        sentences.append(
            f"Gated {network} keeps {ratio:.1f}× fewer parameters than the plain network "
            f"({np.mean(gated['params']):,.0f} against {np.mean(plain['params']):,.0f}) at "
            f"{np.mean(gated['error']):.2f} % test error against {np.mean(plain['error']):.2f} % "
            f"(means over {gated['seeds']} and {plain['seeds']} seeds).")
    if ("LeNet-300-100", "gated, no decision rule") in found:
        free = found["LeNet-300-100", "gated, no decision rule"][0]
        sentences.append(
            "Gated is the default, whose decision rule (a departure from the paper, "
            "docs/derivations/convergence.md (C9)–(C10)) certifies gates at 0; without it "
            f"LeNet-300-100 keeps {free['architecture']} at "
            f"{np.mean(free['error']):.2f} % ({free['seeds']} seeds).")
    errors = {network: sorted(float(row[3]) for row in PUBLISHED if row[0] == network)
              for network in ("LeNet-300-100", "LeNet-5-Caffe")}
    if sentences:
        ranges = [f"{errs[0]:.1f}–{errs[-1]:.1f} % ({network})" if errs[0] != errs[-1]
                  else f"{errs[0]:.1f} % ({network})" for network, errs in errors.items() if errs]
        sentences.append("The published structured-pruning results below sit at "
                         + " and ".join(ranges) + "; Louizos et al. (L0) train 200 epochs to "
                         "our 20.")
    return " ".join(sentences) + "\n" if sentences else ""


def robustness(root: Path) -> str:
    """The kept units from each start and their largest deviation, for :data:`ROBUST_ROWS`,
    and a sentence comparing the rows' largest deviations and errors."""
    rows, worst = [], {}
    for label, grid, prefix in CONFIGURATIONS:
        if label not in ROBUST_ROWS:
            continue
        found = found_runs(root, grid, prefix)
        deviation = deviations(found)
        if deviation is None:
            continue
        kept = kept_means(found)
        layer = int(np.argmax(deviation))
        error = np.mean([100 * run["test_error"] for runs in found.values() for run in runs])
        every = deviations(found, STARTS)
        every = "–" if every is None else (f"{100 * every.max():.0f} % "
                                          f"({LAYERS[int(np.argmax(every))]})")
        worst[label] = (100 * deviation[layer], LAYERS[layer], error, every)
        rows.append(f"| {label} | "
                    + " | ".join("-".join(f"{units:.0f}" for units in kept[w]) for w in WIDTHS)
                    + f" | {100 * deviation[layer]:.0f} % ({LAYERS[layer]}) | {every} | "
                    + f"{error:.2f} | " + "/".join(str(len(found[w])) for w in WIDTHS)
                    + f" | `{grid}` |")
    if not rows:
        return ""
    header = ["LeNet-300-100", "kept from 300-100", "from 600-200", "from 1200-400",
              "largest deviation", "with init ×½, ×2", "test error %", "seeds per start",
              "grid"]
    outcome = "; ".join(f"{label}: {value:.0f} % ({layer}) over the widths"
                        + (f", {every} over all five starts" if every != "–" else "")
                        + f", at {error:.2f} % test error"
                        for label, (value, layer, error, every) in worst.items())
    return "\n".join([
        "### Does the kept network depend on the start?\n",
        "The paper's claim: the same final size whatever the starting width. Below, the kept "
        "units (inputs-h1-h2, means over seeds) from 300-100, 600-200 and 1200-400, the "
        "largest deviation of one layer's kept units from their mean over the three starts "
        "(and over five, with 300-100 at init scales ½ and 2 where those runs exist), and the "
        "test error over all starts and seeds. Default: the paper's removal "
        "estimator; compensated: the consumer re-fitted (docs/derivations/compensated.md); "
        "θ bound: θ kept inside [0.05, 0.95] for the first two epochs (R7 there). Every "
        "row uses the decision rule (C9) unless it says otherwise. "
        "Every configuration: section \"robust by design\" in the appendix.\n",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, "",
        f"Largest deviation over the starts — {outcome}.\n"])


def draw_figure(root: Path, path: Path) -> bool:
    """Test error against parameters (log scale), one panel per network: our κ sweep as a line
    with error bars over seeds, plain as a point, the published results as labelled points.
    False (nothing written) when matplotlib is missing or no run exists."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sweep = [(kappa, pooled(runs)) for kappa, grid, name in KAPPA_SWEEP
             if (runs := metrics(root, grid, name))]
    found = {(network, method): numbers for network, method, numbers, _ in ours(root)}
    if not sweep and not found:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, network in zip(axes, ("LeNet-300-100", "LeNet-5-Caffe")):
        if network == "LeNet-300-100" and sweep:
            x = [spread(numbers["params"]) for _, numbers in sweep]
            y = [spread(numbers["error"]) for _, numbers in sweep]
            axis.errorbar([m for m, _ in x], [m for m, _ in y], xerr=[s for _, s in x],
                          yerr=[s for _, s in y], marker="o", capsize=3, color="C0",
                          label="gated (ours), κ sweep")
            for index, ((kappa, _), (px, _), (py, _)) in enumerate(zip(sweep, x, y)):
                axis.annotate(f"κ={kappa}", (px, py), textcoords="offset points",
                              xytext=(6, 6) if index < len(sweep) / 2 else (-38, -14),
                              fontsize=8, color="C0")
        elif (network, "gated") in found:
            numbers = found[network, "gated"]
            (px, sx), (py, sy) = spread(numbers["params"]), spread(numbers["error"])
            axis.errorbar([px], [py], xerr=[sx], yerr=[sy], marker="o", capsize=3,
                          color="C0", label=f"gated (ours), κ={DEFAULT_KAPPA}")
        if (network, "plain") in found:
            numbers = found[network, "plain"]
            (px, sx), (py, sy) = spread(numbers["params"]), spread(numbers["error"])
            axis.errorbar([px], [py], yerr=[sy], marker="s", capsize=3, color="C3",
                          label="plain (ours)")
        peers = [row for row in PUBLISHED if row[0] == network]
        for index, (_, method, architecture, error, *_rest) in enumerate(peers):
            params, _ = size(network, architecture)
            axis.scatter([params], [float(error)], marker="^", color="0.35",
                         label="published" if index == 0 else None)
            axis.annotate(method, (params, float(error)), textcoords="offset points",
                          xytext=(4, -11 if index % 2 == 0 else 5), fontsize=8, color="0.25")
        axis.set_xscale("log")
        axis.set_xlabel("parameters kept")
        axis.set_ylabel("test error %")
        axis.set_title(network)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Test error against kept parameters (ours: 20 epochs, final epoch, "
                    "mean ± std over seeds)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return True


def markdown(root: Path, figures: Path) -> str:
    """The head of the page: summary, table, references, figure, robustness."""
    parts = ["## Headline\n"]
    text = summary(root)
    if text:
        parts.append(text)
    parts.append(table(root))
    parts.append(
        "*params*, *FLOPs*: of the deterministic network after removal (weights and biases; "
        "multiply–accumulates per example), computed the same way for the published "
        "architectures. *whole run*: the training passes of all 20 epochs (evaluation and "
        "checkpoints not counted), from grid `timing`: one BLAS thread, on the shared 2-core "
        "CPU machine, one run at a time with nothing else running; in brackets the runs "
        "averaged. *seeds*: of the size and error columns.\n")
    parts.append(references_markdown())
    if draw_figure(root, figures / FIGURE):
        parts.append(f"![test error against parameters](figures/{FIGURE})\n")
    section = robustness(root)
    if section:
        parts.append(section)
    return "\n".join(parts)


__all__ = ["markdown", "table", "summary", "robustness", "draw_figure", "FIGURE"]
