"""experiments/moving_weights.py: estimates at the moving, final and averaged weights.

The three sets of weights must share the batch and the masks, so that what differs between
them is the weights alone: with no step they coincide bit for bit, the final weights' estimates
do not depend on how far the moving ones went, and the weights the steps reach do not depend
on the estimates taken in between.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern.cli.train import main as train_main
from minibern.data import load_mnist

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import moving_weights  # noqa: E402

pytestmark = pytest.mark.host_only  # an experiment script: NumPy arrays, the default backend


@pytest.fixture
def gated_run(tmp_path, mnist_dir):
    out = tmp_path / "gated"
    assert train_main(["--model", "lenet300", "--epochs", "1", "--train-subset", "1000",
                       "--gates", "--seed", "3", "--lr-decay", "1", "--data", str(mnist_dir),
                       "--out", str(out), "--quiet"]) == 0
    return out, load_mnist(mnist_dir)


def _continue(gated_run, steps, lr_mult, ema_decay=0.9):
    directory, data = gated_run
    trainer, hook = moving_weights.restore_run(directory, data)
    return trainer, moving_weights.continue_and_estimate(trainer, hook, steps, lr_mult,
                                                         ema_decay=ema_decay)


def test_without_steps_the_three_weights_give_identical_estimates(gated_run):
    _, result = _continue(gated_run, 4, 0.0)
    estimates = result["estimates"]
    np.testing.assert_array_equal(estimates["moving"], estimates["final"])
    np.testing.assert_array_equal(estimates["average"], estimates["final"])
    assert result["drift"] == 0
    assert np.ptp(estimates["final"], axis=0).max() > 0  # the batches differ from step to step


def test_final_weights_stay_put_while_the_moving_ones_train(gated_run):
    _, still = _continue(gated_run, 6, 0.0)
    _, moved = _continue(gated_run, 6, 1.0)
    np.testing.assert_array_equal(moved["estimates"]["final"], still["estimates"]["final"])
    np.testing.assert_array_equal(moved["estimates"]["moving"][0], still["estimates"]["final"][0])
    assert moved["drift"] > 0
    assert not np.array_equal(moved["estimates"]["moving"][1:], still["estimates"]["final"][1:])


def test_estimating_some_weights_only_gives_their_estimates_of_the_full_run(gated_run):
    directory, data = gated_run
    _, full = _continue(gated_run, 4, 1.0)
    for chosen in (("average",), ("final", "moving")):
        trainer, hook = moving_weights.restore_run(directory, data)
        part = moving_weights.continue_and_estimate(trainer, hook, 4, 1.0, ema_decay=0.9,
                                                    weights_estimated=chosen)
        assert set(part["estimates"]) == set(chosen)
        for weights in chosen:  # the same weights, batches and masks as in the full run
            np.testing.assert_array_equal(part["estimates"][weights], full["estimates"][weights])
        assert part["drift"] == full["drift"]


def test_the_average_follows_the_moving_weights_at_its_decay(gated_run):
    _, instant = _continue(gated_run, 4, 1.0, ema_decay=0.0)  # the average is the last weights
    estimates = instant["estimates"]
    np.testing.assert_allclose(estimates["average"], estimates["moving"], rtol=1e-4, atol=1e-3)
    _, slow = _continue(gated_run, 4, 1.0, ema_decay=0.9)
    estimates = slow["estimates"]
    np.testing.assert_array_equal(estimates["average"][0], estimates["final"][0])
    assert not np.allclose(estimates["average"][1:], estimates["moving"][1:], rtol=1e-4,
                           atol=1e-3)
    assert not np.allclose(estimates["average"][1:], estimates["final"][1:], rtol=1e-4,
                           atol=1e-3)


def test_estimates_in_between_do_not_change_where_the_steps_go(gated_run):
    directory, data = gated_run
    trainer, _ = _continue(gated_run, 3, 1.0)
    reached = {k: v.copy() for k, v in trainer.net.named_parameters().items()}
    plain, hook = moving_weights.restore_run(directory, data)  # the same three steps, no estimates
    gates = [gate for _, _, gate in moving_weights.gate_layers(plain.net)]
    plain.optimizer.lr = plain.learning_rate(plain.epoch - 1)
    order = np.random.default_rng(0).permutation(plain.splits["train"].size)
    train = plain.splits["train"]
    for step in range(3):
        index = order[step * 100:(step + 1) * 100]
        for gate in gates:
            gate.rng = np.random.default_rng((0, step, 1))
        _, dlogits = moving_weights.softmax_cross_entropy(plain.net.forward(train.images[index]),
                                             train.labels[index], check=False)
        plain.net.backward(dlogits, input_grad=False)
        plain.optimizer.step(plain.net)
    for key, value in plain.net.named_parameters().items():
        np.testing.assert_array_equal(reached[key], value)


def test_the_report_chooses_on_even_steps_and_reports_odd_ones():
    theta = np.array([1.0, 1.0, 0.0])
    final = np.array([[5.0, -5.0, 9.0], [-1.0, -5.0, 9.0]] * 2)  # unit 0: + on even, − on odd
    result = {"layer": "gate2", "theta": theta, "drift": 0.1, "movable": np.ones(3, bool),
              "estimates": {"moving": final - 3, "final": final, "average": final}}
    row = moving_weights.summarise(result)
    assert (row["kept"], row["cheap_at_final"]) == (2, 1)  # θ = 0 is not kept; unit 1 is dear
    assert row["final"]["median_cheap"] == -1.0  # reported on the odd steps
    assert row["moving"]["median_cheap"] == -4.0 and row["final"]["cheap_above_0"] == 0
    assert "cheap_at_reached" not in row
    cheap_elsewhere = np.array([[-1.0, 2.0, 9.0], [0.0, 0.0, 0.0]] * 2)  # unit 1 now, not 0
    reached = {**result, "estimates": {w: cheap_elsewhere for w in moving_weights.WEIGHTS}}
    row = moving_weights.summarise(result, reached)
    assert (row["cheap_at_reached"], row["cheap_at_both"]) == (1, 0)
    row = moving_weights.summarise(result, result)
    assert (row["cheap_at_reached"], row["cheap_at_both"]) == (1, 1)
    frozen = {**result, "movable": np.array([False, True, True])}  # a rule froze unit 0 at 1
    row = moving_weights.summarise(frozen)
    assert (row["kept"], row["cheap_at_final"], row["frozen_kept_left_out"]) == (1, 0, 1)


def test_a_run_that_is_not_gated_is_refused_with_the_reason(tmp_path, mnist_dir, capsys):
    plain = tmp_path / "plain"
    assert train_main(["--model", "lenet300", "--epochs", "1", "--train-subset", "300",
                       "--data", str(mnist_dir), "--out", str(plain), "--quiet"]) == 0
    assert moving_weights.main([str(plain), "--steps", "2", "--data", str(mnist_dir)]) == 1
    assert "not a gated LeNet-300-100 run" in capsys.readouterr().err
    assert not (plain / "moving_weights.json").exists()


@pytest.mark.parametrize("args, message", [(["--steps", "1"], "--steps"),
                                           (["--ema-decay", "1"], "--ema-decay"),
                                           (["--lr-mult", "-1"], "--lr-mult")])
def test_bad_settings_exit_2_naming_the_setting(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        moving_weights.main([str(tmp_path), *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_results_section_tables_every_report(tmp_path):
    directory = tmp_path / "grid" / "run_seed0"
    directory.mkdir(parents=True)
    row = {"lr_mult": 1.0, "lr": 2e-4, "layer": "gate2", "kept": 10, "cheap_at_final": 3,
           "drift": 0.01, **{w: {"median_kept": kept, "median_cheap": 2.5, "cheap_above_0": 2}
                             for w, kept in zip(moving_weights.WEIGHTS, (-7.0, -8.0, -9.0))},
           "audit": {"gate_in": {"judged": 9, "false_final": 2, "false_moving": 1}}}
    (directory / "moving_weights.json").write_text(json.dumps(
        {"run": "grid/run_seed0", "steps": 100, "ema_decay": 0.99, "rows": [row]}))
    text = moving_weights.markdown(tmp_path)
    assert "| grid/run_seed0 | 100 | 0.0002 (× 1) | 0.0100 | 10 | 3 | 2.5 (2) |" in text
    # final / moving / average; nothing reached; the audit
    assert text.rstrip().endswith("| -8.0 / -7.0 / -9.0 | — | gate_in 2 → 1 / 9 |")
    assert moving_weights.markdown(tmp_path / "grid") == ""


def test_the_report_records_the_learning_rate_the_steps_used(gated_run, mnist_dir):
    directory, _ = gated_run
    report = moving_weights.run_report(directory, 2, [0.5, 0.0], 0.99, str(mnist_dir))
    # one epoch with --lr-decay 1: the run's last learning rate was 1e-3/(1 + 0/1)
    assert [row["lr"] for row in report["rows"]] == [0.5e-3, 0.0]
    assert "cheap_at_reached" in report["rows"][0] and "cheap_at_reached" not in report["rows"][1]


def _spoil(directory, how):
    if how == "no checkpoint":
        (directory / "checkpoint.npz").unlink()
    elif how == "metrics not an object":
        (directory / "metrics.json").write_text("[]")
    elif how == "damaged checkpoint":
        (directory / "checkpoint.npz").write_bytes(b"not a checkpoint")
    else:  # priced by expected parameters
        metrics = json.loads((directory / "metrics.json").read_text())
        metrics["gate_config"]["kappa_expected_params"] = True
        (directory / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize("how, message", [
    ("no checkpoint", "no checkpoint.npz"), ("metrics not an object", "not a gated"),
    ("damaged checkpoint", "cannot be loaded"), ("expected parameters", "priced per unit")])
def test_an_unsuitable_run_is_refused_and_left_as_it_was(gated_run, mnist_dir, capsys, how,
                                                         message):
    directory, _ = gated_run
    _spoil(directory, how)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    assert moving_weights.main([str(directory), "--steps", "2", "--data", str(mnist_dir)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and "Traceback" not in error
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


def test_a_run_of_the_first_order_estimator_is_measured_with_the_removal_one(tmp_path,
                                                                              mnist_dir):
    out = tmp_path / "first_order"
    assert train_main(["--model", "lenet300", "--epochs", "1", "--train-subset", "500",
                       "--gates", "--estimator", "first-order", "--theta-lr", "1",
                       "--data", str(mnist_dir), "--out", str(out), "--quiet"]) == 0
    assert moving_weights.main([str(out), "--steps", "2", "--lr-mult", "1",
                                "--data", str(mnist_dir)]) == 0
    report = json.loads((out / "moving_weights.json").read_text())
    assert report["rows"][0]["kept"] > 0 and report["rows"][0]["drift"] > 0


def test_the_trajectory_audit_counts_wrong_signs_at_each_set_of_weights():
    layer = {"theta": np.array([1.0, 1.0, 0.0, 0.0, 0.6, 1.0]),
             "movable": np.array([True, True, True, True, True, False]),
             "visits": np.array([10, 10, 10, 9, 10, 10]),
             "sums": {"final": np.array([5.0, -5.0, -5.0, -5.0, 5.0, 5.0]),
                      "moving": np.array([-5.0, -5.0, 5.0, -5.0, 5.0, 5.0]),
                      "average": np.zeros(6)}}
    audit = moving_weights.trajectory_audit({"layers": {"gate2": layer}})["gate2"]
    # judged: the movable gates on a vertex with 10 visits (not θ = 0.6, the frozen one, nor
    # the one visited 9 times); wrong at the final weights: gate 0 (> 0 at 1) and gate 2 (< 0
    # at 0); along the moving weights neither
    assert audit == {"judged": 3, "false_final": 2, "false_moving": 0}


def test_every_layer_is_audited_along_the_steps(gated_run):
    _, still = _continue(gated_run, 4, 0.0)
    audit = moving_weights.trajectory_audit(still, min_visits=1)
    assert list(audit) == ["gate_in", "gate1", "gate2"]
    for counts in audit.values():  # no steps: the two audits agree
        assert counts["false_final"] == counts["false_moving"] <= counts["judged"]
    visits = {name: layer["visits"] for name, layer in still["layers"].items()}
    assert visits["gate2"].max() == 4  # the last layer: every movable gate, every step
    assert 0 < visits["gate_in"].sum() <= 4 * 16  # the others: a subset per step
    visited = visits["gate2"] > 0  # frozen gates get no estimate, only κ in ``estimates``
    np.testing.assert_allclose(still["layers"]["gate2"]["sums"]["final"][visited],
                               still["estimates"]["final"].sum(axis=0)[visited])
