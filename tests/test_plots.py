"""The figures of minibern.plots, drawn from a small run directory written here: whole-epoch
ticks, and θ trajectories that say how close θ came to 0 and 1."""
import json

import numpy as np
import pytest

from minibern import plots

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.host_only


def _run_dir(folder, theta):
    """A gated run directory of one gate layer: ``theta`` (snapshots × gates), five snapshots
    per epoch, from θ₀ = 1."""
    snapshots, gates = theta.shape
    epochs = snapshots // 5
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "model": "lenet300", "seed": 0, "backend": "numpy", "test_error": 0.1,
        "gates": [{"name": "gate1", "total": gates}], "gate_config": {"theta_init": 1.0}}))
    np.savez(folder / "history.npz", train_loss=np.linspace(1, 0.5, epochs),
             val_error=np.full(epochs, 0.1), epoch_seconds=np.ones(epochs),
             theta_snapshots=theta, theta_snapshot_steps=np.arange(1, snapshots + 1) * 10,
             decided_1e_2=np.zeros(epochs))
    return folder


def _trajectories(run):
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 1, squeeze=False)
    plots.draw_theta_trajectories(axes[0], run, per_layer=5)
    ax = axes[0, 0]
    fig.canvas.draw()
    found = ax.get_title(), ax.get_ylim(), ax.get_xticks(), ax.get_xlabel()
    plt.close(fig)
    return found


def test_trajectories_that_stay_inside_say_so_and_show_the_vertices(tmp_path):
    rng = np.random.default_rng(0)
    inside = rng.uniform(0.01, 0.99, size=(15, 8))  # 3 epochs, never 0 or 1
    inside[4, 2], inside[9, 7] = 1e-4, 1 - 2e-3  # the closest approaches (θ₀ = 1 not counted)
    title, (low, high), ticks, xlabel = _trajectories(_run_dir(tmp_path / "fixed", inside))
    assert "none ever at 0 or 1: θ from 1.0e-04 to 1 − 2.0e-03" in title
    assert low < 0 and high > 1  # the dashed vertices lie inside the drawing
    assert np.array_equal(ticks, np.round(ticks)) and "5 θ snapshots per epoch" in xlabel
    decided = inside.copy()
    decided[-5:, :3], decided[-5:, 3:6] = 1.0, 0.0
    title, *_ = _trajectories(_run_dir(tmp_path / "decided", decided))
    assert "at the end 3 at 1, 3 at 0" in title


def test_every_training_figure_ticks_whole_epochs(tmp_path, monkeypatch):
    run = _run_dir(tmp_path / "run", np.full((15, 4), 0.5))
    seen = []
    original = plots.save_figure

    def spy(fig, path, rect=None):
        fig.canvas.draw()
        seen.extend((path.name, tuple(ax.get_xticks())) for ax in fig.axes if ax.get_xlabel()
                    .startswith("epoch"))
        return original(fig, path, rect)
    monkeypatch.setattr(plots, "save_figure", spy)
    plots.plot_training(run, tmp_path)
    assert {name for name, _ in seen} == {"loss.png", "val_error.png", "epoch_seconds.png"}
    for name, ticks in seen:
        assert np.array_equal(ticks, np.round(ticks)), (name, ticks)
