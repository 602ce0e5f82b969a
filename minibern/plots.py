"""Figures drawn from a run directory alone (``metrics.json`` + ``history.npz``).

Any plot can be redrawn later from the files a run wrote; nothing needs the live process.
Matplotlib is optional (``pip install "minibern[plots]"``) and imported only here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from minibern.backend import host as np


def pyplot():
    """matplotlib's pyplot: on the Agg backend (files only: no display needed), except inside a
    Jupyter kernel, whose inline backend is kept so that figures also show in the notebook."""
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError("plotting needs matplotlib: pip install \"minibern[plots]\"") from error
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, rect=None) -> Path:
    """Save ``fig`` as a PNG at ``path`` (tight layout inside ``rect``, the figure's fraction
    (left, bottom, right, top) left to the axes; 120 dpi), close it, return the path."""
    plt = pyplot()
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def load_run(run_dir) -> tuple[dict, dict]:
    """``(metrics, history)`` of a run directory (history as host arrays)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "history.npz") as archive:
        history = {key: archive[key] for key in archive.files}
    return metrics, history


def integer_epochs(ax, label: str = "epoch") -> None:
    """Label ``ax``'s x axis with whole epochs (no 'epoch 1.0' ticks)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def epoch_label(epoch: float) -> str:
    """``epoch 3`` at an epoch's end, ``epoch 2.4`` within one (θ snapshots)."""
    return f"epoch {epoch:.0f}" if abs(epoch - round(epoch)) < 1e-9 else f"epoch {epoch:.1f}"


def _run_label(metrics) -> str:
    return f"{metrics['model']}, seed {metrics['seed']}, backend {metrics['backend']}"


#: plot_training's figures: (file, history key, y label, scale, the question it answers).
TRAINING_PANELS = (
    ("loss.png", "train_loss", "mean training loss (cross-entropy, nats)", "log",
     "Is the training loss still falling?"),
    ("val_error.png", "val_error", "validation error (%)", "linear",
     "How does the validation error evolve?"),
    ("epoch_seconds.png", "epoch_seconds", "time per epoch (s)", "linear",
     "How long does each epoch take?"))


def plot_training(run_dir, out_dir=None) -> list[Path]:
    """Training loss, validation error and seconds per epoch, one PNG each; returns the paths."""
    plt = pyplot()
    metrics, history = load_run(run_dir)
    out_dir = Path(out_dir or run_dir)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    paths = []
    for filename, key, ylabel, scale, question in TRAINING_PANELS:
        values = 100 * history[key] if key == "val_error" else history[key]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(epochs, values, marker="o", label=key.replace("_", " ") + " per epoch")
        ax.set_ylabel(ylabel)
        ax.set_yscale(scale if (np.asarray(values) > 0).any() else "linear")  # log needs a > 0
        ax.set_title(f"{question}\n{_run_label(metrics)}", fontsize=9)
        ax.grid(alpha=0.3)
        integer_epochs(ax)
        if key == "val_error":
            ax.axhline(100 * metrics["test_error"], color="C3", ls="--",
                       label=f"final test error {100 * metrics['test_error']:.2f}%")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out_dir / filename))
    return paths


