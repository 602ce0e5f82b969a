"""θ learning inside the training loop: bounds, records, checkpoints with gates, the fixed-γ
ablation, and the CLI's gate options."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern import backend as B
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.gated_models import build_model
from minibern.bernoulli.hook import GateTrainer
from minibern.training.trainer import Hook, TrainConfig, Trainer, device_splits, run_rngs

REPO = Path(__file__).resolve().parents[1]


def _gated_trainer(mnist, gate_config, **overrides):
    config = TrainConfig(**{"model": "lenet300", "epochs": 2, "train_subset": 1000,
                            "width_mult": 0.2, **overrides})
    net = build_model(config.model, config.width_mult, seed=run_rngs(config.seed)[0], gates=True,
                      theta_init=gate_config.theta_init)
    splits = device_splits(mnist, net.input_shape, config.train_subset)
    hook = GateTrainer(net, gate_config, splits["train"].size)
    return Trainer(net, splits, config, hooks=[hook], log=lambda *_: None), hook


class _ThetaBounds(Hook):
    """Records min and max θ after every step."""

    def __init__(self, hook):
        self.hook, self.low, self.high = hook, 1.0, 0.0

    def after_backward(self, trainer):
        theta = np.concatenate([g.theta for _, _, g in self.hook.gates])
        self.low, self.high = min(self.low, theta.min()), max(self.high, theta.max())


@pytest.mark.parametrize("estimator", ["removal", "first-order"])
def test_theta_stays_in_unit_interval_and_is_recorded(mnist, estimator):
    trainer, hook = _gated_trainer(mnist, GateConfig(estimator=estimator, theta_lr=200.0,
                                                     kappa=50.0, snapshot_every=5))
    bounds = _ThetaBounds(hook)
    trainer.hooks.append(bounds)
    metrics = trainer.fit()
    assert 0.0 <= bounds.low and bounds.high <= 1.0
    assert bounds.low == 0.0  # a large κ pushes some gates all the way to 0
    gates = metrics["gates"]
    assert [g["name"] for g in gates] == ["gate_in", "gate1", "gate2"]
    assert all(g["at_zero"] + g["at_one"] + g["undecided"] == g["total"] for g in gates)
    snaps = np.asarray(trainer.history["theta_snapshots"])
    assert snaps.shape[1] == 784 + 60 + 20 and snaps.shape[0] >= 4
    assert metrics["architecture"][0] == int((hook.gates[0][2].theta >= 0.5).sum())


def test_resume_with_gates_repeats_theta_and_weights(mnist, tmp_path):
    config = GateConfig(estimator="removal", subset=8, theta_lr=50.0, kappa=3.0,
                        decide_min_visits=2, prune_patience=5, snapshot_every=7)
    straight, _ = _gated_trainer(mnist, config)
    straight.fit()
    first, _ = _gated_trainer(mnist, config, epochs=1)
    first.fit(tmp_path)
    resumed, hook = _gated_trainer(mnist, config)
    resumed.fit(tmp_path, resume=True)
    assert sum(layer["by_rule"] for layer in hook.decisions()["layers"]) > 0  # frozen gates
    assert resumed.history["gradient_snapshots"] == straight.history["gradient_snapshots"]
    for (_, name, a), (_, _, b) in zip(straight.hooks[0].gates, hook.gates):
        np.testing.assert_array_equal(a.theta, b.theta, err_msg=name)
    for key, value in straight.net.named_parameters().items():
        np.testing.assert_array_equal(B.to_numpy(value),
                                      B.to_numpy(resumed.net.named_parameters()[key]), err_msg=key)


@pytest.mark.parametrize("theta_init", [0.9, 1.0])
def test_without_hyperprior_theta_stays_strictly_inside(mnist, theta_init):
    # θ₀ = 1 lies outside the fixed-γ box: gates the subsampled estimator never visits must
    # not keep it (one short epoch leaves many input gates unvisited)
    trainer, hook = _gated_trainer(mnist, GateConfig(estimator="removal", hyperprior=False,
                                                     theta_init=theta_init, theta_lr=200.0),
                                   epochs=1)
    trainer.fit()
    theta = np.concatenate([g.theta for _, _, g in hook.gates])
    assert np.all((theta > 0.0) & (theta < 1.0))
    assert np.ptp(theta) > 0.01  # θ did move


@pytest.mark.host_only
@pytest.mark.parametrize("args,message", [
    (["--theta-init", "1.5"], "theta_init must lie in [0, 1]"),
    (["--kappa", "-1"], "kappa must be >= 0, got -1.0"),
    (["--estimator", "reinforce"], "invalid choice: 'reinforce'"),
    (["--theta-lr", "0"], "theta_lr must be > 0"),
])
def test_bad_gate_arguments_exit_2(args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "minibern", "train", "--model", "lenet300",
                           "--gates", *args, "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr


def test_gated_lenet5_learns_theta_with_the_removal_estimator(mnist):
    gate_config = GateConfig(estimator="removal", subset=2, theta_lr=100.0, theta_init=0.9)
    trainer, hook = _gated_trainer(mnist, gate_config, model="lenet5", width_mult=0.2,
                                   train_subset=200, batch_size=50, epochs=1)
    before = [g.theta.copy() for _, _, g in hook.gates]
    metrics = trainer.fit()
    assert [g["name"] for g in metrics["gates"]] == ["gate_conv1", "gate_conv2", "gate_fc1"]
    moved = {name: int(np.sum(gate.theta != old)) for (_, name, gate), old in zip(hook.gates, before)}
    # 4 steps: gate_conv2 (10 filters) is visited on subset=2 gates per step, so 1..8 of its θ
    # move; gate_fc1, the last gate layer, is visited in full every step, so all of its θ do
    assert 1 <= moved["gate_conv2"] <= 4 * 2 < hook.gates[1][2].n_units, moved
    assert moved["gate_fc1"] == hook.gates[2][2].n_units == 100, moved


@pytest.mark.parametrize("flags,expected", [
    (["--model", "lenet300"], (16, 16)),
    (["--model", "lenet5"], (2, 4)),
    (["--model", "lenet5", "--first-subset", "5"], (5, 4)),
    (["--model", "lenet5", "--subset", "16", "--first-subset", "16"], (16, 16)),
])
def test_the_cli_visits_the_models_default_gates_per_step_unless_told(flags, expected):
    """LeNet-5 visits fewer filters per step than LeNet-300-100 visits pixels (estimators.md,
    "Visits per step by model"); a flag given on the command line wins."""
    from minibern.cli.train import build_parser, gate_config_from_args
    args = build_parser().parse_args([*flags, "--gates", "--out", "unused"])
    config = gate_config_from_args(args)
    assert (config.first_subset, config.subset) == expected


@pytest.mark.host_only
def test_a_gated_run_on_kernel_threads_repeats_its_numbers(mnist, monkeypatch):
    """With the products split over kernel threads, the same seed and thread count give the
    same θ and weights (the blocks are fixed by the count, not by which thread is faster)."""
    from minibern.kernels import blas
    from minibern.kernels import threads as T

    if blas.get_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads minibern can set")
    monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)  # split every kernel, however small
    submitted = set()
    submit = T._submit
    monkeypatch.setattr(T, "_submit", lambda kernel, blocks: submitted.add(kernel.__name__)
                        or submit(kernel, blocks))
    config = GateConfig(estimator="removal", subset=8, kappa=20.0)
    runs = []
    try:
        with T.using_threads(3):
            for _ in range(2):
                trainer, hook = _gated_trainer(mnist, config, epochs=1, train_subset=500)
                trainer.fit()
                runs.append(trainer)
    finally:
        T._use(None)
    assert {"output_rows", "weight_columns", "input_rows"} <= submitted  # products on the pool
    for (_, name, a), (_, _, b) in zip(runs[0].hooks[0].gates, runs[1].hooks[0].gates):
        np.testing.assert_array_equal(a.theta, b.theta, err_msg=name)
    for key, value in runs[0].net.named_parameters().items():
        np.testing.assert_array_equal(B.to_numpy(value),
                                      B.to_numpy(runs[1].net.named_parameters()[key]),
                                      err_msg=key)
