"""The experiment runner (experiments/sweep.py): resumable grids and the pooled table."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import sweep  # noqa: E402

TINY = ["--model", "lenet300", "--width-mult", "0.05", "--train-subset", "200",
        "--batch-size", "50", "--gates", "--kappa", "0.01", "--no-audit"]


@pytest.fixture
def tiny_grid(monkeypatch, mnist_dir):
    runs = {f"tiny_seed{seed}": [*TINY, "--epochs", "2", "--seed", str(seed)] for seed in (0, 1)}
    monkeypatch.setitem(sweep.GRIDS, "tiny", {"about": "two tiny runs", "runs": runs})
    return mnist_dir


@pytest.mark.host_only
@pytest.mark.slow
def test_a_half_finished_grid_resumes_without_rerunning_finished_runs(tiny_grid, tmp_path):
    assert sweep.run_grid(tmp_path, "tiny", jobs=2, data=str(tiny_grid), only=None) == 0
    finished = tmp_path / "tiny" / "tiny_seed0" / "metrics.json"
    before = finished.read_bytes(), finished.stat().st_mtime_ns
    killed = tmp_path / "tiny" / "tiny_seed1"
    (killed / "metrics.json").unlink()  # as if killed after its last checkpoint
    outcomes = {name: sweep.train(tmp_path, "tiny", name, sweep.GRIDS["tiny"]["runs"][name],
                                  str(tiny_grid)) for name in ("tiny_seed0", "tiny_seed1")}
    assert outcomes == {"tiny_seed0": "skipped", "tiny_seed1": "resumed"}
    assert (finished.read_bytes(), finished.stat().st_mtime_ns) == before
    assert json.loads((killed / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.host_only
def test_a_failed_run_is_named_and_the_others_still_run(monkeypatch, tmp_path):
    runs = {"bad_seed0": ["--model", "lenet300", "--epochs", "0"]}
    monkeypatch.setitem(sweep.GRIDS, "bad", {"about": "a run the CLI refuses", "runs": runs})
    assert sweep.run_grid(tmp_path, "bad", jobs=1, data=None, only=None) == 1
    log = tmp_path / "bad" / "bad_seed0.stderr"
    assert "epochs" in log.read_text()


@pytest.mark.host_only
def test_a_recorded_only_run_is_not_trained_but_still_tabulated(monkeypatch, tmp_path):
    runs = {"gone_seed0": ["--model", "lenet300", "--snap-tol", "0.01"]}
    monkeypatch.setitem(sweep.GRIDS, "old", {"about": "a removed mode", "runs": runs})
    monkeypatch.setitem(sweep.RECORDED_ONLY, "old", ("gone_seed0",))
    assert sweep.run_grid(tmp_path, "old", jobs=1, data=None, only=None) == 0
    assert not (tmp_path / "old").exists()  # nothing launched
    assert "legacy_snap_rules_seed0" in sweep.GRIDS["convergence"]["runs"]
    assert "legacy_snap_rules_seed0" in sweep.RECORDED_ONLY["convergence"]


def _fake_run(root, name, architecture, test_error, decided=None):
    directory = root / "fake" / name
    directory.mkdir(parents=True)
    metrics = {"architecture": architecture, "params": 10 * sum(architecture),
               "flops_per_example": 9 * sum(architecture), "test_error": test_error,
               "val_error": test_error, "epoch_seconds": [2.0, 1.0]}
    if decided is not None:
        metrics["decided_1e-3"] = decided
    (directory / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.host_only
def test_table_pools_seeds_as_mean_and_sample_std(monkeypatch, tmp_path):
    runs = {f"{config}_seed{seed}": [] for config in ("a", "b") for seed in (0, 1, 2)}
    monkeypatch.setitem(sweep.GRIDS, "fake", {"about": "", "runs": runs, "reference": "a"})
    _fake_run(tmp_path, "a_seed0", [300, 100], 0.010, decided=0.9)
    _fake_run(tmp_path, "a_seed1", [310, 120], 0.020, decided=0.8)
    _fake_run(tmp_path, "b_seed2", [600, 100], 0.030)  # seeds not yet run are left out
    header, rows = sweep.table(tmp_path, "fake")
    row = dict(zip(header, rows[0]))
    assert row["seeds"] == "2" and row["architecture"] == "305 ± 7 / 110 ± 14"
    assert row["test_error_%"] == "1.50 ± 0.71" and row["decided_%"] == "85.00 ± 7.07"
    assert dict(zip(header, rows[1]))["decided_%"] == ""
    spread_header, spread_rows = sweep.spread(tmp_path, "fake", "a")
    assert spread_rows[1] == ["b", "a", "+97 %", "-9 %"]
    _fake_run(tmp_path, "b_seed0", [200, 50], 0.030)
    per_row = dict((row[0], row[1:]) for row in sweep.spread(tmp_path, "fake", {"b": "b"})[1])
    assert per_row == {"b": ["b", "+0 %", "+0 %"]}  # "a" has no reference of its own


@pytest.mark.host_only
def test_early_pruning_columns_divide_epoch_3_by_the_final_kept_units(monkeypatch, tmp_path):
    monkeypatch.setitem(sweep.GRIDS, "fake", {"about": "", "runs": {"a_seed0": []}})
    _fake_run(tmp_path, "a_seed0", [20, 10], 0.01)
    directory = tmp_path / "fake" / "a_seed0"
    metrics = json.loads((directory / "metrics.json").read_text())
    metrics["gates"] = [{"name": "g_in"}, {"name": "g_out"}]
    (directory / "metrics.json").write_text(json.dumps(metrics))
    np.savez(directory / "history.npz", units_g_in=[90, 60, 50, 20], kept_g_in=[70, 40, 30, 20],
             units_g_out=[12, 11, 10, 10], kept_g_out=[11, 11, 10, 10])
    header, rows = sweep.table(tmp_path, "fake")
    row = dict(zip(header, rows[0]))
    assert row["arrays_e3/kept"] == "2.50 ± 0.00 / 1.00 ± 0.00"  # epoch 3: 50 and 10 in arrays
    assert row["kept_e3/kept"] == "1.50 ± 0.00 / 1.00 ± 0.00"  # 30 and 10 kept, of 20 and 10


@pytest.mark.host_only
def test_early_pruning_section_averages_the_seeds_epoch_by_epoch(tmp_path):
    import early_pruning

    for seed, (kept, units) in enumerate((([30, 20, 20], [50, 30, 20]), ([40, 30, 20], [70, 50, 20]))):
        directory = tmp_path / "lenet300" / f"gated_seed{seed}"
        directory.mkdir(parents=True)
        np.savez(directory / "history.npz", kept_g=kept, units_g=units,
                 train_loss=[0.5, 0.25, 0.125])
    found = early_pruning.per_epoch(sorted((tmp_path / "lenet300").glob("gated_seed*")))
    np.testing.assert_array_equal(found["kept"], [[35, 25, 20]])
    np.testing.assert_array_equal(found["arrays"], [[60, 40, 20]])
    section = early_pruning.markdown(tmp_path)
    assert "| gated | 2 | g | 35 / 20 | 60 / 20 |" in section  # epochs 1 and 3 (of 1, 3, 5, ...)
    assert "gated_no_rule" not in section  # a configuration without runs is left out
    assert early_pruning.markdown(tmp_path / "elsewhere") == ""


@pytest.mark.host_only
def test_whole_run_section_averages_each_epochs_seconds_and_sums_them(tmp_path):
    import early_pruning

    for name, seconds in (("gated_seed0", [5.0, 3.0, 2.0]), ("gated_seed1", [6.0, 4.0, 3.0]),
                          ("plain_seed0", [2.0, 2.0, 2.0]), ("lenet5_gated_seed0", [9.0] * 3)):
        directory = tmp_path / "timing" / name
        directory.mkdir(parents=True)
        np.savez(directory / "history.npz", epoch_seconds=seconds)
    section = early_pruning.epoch_seconds_markdown(tmp_path)
    # epochs 1 and 3; the last (up to five) epochs' mean; 5.5 + 3.5 + 2.5 over 3 epochs
    assert "| gated | 2 | 5.50 / 2.50 | 3.83 | 11.5 (3) |" in section
    assert "| plain | 1 | 2.00 / 2.00 | 2.00 | 6.0 (3) |" in section
    assert "9.00" not in section and "gated_at_one" not in section  # LeNet-5; no such runs
    assert early_pruning.epoch_seconds_markdown(tmp_path / "elsewhere") == ""


@pytest.mark.host_only
def test_results_page_has_a_table_per_grid_and_says_what_is_missing(tmp_path):
    root = tmp_path / "runs"
    directory = root / "lenet300"
    directory.mkdir(parents=True)
    (directory / "gated_seed0").mkdir()
    metrics = {"architecture": [200, 120, 80], "params": 36000, "flops_per_example": 35800,
               "test_error": 0.021, "val_error": 0.019, "epoch_seconds": [3.0, 2.0],
               "decided_1e-3": 0.97}
    (directory / "gated_seed0" / "metrics.json").write_text(json.dumps(metrics))
    page = sweep.write_results(root, tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == page
    lenet300 = page.split("## lenet300")[1].split("## ")[0]
    assert "| gated | 1 | 200 ± 0 / 120 ± 0 / 80 ± 0 |" in lenet300
    assert "2.10 ± 0.00" in lenet300 and "97.00 ± 0.00" in lenet300
    for grid in set(sweep.GRIDS) - {"lenet300"}:
        assert "Not run yet." in page.split(f"## {grid}:")[1].split("## ")[0]


def test_results_page_sets_the_published_numbers_beside_ours_with_sources(tmp_path):
    from published import PUBLISHED
    page = sweep.write_results(tmp_path / "runs", tmp_path / "RESULTS.md")
    section = page.split("## Published structured pruning")[1]
    for network, method, architecture, error, source in PUBLISHED:
        row = next(line for line in section.splitlines()
                   if line.startswith(f"| {network} | {method} | {architecture} |"))
        assert f"| {error} |" in row and "arXiv" in row
    assert "best test error" in section and "final" in section
