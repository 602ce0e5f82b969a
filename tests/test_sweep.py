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
    assert row["arrays_e3/kept"] == "2.50 / 1.00"  # epoch 3: 50 and 10 in arrays; one seed
    assert row["kept_e3/kept"] == "1.50 / 1.00"  # 30 and 10 kept, of 20 and 10


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


def _write_metrics(directory, architecture, params, flops, test_error, seconds=(3.0, 2.0)):
    directory.mkdir(parents=True)
    metrics = {"architecture": architecture, "params": params, "flops_per_example": flops,
               "test_error": test_error, "val_error": test_error,
               "epoch_seconds": list(seconds), "decided_1e-3": 0.97}
    (directory / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.host_only
def test_results_page_has_a_table_per_grid_and_says_what_is_missing(tmp_path):
    root = tmp_path / "runs"
    _write_metrics(root / "lenet300" / "gated_seed0", [200, 120, 80], 36000, 35800, 0.021)
    page = sweep.write_results(root, tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == page
    appendix = page.split("## Appendix")[1]
    lenet300 = appendix.split("### lenet300\n")[1].split("### ")[0]
    assert "| gated | 1 | 200 / 120 / 80 | 36000 | 35800 | 2.10 | 2.10 | 97.00 |" in lenet300
    assert "±" not in lenet300  # one seed: the value alone
    for grid in set(sweep.GRIDS) - {"lenet300"}:
        assert "Not run yet." in appendix.split(f"### {grid}\n")[1].split("### ")[0]


@pytest.mark.host_only
def test_every_table_of_the_page_has_at_most_ten_columns(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        _write_metrics(root / "lenet300" / f"gated_seed{seed}", [200, 120, 80], 36000 + seed,
                       35800, 0.021)
    page = sweep.write_results(root, tmp_path / "RESULTS.md")
    rules = [line for line in page.splitlines() if line.startswith("|---")]
    assert rules and max(rule.count("---") for rule in rules) <= 10
    assert max(len(line) for line in page.splitlines() if not line.startswith("|")) <= 130


def test_results_page_sets_the_published_numbers_beside_ours_with_sources(tmp_path):
    from published import PUBLISHED, SOURCES, size
    root = tmp_path / "runs"
    _write_metrics(root / "lenet300" / "gated_seed0", [200, 120, 80], 36000, 35800, 0.021)
    _write_metrics(root / "lenet300" / "plain_seed0", [784, 300, 100], 266610, 266200, 0.017)
    page = sweep.write_results(root, tmp_path / "RESULTS.md")
    head = page.split("## Headline")[1].split("## Appendix")[0]
    lines = head.splitlines()
    ours = next(line for line in lines if line.startswith("| LeNet-300-100 | gated (ours) |"))
    assert "| 200-120-80 | 36,000 | 35,800 | 2.10 |" in ours
    for network, method, architecture, error, key, _, _ in PUBLISHED:
        params, flops = size(network, architecture)
        row = next(line for line in lines
                   if line.startswith(f"| {network} | {method} | {architecture} |"))
        assert f"| {params:,} | {flops:,} | {error} |" in row and f"[{key}]" in row
        assert lines.index(row) > lines.index(ours) or network != "LeNet-300-100"
    for key in SOURCES:
        reference = head.split(f"\n- [{key}] ")[1].split("\n- [")[0]  # wrapped lines
        assert "arXiv" in reference
    assert "200 epochs" in head and "final epoch" in head
    assert "7.4× fewer parameters" in head  # 266,610 / 36,000, from the runs


def test_published_sizes_count_as_the_runs_do():
    """The formula that sizes the published architectures gives a run's recorded size."""
    from published import size
    paths = sorted(sweep.DEFAULT_ROOT.glob("*/*_seed0/metrics.json"))
    if not paths:
        pytest.skip("no kept runs under experiments/runs")
    for path in paths:
        metrics = json.loads(path.read_text())
        network = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}[metrics["model"]]
        architecture = "-".join(str(units) for units in metrics["architecture"])
        assert size(network, architecture) == (metrics["params"],
                                               metrics["flops_per_example"]), path
    with pytest.raises(ValueError, match="LeNet-300-100"):
        size("ResNet", "1-2")


def test_headline_robustness_reports_the_largest_deviation_over_starts(tmp_path):
    import headline
    root = tmp_path / "runs"
    for width, kept in (("1", [200, 100, 80]), ("2", [200, 130, 80]), ("4", [200, 70, 80])):
        _write_metrics(root / "robustness" / f"width{width}_scale1_seed0", kept, 1, 1, 0.02)
    section = headline.robustness(root)
    # h1: mean 100 over the starts, the farthest start 30 away; no init-scale runs: "–"
    assert "| default | 200-100-80 | 200-130-80 | 200-70-80 | 30 % (h1) | – | 2.00 |" in section
    assert "compensated" not in section.split("|---")[1]  # no runs: no row
    # with 300-100 at init scales ½ and 2 too: h2's mean over five starts is 100, the init ×2
    # start 70 % above it (h1 still 30 % off)
    for scale, kept in (("0.5", [200, 100, 90]), ("2", [200, 100, 170])):
        _write_metrics(root / "robustness" / f"width1_scale{scale}_seed0", kept, 1, 1, 0.02)
    section = headline.robustness(root)
    assert "| default | 200-100-80 | 200-130-80 | 200-70-80 | 30 % (h1) | 70 % (h2) | 2.00 |" \
        in section


def test_wide_tables_are_split_repeating_the_columns_that_name_a_row():
    from page_format import split_table, tidy
    header = ["run", "lr"] + [f"c{i}" for i in range(12)]
    rows = [["a", "0.1"] + [str(i) for i in range(12)], ["a", "1"] + [str(i) for i in range(12)]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    split = split_table(lines)
    tables = "\n".join(split).split("\n\n")
    assert len(tables) == 2
    assert tables[0].startswith("| run | lr | c0 |") and tables[1].startswith("| run | lr | c8 |")
    assert all(line.count("|") - 1 <= 10 for line in split if line)
    assert "| a | 1 | 8 | 9 | 10 | 11 |" in tables[1]
    text = tidy("word " * 40 + "\n\n" + "\n".join(lines))
    assert max(len(line) for line in text.splitlines() if not line.startswith("|")) <= 100


@pytest.mark.host_only
def test_the_figure_of_error_against_parameters_is_drawn_from_the_runs(tmp_path):
    pytest.importorskip("matplotlib")
    import headline
    root = tmp_path / "runs"
    _write_metrics(root / "lenet300" / "gated_seed0", [200, 120, 80], 36000, 35800, 0.021)
    assert headline.draw_figure(root, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert not headline.draw_figure(tmp_path / "empty", tmp_path / "none.png")
