"""experiments/protocol.py: the test error of grid `protocol` read by each protocol, from fake
run directories (history.npz with the per-epoch errors, metrics.json)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import page_format  # noqa: E402
import protocol  # noqa: E402
import sweep  # noqa: E402

pytestmark = pytest.mark.host_only  # an experiment script: files and NumPy only


def _history(seed: int, epochs: int = 40) -> dict:
    """Errors falling with noise, so that each protocol picks its own epoch."""
    rng = np.random.default_rng(seed)
    trend = 0.03 / np.sqrt(np.arange(1, epochs + 1))
    history = {"val_error": trend + rng.uniform(0, 0.004, epochs),
               "test_error": trend + rng.uniform(0, 0.004, epochs) + 0.002,
               "train_loss": 0.3 / np.arange(1, epochs + 1)}
    for layer, start in (("gate_in", 400), ("gate1", 200), ("gate2", 90)):
        history[f"kept_{layer}"] = np.maximum(start - 5 * np.arange(epochs), start // 2)
    return history


def _fake_run(root, name, history, architecture=(190, 120, 80)):
    directory = root / "protocol" / name
    directory.mkdir(parents=True)
    np.savez(directory / "history.npz", **history)
    gates = [{"name": layer} for layer in ("gate_in", "gate1", "gate2")]
    epochs = len(history["val_error"])
    (directory / "metrics.json").write_text(json.dumps({  # what the grid's own table reads too
        "architecture": list(architecture), "gates": gates, "params": 10 * sum(architecture),
        "flops_per_example": 9 * sum(architecture), "epoch_seconds": [1.0] * epochs,
        "val_error": float(history["val_error"][-1]),
        "test_error": float(history.get("test_error", history["val_error"])[-1])}))
    return history


def _cells(text: str, first: str) -> list[str]:
    """The cells of the first table row of ``text`` that starts with ``first``."""
    return next(page_format.cells(line) for line in text.splitlines()
                if line.startswith(f"| {first} |"))


def test_each_protocol_reads_its_own_epoch():
    history = _history(0)
    val, test = history["val_error"], history["test_error"]
    history["val_error"][[4, 6]] = val.min() - 0.01  # a tie: the first epoch is read
    epochs = protocol.chosen_epochs(history)
    assert epochs == {"final, 20": 20, "val-chosen, ≤ 20": 5, "final, 40": 40,
                      "val-chosen, ≤ 40": 5, "best test epoch (optimistic)":
                      int(np.argmin(test)) + 1}
    errors = protocol.protocol_errors(history)
    assert errors["final, 20"] == test[19] and errors["val-chosen, ≤ 20"] == test[4]
    assert errors["best test epoch (optimistic)"] == test.min()
    later = _history(1)
    later["val_error"][30] = later["val_error"].min() - 0.01  # the lowest after epoch 20
    epochs = protocol.chosen_epochs(later)
    assert epochs["val-chosen, ≤ 40"] == 31
    assert epochs["val-chosen, ≤ 20"] == int(np.argmin(later["val_error"][:20])) + 1


def test_a_run_of_20_epochs_has_no_40_epoch_protocols():
    errors = protocol.protocol_errors(_history(0, epochs=20))
    assert errors["final, 40"] is errors["val-chosen, ≤ 40"] is None
    assert errors["best test epoch (optimistic)"] is None
    assert errors["final, 20"] is not None


def test_the_section_pools_seeds_and_gives_the_difference_of_the_means(tmp_path):
    gated = [_fake_run(tmp_path, f"gated_seed{seed}", _history(seed), (190 + seed, 120, 80))
             for seed in (0, 1)]
    plain = _fake_run(tmp_path, "plain_seed0", _history(7), (784, 300, 100))
    text = protocol.markdown(tmp_path)
    row = _cells(text, "gated")
    assert row[1] == "2"
    finals = 100 * np.array([history["test_error"][19] for history in gated])
    assert row[2] == f"{finals.mean():.2f} ± {finals.std(ddof=1):.2f}"
    best = 100 * np.array([history["test_error"].min() for history in gated])
    assert row[6] == f"{best.mean():.2f} ± {best.std(ddof=1):.2f}"
    assert row[7] == "190 ± 1 / 120 ± 0 / 80 ± 0"
    plain_row = _cells(text, "plain")
    assert plain_row[4] == f"{100 * plain['test_error'][39]:.2f}"  # one seed: no spread
    gap = np.mean([history["test_error"][39] for history in gated]) - plain["test_error"][39]
    assert _cells(text, "gated − plain")[4] == f"{100 * gap:+.2f}"
    chosen = _cells(text, "gated | 1")  # the epochs table: seed 1
    assert chosen[2:] == [str(int(np.argmin(gated[1]["val_error"][:20])) + 1),
                          str(int(np.argmin(gated[1]["val_error"])) + 1),
                          str(int(np.argmin(gated[1]["test_error"])) + 1)]


def test_the_decisions_table_follows_the_gated_runs_kept_units(tmp_path):
    gated = [_fake_run(tmp_path, f"gated_seed{seed}", _history(seed)) for seed in (0, 1)]
    text = protocol.markdown(tmp_path)
    for epoch in protocol.EPOCHS:
        row = _cells(text, str(epoch))
        assert row[1] == f"{np.mean([h['kept_gate_in'][epoch - 1] for h in gated]):.0f}"
        test = np.mean([h["test_error"][epoch - 1] for h in gated])
        assert row[6] == f"{100 * test:.2f}"
        assert row[7] == row[8] == "—"  # no plain run


def test_runs_without_the_record_are_left_out_and_none_gives_no_section(tmp_path):
    assert protocol.markdown(tmp_path) == ""
    old = _history(0)
    del old["test_error"]
    _fake_run(tmp_path, "gated_seed0", old)
    assert protocol.markdown(tmp_path) == ""
    _fake_run(tmp_path, "gated_seed1", _history(1, epochs=20))  # a 20-epoch run
    row = _cells(protocol.markdown(tmp_path), "gated")
    assert row[1] == "1" and row[4] == row[5] == row[6] == "—" and row[2] != "—"


def test_the_results_page_carries_the_section(tmp_path):
    _fake_run(tmp_path, "gated_seed0", _history(0))
    page = sweep.write_results(tmp_path, tmp_path / "RESULTS.md")
    assert "### protocol: the test error by the protocol that reads it" in page
