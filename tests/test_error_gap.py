"""experiments/error_gap.py: the kept architecture retrained un-gated, and the run continued.

The comparison is only fair if the retrained networks are the kept architecture (its pixels
and widths, so its parameter count), drawn as the model draws a fresh network, and trained with
the run's own recipe; and if the continued training starts at the run's last learning rate.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern import backend as B
from minibern.cli.train import main as train_main
from minibern.data import load_mnist
from minibern.models import build_model
from minibern.training.trainer import TrainConfig, device_splits, run_rngs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import error_gap  # noqa: E402

pytestmark = pytest.mark.host_only  # an experiment script: NumPy arrays, the default backend


@pytest.fixture
def gated_run(tmp_path, mnist_dir):
    out = tmp_path / "grid" / "gated_seed3"
    assert train_main(["--model", "lenet300", "--epochs", "2", "--train-subset", "600",
                       "--gates", "--seed", "3", "--lr-decay", "1", "--data", str(mnist_dir),
                       "--out", str(out), "--quiet"]) == 0
    return out


def test_a_fresh_network_is_drawn_as_the_cli_draws_one():
    fresh = error_gap.dense_net(np.arange(784), [300, 100], seed=5, init="he", init_scale=0.5)
    model = build_model("lenet300", seed=run_rngs(5)[0], init_scale=0.5)  # as cli/train.py
    fresh_params, model_params = fresh.named_parameters(), model.named_parameters()
    assert sorted(fresh_params) == sorted(model_params)
    for name, value in model_params.items():
        np.testing.assert_array_equal(B.to_numpy(fresh_params[name]), B.to_numpy(value))
    pixels = np.array([3, 100, 400, 783])
    narrow = error_gap.dense_net(pixels, [7, 5], seed=5, init="he", init_scale=1.0)
    assert [layer.params["W"].shape for _, layer in narrow if "W" in layer.params] == [
        (4, 7), (7, 5), (5, 10)]
    images = np.random.default_rng(0).random((2, 784)).astype(np.float32)
    first = narrow[1]  # the Dense after the selection sees the kept pixels only
    narrow.forward(B.asarray(images))
    np.testing.assert_array_equal(B.to_numpy(first._x), images[:, pixels])


def test_the_report_retrains_the_kept_architecture_with_the_runs_recipe(gated_run, mnist_dir):
    metrics = json.loads((gated_run / "metrics.json").read_text())
    report = error_gap.run_report(gated_run, str(mnist_dir), continue_epochs=1)
    kept_in, h1, h2 = metrics["architecture"]
    assert report["kept"] == [kept_in, h1, h2]
    assert report["retrained"]["params"] == metrics["params"]
    assert report["kept_inputs"]["params"] == kept_in * 300 + 300 + 300 * 100 + 100 + 1010
    assert report["kept_hidden"]["params"] == 784 * h1 + h1 + h1 * h2 + h2 + h2 * 10 + 10
    for name in ("retrained", "kept_inputs", "kept_hidden"):
        recipe = (report[name]["epochs"], report[name]["lr"], report[name]["lr_decay"])
        assert recipe == (2, 1e-3, 1)
    # The run's last epoch (e = 1) ran at η/(1 + e/τ) = 1e-3/2; the continued training keeps it.
    assert report["continued"]["lr"] == pytest.approx(5e-4)
    assert (report["continued"]["epochs"], report["continued"]["lr_decay"]) == (1, None)
    # the continued training starts from the exported weights themselves
    assert report["continued"]["start_test_error"] == metrics["export_test_error"]
    assert report["continued"]["params"] == metrics["params"]
    for name in error_gap.CONFIGURATIONS:  # the run's 600 training images, not the whole split
        assert report[name]["train_examples"] == 600
    assert report["continued"]["average_decay"] == error_gap.AVERAGE_DECAY
    assert report["gated_test_error"] == metrics["test_error"]


def test_the_section_puts_each_run_beside_the_plain_run_of_its_seed(tmp_path):
    def report(gated, retrained):
        errors = {"test_error": retrained, "epochs": 5}
        return {"kept": [200, 120, 80], "gated_test_error": gated, "retrained": errors,
                "kept_inputs": errors, "kept_hidden": errors, "continued": errors}

    for name, gated, plain in (("gated_seed0", 0.021, 0.0165), ("gated_seed1", 0.0206, None),
                               ("other_seed0", 0.03, None)):
        run = tmp_path / "grid" / name
        run.mkdir(parents=True)
        (run / "error_gap.json").write_text(json.dumps(report(gated, 0.0222)))
        if plain is not None:
            (tmp_path / "grid" / "plain_seed0").mkdir()
            (tmp_path / "grid" / "plain_seed0" / "metrics.json").write_text(
                json.dumps({"test_error": plain}))
    rows = [line for line in error_gap.markdown(tmp_path).splitlines() if line.startswith("| ")]
    assert rows[1].split(" | ")[:3] == ["| grid/gated_seed0", "200-120-80", "2.10"]
    assert rows[1].endswith("| 1.65 |") and rows[2].endswith("| — |")
    assert rows[3].startswith("| mean of grid/gated | | 2.08 |")  # the mean of 2.10 and 2.06
    assert rows[3].endswith("| — |")  # seed 1 has no plain run: no mean over seed 0 alone
    assert rows[4].startswith("| grid/other_seed0 |")  # another configuration: its own mean
    assert len(rows) == 5  # a configuration of one run has no mean row


def test_an_unsuitable_run_is_refused_and_nothing_is_written(tmp_path, mnist_dir, gated_run,
                                                             capsys):
    plain = tmp_path / "plain"
    assert train_main(["--model", "lenet300", "--epochs", "1", "--train-subset", "300",
                       "--data", str(mnist_dir), "--out", str(plain), "--quiet"]) == 0
    assert error_gap.main([str(plain), "--data", str(mnist_dir)]) == 1
    assert "not a gated LeNet-300-100 run" in capsys.readouterr().err
    (gated_run / "model.npz").unlink()
    assert error_gap.main([str(gated_run), "--data", str(mnist_dir)]) == 1
    assert "no model.npz" in capsys.readouterr().err
    assert not list(tmp_path.rglob("error_gap.json"))


def test_the_weight_average_follows_the_steps_with_its_decay():
    class Trainer:
        net = error_gap.dense_net(np.arange(4), [3, 2], seed=0, init="he", init_scale=1.0)

    average = error_gap.WeightAverage(0.75)
    weights = Trainer.net.named_parameters()
    for value in (1.0, 3.0, 5.0):
        for array in weights.values():
            array[...] = value
        average.after_step(Trainer)
    expected = 0.75 * (0.75 * 1.0 + 0.25 * 3.0) + 0.25 * 5.0
    for name, array in average.average.items():
        np.testing.assert_allclose(B.to_numpy(array), expected, rtol=1e-6)
        assert not np.shares_memory(array, weights[name])


def test_after_training_the_network_holds_the_weight_average(mnist_dir):
    splits = device_splits(load_mnist(mnist_dir, flatten=True), (784,), 100)  # one step an epoch

    def trained(epochs, decay):
        net = error_gap.dense_net(np.arange(784), [20, 10], seed=1, init="he", init_scale=1.0)
        config = TrainConfig(model="lenet300", epochs=epochs, seed=1, lr=1e-2)
        return net, error_gap.train_and_test(net, splits, config, "test", average_decay=decay)

    # d = 1: the average stays at the first step's weights, which one epoch's run ends with
    averaged, result = trained(3, 1.0)
    first_step, _ = trained(1, None)
    for name, value in first_step.named_parameters().items():
        np.testing.assert_array_equal(B.to_numpy(averaged.named_parameters()[name]),
                                      B.to_numpy(value))
    assert result["average_decay"] == 1.0 and result["average_test_error"] != result["test_error"]