def _line_panel(plt, epochs, curves, ylabel, yscale, path, title, ylim=None) -> Path:
    """One PNG of ``(values, label[, (colour, line style)])`` curves against the epoch, with a
    legend beside the axes and ``title`` (the question the figure answers)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for values, label, *style in curves:
        color, linestyle = style[0] if style else (None, "-")
        ax.plot(epochs, values, marker="o" if linestyle == "-" else None, label=label,
                color=color, linestyle=linestyle)
    ax.set_ylabel(ylabel)
    ax.set_yscale(yscale)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    integer_epochs(ax)
    return save_figure(fig, path)


def plot_gates(run_dir, out_dir=None) -> list[Path]:
    """For a gated run: θ histograms per layer over the epochs, decided fraction and units per
    layer (kept, θ ≥ ½, solid; still in the weight arrays, i.e. not yet removed, dashed)."""
    plt = pyplot()
    metrics, history = load_run(run_dir)
    if "theta_snapshots" not in history:
        raise ValueError(f"{run_dir} is not a gated run (no theta_snapshots in history.npz); "
                         "train with --gates")
    out_dir = Path(out_dir or run_dir)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    paths = [plot_theta_histograms(run_dir, out_dir)]

    title = _run_label(metrics)
    curves = [(100 * history[key], f"θ within {within} of 0 or 1") for key, within in
              (("decided_1e-2", "0.01"), ("decided_1e-3", "1e-3"))]
    paths.append(_line_panel(plt, epochs, curves, "gates decided (% of all gates)", "linear",
                             out_dir / "theta_decided.png", ylim=(0, 100),
                             title=f"How many gates has θ driven to 0 or 1?\n{title}"))
    curves = []
    for index, gate in enumerate(metrics["gates"]):
        color = f"C{index}"
        curves.append((history[f"kept_{gate['name']}"], f"{gate['name']}: kept (θ ≥ ½)",
                       (color, "-")))
        if f"units_{gate['name']}" in history:
            curves.append((history[f"units_{gate['name']}"],
                           f"{gate['name']}: still in the arrays", (color, "--")))
    paths.append(_line_panel(plt, epochs, curves, "units at the epoch's end (log scale)", "log",
                             out_dir / "units_per_layer.png",
                             title="How many units does each layer keep, epoch by epoch?"
                                   f"\n{title}"))
    return paths


def _gate_blocks(metrics, history) -> list[tuple[str, slice]]:
    """``(gate name, columns)`` of ``theta_snapshots`` per gate layer (original units, in order)."""
    blocks, start = [], 0
    for gate in metrics["gates"]:
        blocks.append((gate["name"], slice(start, start + int(gate["total"]))))
        start += int(gate["total"])
    if start != history["theta_snapshots"].shape[1]:
        raise ValueError(f"metrics.json's gates cover {start} units, theta_snapshots has "
                         f"{history['theta_snapshots'].shape[1]} columns; the run files do not "
                         "belong together")
    return blocks


def _snapshot_epochs(history):
    """The fractional epoch of every θ snapshot (the last one is the end of the last epoch)."""
    steps = np.asarray(history["theta_snapshot_steps"], dtype=np.float64)
    return steps * len(history["train_loss"]) / max(steps[-1], 1.0)


#: θ trajectories' colours by where a gate ended, and their legend.
ENDS = (("C0", "ends at 1 (kept)"), ("C3", "ends at 0 (removed)"), ("0.5", "ends between"))


def _vertex_note(layer) -> str:
    """How close the gates of ``layer`` (snapshots × gates) came to the vertices 0 and 1 over
    the whole run: the counts at the end if some reached one, else the closest approach."""
    final = layer[-1]
    if np.isin(layer, (0.0, 1.0)).any():
        return f"at the end {int((final == 1).sum())} at 1, {int((final == 0).sum())} at 0"
    return (f"none ever at 0 or 1: θ from {layer.min():.1e} to 1 − {1 - layer.max():.1e}")


def draw_theta_trajectories(axes, run_dir, per_layer: int = 40, seed: int = 0,
                            label: str = "") -> None:
    """Draw θ of a random sample of ``per_layer`` gates per gate layer of ``run_dir`` over
    training, one gate layer per axis of ``axes``, coloured by where θ ended (:data:`ENDS`);
    ``label`` starts each panel's title, which says how close the layer's gates (all of them,
    over the whole run) came to 0 and 1. The vertices are drawn dashed, inside the y range, so
    that a θ that stays strictly inside is seen not to touch them."""
    metrics, history = load_run(run_dir)
    snaps, epochs = history["theta_snapshots"], _snapshot_epochs(history)
    blocks = _gate_blocks(metrics, history)
    start = (metrics.get("gate_config") or {}).get("theta_init")
    if start is not None:  # every gate starts at θ₀ at epoch 0 (not counted by the titles)
        snaps = np.vstack([np.full((1, snaps.shape[1]), float(start)), snaps])
        epochs = np.concatenate([[0.0], epochs])
    if len(axes) != len(blocks):
        raise ValueError(f"{run_dir} has {len(blocks)} gate layers, {len(axes)} axes were given")
    rng = np.random.default_rng(seed)
    for ax, (name, columns) in zip(axes, blocks):
        layer = snaps[:, columns]
        sample = np.sort(rng.choice(layer.shape[1], min(per_layer, layer.shape[1]), replace=False))
        final = layer[-1]
        for j in sample:
            color = ENDS[0][0] if final[j] == 1.0 else ENDS[1][0] if final[j] == 0.0 else ENDS[2][0]
            ax.plot(epochs, layer[:, j], color=color, lw=0.8, alpha=0.7)
        for vertex in (0.0, 1.0):
            ax.axhline(vertex, color="k", ls="--", lw=0.6)
        ax.set_title(f"{label}{name}: {len(sample)} of {layer.shape[1]} gates\n"
                     f"{_vertex_note(layer[1:] if start is not None else layer)}", fontsize=8)
        ax.set_ylim(-0.08, 1.08)
        ax.grid(alpha=0.3)
        ax.set_xlim(epochs[0], epochs[-1])
        count = snapshots_per_epoch(history)
        integer_epochs(ax, f"epoch ({count} θ snapshot{'' if count == 1 else 's'} per epoch)")
    axes[0].set_ylabel("θ (probability the unit is kept)", fontsize=8)


def snapshots_per_epoch(history) -> int:
    """How many times per epoch the run recorded θ (history.npz's ``theta_snapshot_steps``)."""
    return round(len(history["theta_snapshot_steps"]) / max(len(history["train_loss"]), 1))


def _trajectory_legend(fig, title: str) -> tuple:
    """The colours' legend below the panels and ``title`` above them; the layout rect left."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color, label=text) for color, text in ENDS]
    handles.append(Line2D([], [], color="k", ls="--", lw=0.6, label="θ = 0 and θ = 1"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return (0, 0.05, 1, 1)


def _gate_grid(plt, runs: dict, width: float, height: float):
    """A figure with one row per run of ``runs`` ({label: run directory}) and one column per
    gate layer (every run must have the same gate layers)."""
    columns = {len(_gate_blocks(*load_run(run_dir))) for run_dir in runs.values()}
    if len(columns) != 1:
        raise ValueError(f"the runs have different numbers of gate layers: {sorted(columns)}")
    n = columns.pop()
    return plt.subplots(len(runs), n, figsize=(width * n, height * len(runs)), squeeze=False,
                        sharey=True)


def plot_theta_trajectories(run_dir, out_dir=None, per_layer: int = 40, seed: int = 0) -> Path:
    """``theta_trajectories.png``: :func:`draw_theta_trajectories`, one panel per gate layer."""
    fig, axes = _gate_grid(pyplot(), {"": run_dir}, 4.2, 3.6)
    draw_theta_trajectories(axes[0], run_dir, per_layer, seed)
    rect = _trajectory_legend(fig, "Where does each gate's θ go, and when does it get there?")
    return save_figure(fig, Path(out_dir or run_dir) / "theta_trajectories.png", rect=rect)


def compare_theta_trajectories(runs: dict, path, per_layer: int = 40, seed: int = 0) -> Path:
    """One row of :func:`draw_theta_trajectories` per run of ``runs`` ({label: run directory},
    the same gate layers), the same gates sampled in every row; saved at ``path``."""
    fig, axes = _gate_grid(pyplot(), runs, 4.2, 3.4)
    for row, (label, run_dir) in zip(axes, runs.items()):
        draw_theta_trajectories(row, run_dir, per_layer, seed, label=f"{label}: ")
    rect = _trajectory_legend(fig, "Do the gates' θ reach 0 and 1? "
                              + " vs ".join(runs) + ", the same gates in each row")
    return save_figure(fig, path, rect=rect)


def _theta_histogram(ax, values, color, title) -> None:
    ax.hist(values, bins=np.linspace(0, 1, 41), color=color)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=8)


def _moments(count: int, snapshots: int) -> list[int]:
    """Up to ``count`` of ``snapshots`` rows spread evenly over the run, first and last kept."""
    return sorted({int(round(i)) for i in np.linspace(0, snapshots - 1, count)})


def plot_theta_histograms(run_dir, out_dir=None, moments: int = 4) -> Path:
    """``theta_hist.png``: histograms of θ per gate layer (rows) at up to ``moments`` snapshots
    spread over the run (columns); removed units count at 0."""
    plt = pyplot()
    metrics, history = load_run(run_dir)
    snaps, epochs = history["theta_snapshots"], _snapshot_epochs(history)
    blocks = _gate_blocks(metrics, history)
    rows = _moments(moments, len(snaps))
    fig, axes = plt.subplots(len(blocks), len(rows), figsize=(3.2 * len(rows), 2.2 * len(blocks)),
                             squeeze=False, sharex=True)
    for r, (name, columns) in enumerate(blocks):
        for c, row in enumerate(rows):
            _theta_histogram(axes[r, c], snaps[row, columns], f"C{r}",
                             f"{name}, {epoch_label(epochs[row])}")
        axes[r, 0].set_ylabel("gates (log scale)")
    for ax in axes[-1]:
        ax.set_xlabel("θ (removed units at 0)")
    fig.suptitle(f"Does every gate's θ converge to 0 or 1? {_run_label(metrics)}", fontsize=10)
    return save_figure(fig, Path(out_dir or run_dir) / "theta_hist.png")


def compare_theta_histograms(runs: dict, path) -> Path:
    """Histograms of the final θ per gate layer (columns), one row per run of ``runs``
    ({label: run directory}); the title counts the gates exactly at 0 and 1 and within 1e-3 of
    either. Saved at ``path``."""
    fig, axes = _gate_grid(pyplot(), runs, 3.4, 2.6)
    for r, (label, run_dir) in enumerate(runs.items()):
        metrics, history = load_run(run_dir)
        final = history["theta_snapshots"][-1]
        for ax, (name, columns) in zip(axes[r], _gate_blocks(metrics, history)):
            theta = final[columns]
            near = int(np.sum(np.minimum(theta, 1 - theta) <= 1e-3))
            _theta_histogram(ax, theta, f"C{r}",
                             f"{label}: {name}\n{int(np.isin(theta, (0.0, 1.0)).sum())} exactly "
                             f"0 or 1, {near} within 1e-3, of {theta.size}")
            ax.set_xlabel("final θ")
        axes[r, 0].set_ylabel("gates (log scale)")
    fig.suptitle("Where do the gates' θ end? " + " vs ".join(runs), fontsize=10)
    return save_figure(fig, path)


def plot_input_pixels(run_dir, out_dir=None, moments: int = 3) -> Path | None:
    """``input_pixels.png`` for a run with a gate on the 784 input pixels: θ of every pixel as a
    28 × 28 image at a few moments, and the pixels that survive (θ ≥ ½) at the end. None if the
    run has no such gate."""
    metrics, history = load_run(run_dir)
    blocks = [(name, columns) for name, columns in _gate_blocks(metrics, history)
              if columns.stop - columns.start == 28 * 28 and metrics.get("model") == "lenet300"]
    if not blocks:
        return None
    plt = pyplot()
    name, columns = blocks[0]
    snaps, epochs = history["theta_snapshots"], _snapshot_epochs(history)
    rows = _moments(moments, len(snaps))
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(3 * (len(rows) + 1), 3.4))
    for ax, row in zip(axes, rows):
        image = ax.imshow(snaps[row, columns].reshape(28, 28), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"θ of {name}, {epoch_label(epochs[row])}", fontsize=8)
    kept = snaps[-1, columns].reshape(28, 28) >= 0.5
    axes[-1].imshow(kept, cmap="gray")
    axes[-1].set_title(f"kept at the end (θ ≥ ½, white):\n{int(kept.sum())} of 784 pixels",
                       fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[-2], fraction=0.046, pad=0.04).set_label("θ of the pixel's gate")
    fig.suptitle(f"Which input pixels does the network keep? {_run_label(metrics)}", fontsize=10)
    return save_figure(fig, Path(out_dir or run_dir) / "input_pixels.png")


def plot_run(run_dir, out_dir=None) -> list[Path]:
    """Every figure that applies to a run directory: the training curves, and for a gated run
    the θ trajectories, θ histograms, decided share, units per layer and (LeNet-300-100) the
    surviving input pixels. Returns the paths written."""
    metrics, history = load_run(run_dir)
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = plot_training(run_dir, out_dir)
    if "theta_snapshots" in history and metrics.get("gates"):
        paths += plot_gates(run_dir, out_dir)
        paths.append(plot_theta_trajectories(run_dir, out_dir))
        pixels = plot_input_pixels(run_dir, out_dir)
        paths += [pixels] if pixels else []
    return paths


def main(argv=None) -> int:
    """``python -m minibern plot RUN_DIR [--out DIR]``: draw every figure that applies."""
    import argparse
    import sys
    import zipfile

    parser = argparse.ArgumentParser(prog="python -m minibern plot",
                                     description="Draw every figure that applies to a run "
                                                 "directory (of `python -m minibern train` or a "
                                                 "tutorial) as PNG files.")
    parser.add_argument("run_dir", help="a run directory holding metrics.json and history.npz")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    missing = [name for name in ("metrics.json", "history.npz") if not (run_dir / name).is_file()]
    if not run_dir.is_dir() or missing:
        what = "is not a directory" if not run_dir.is_dir() else f"has no {' or '.join(missing)}"
        print(f"error: {run_dir} {what}; pass the --out folder of a finished run of "
              "`python -m minibern train` or of a tutorial", file=sys.stderr)
        return 2
    try:
        paths = plot_run(run_dir, args.out)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OSError, RuntimeError,
            EOFError, zipfile.BadZipFile) as error:  # unreadable, partial or foreign files
        kind = "" if isinstance(error, ValueError) else type(error).__name__
        print(f"error: cannot plot {run_dir}: {kind}{' ' if kind else ''}{error}. The run files "
              "may be incomplete (a run still in its first epoch?) or from another program",
              file=sys.stderr)
        return 1
    print(f"{len(paths)} figures in {Path(args.out or run_dir)}: "
          + ", ".join(path.name for path in paths))
    return 0
