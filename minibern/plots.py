"""Figures drawn from a run directory alone (``metrics.json`` + ``history.npz``).

Any plot can be redrawn later from the files a run wrote; nothing needs the live process.
Matplotlib is optional (``pip install "minibern[plots]"``) and imported only here.
"""
from __future__ import annotations

import json
from pathlib import Path

from minibern.backend import host as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only: no display needed)."""
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError("plotting needs matplotlib: pip install \"minibern[plots]\"") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_run(run_dir) -> tuple[dict, dict]:
    """``(metrics, history)`` of a run directory (history as host arrays)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "history.npz") as archive:
        history = {key: archive[key] for key in archive.files}
    return metrics, history


def plot_training(run_dir, out_dir=None) -> list[Path]:
    """Training loss, validation error and seconds per epoch, one PNG each; returns the paths."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    metrics, history = load_run(run_dir)
    out_dir = Path(out_dir or run_dir)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    title = f"{metrics['model']}, seed {metrics['seed']}, backend {metrics['backend']}"
    panels = [("loss.png", history["train_loss"], "mean training loss", "log"),
              ("val_error.png", 100 * history["val_error"], "validation error (%)", "linear"),
              ("epoch_seconds.png", history["epoch_seconds"], "seconds per epoch", "linear")]
    paths = []
    for filename, values, label, scale in panels:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(epochs, values, marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_yscale(scale)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if filename == "val_error.png":
            ax.axhline(100 * metrics["test_error"], color="C3", ls="--",
                       label=f"final test error {100 * metrics['test_error']:.2f}%")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=120)
        plt.close(fig)
        paths.append(out_dir / filename)
    return paths


def _line_panel(plt, epochs, curves, ylabel, yscale, path, ylim=None) -> Path:
    """One PNG of ``(values, label)`` curves against the epoch."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for values, label, *style in curves:  # optional style: (colour, line style)
        color, linestyle = style[0] if style else (None, "-")
        ax.plot(epochs, values, marker="o" if linestyle == "-" else None, label=label,
                color=color, linestyle=linestyle)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_yscale(yscale)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gates(run_dir, out_dir=None) -> list[Path]:
    """For a gated run: θ histograms over time, decided fraction and units per layer (kept,
    θ ≥ ½, solid; still in the weight arrays, i.e. not yet physically removed, dashed)."""
    plt = pyplot()
    metrics, history = load_run(run_dir)
    if "theta_snapshots" not in history:
        raise ValueError(f"{run_dir} is not a gated run (no theta_snapshots in history.npz); "
                         "train with --gates")
    out_dir = Path(out_dir or run_dir)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    paths = []

    snaps, steps = history["theta_snapshots"], history["theta_snapshot_steps"]
    picks = sorted({0, len(snaps) // 2, len(snaps) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.2), sharey=True)
    for ax, row in zip(np.atleast_1d(axes), picks):
        ax.hist(snaps[row], bins=np.linspace(0, 1, 41), color="C0")
        ax.set_yscale("log")
        ax.set_xlabel("θ")
        ax.set_title(f"step {int(steps[row])}", fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("gates")
    fig.suptitle("θ of every gate converging to 0 or 1", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "theta_hist.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    curves = [(100 * history[key], label) for key, label in
              (("decided_1e-2", "within 0.01 of 0 or 1"), ("decided_1e-3", "within 1e-3"))]
    paths.append(_line_panel(plt, epochs, curves, "gates decided (%)", "linear",
                             out_dir / "theta_decided.png", ylim=(0, 100)))
    curves = []
    for index, gate in enumerate(metrics["gates"]):
        color = f"C{index}"
        curves.append((history[f"kept_{gate['name']}"], f"{gate['name']} kept (θ ≥ ½)", (color, "-")))
        if f"units_{gate['name']}" in history:
            curves.append((history[f"units_{gate['name']}"], "in the arrays", (color, "--")))
    paths.append(_line_panel(plt, epochs, curves, "units", "log", out_dir / "units_per_layer.png"))
    return paths
