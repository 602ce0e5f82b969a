"""benchmarks/bench_gates.py: the states a run's step is timed in.

A gated step after epoch e must be timed with the gates the run would still estimate (a gate
at 1 stays movable unless the run's rule freezes it there), and its un-gated twin must be the
same, pruned arrays without any gate work.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern.bernoulli.config import GateConfig
from minibern.data import load_mnist

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_gates  # noqa: E402

pytestmark = pytest.mark.host_only  # a benchmark script: NumPy arrays, the default backend


@pytest.fixture(scope="module")
def theta_full():
    """θ of LeNet-300-100's 784 + 300 + 100 gates: some at 0 (removed), at 1 and inside."""
    theta = np.ones(1184)
    theta[:300] = 0.0          # 300 input pixels removed
    theta[300:310] = 0.4       # inside
    theta[784:834] = 0.0       # 50 h1 units removed
    theta[1084:1090] = 0.7     # inside
    return theta


@pytest.mark.parametrize("at_one", [False, True])
def test_gates_at_one_are_frozen_only_where_the_runs_rule_freezes_them(mnist_dir, theta_full,
                                                                        at_one):
    trainer = bench_gates.gated_trainer(load_mnist(mnist_dir), theta_full,
                                        GateConfig(decide_at_one=at_one), 2)
    hook = trainer.hooks[0]
    widths = [gate.n_units for _, _, gate in hook.gates]
    assert widths == [484, 250, 100]
    frozen = [int(hook.states[name].frozen.sum()) for _, name, _ in hook.gates]
    assert frozen == ([474, 250, 94] if at_one else [0, 0, 0])


def test_the_ungated_twin_has_the_same_arrays_and_no_gate_work(mnist_dir, theta_full):
    data = load_mnist(mnist_dir)
    gated = bench_gates.gated_trainer(data, theta_full, GateConfig(), 2)
    plain = bench_gates.pruned_plain_trainer(data, theta_full, GateConfig(), 2)
    assert plain.hooks == []
    shapes = {name: value.shape for name, value in plain.net.named_parameters().items()}
    assert shapes == {name: value.shape for name, value in gated.net.named_parameters().items()}
    for name in ("gate_in", "gate1", "gate2"):
        assert plain.net[name].all_on  # the identity: no masks drawn
    plain.train_epoch()  # runs without the hook


@pytest.mark.parametrize("fused", [False, True])
def test_op_counts_split_the_gated_step_and_leave_the_plain_steps_work(mnist_dir, fused):
    """bench_gates.step_ops: the parts and the rest add up to the gated step, and what is left
    after the gate parts is exactly the un-gated step's operations (same layers, loss and
    optimiser); the removal estimator (either path) is most of the gates' own."""
    data = load_mnist(mnist_dir)
    gated, plain = bench_gates.step_ops(
        lambda gates: bench_gates.model_trainer(data, "lenet300", gates, 300,
                                                fused_estimator=fused))
    parts = sum(value for key, value in gated.items() if key != "step, total")
    assert parts == pytest.approx(gated["step, total"])
    assert gated["layers, loss, optimiser (not above)"] == pytest.approx(plain)
    own = gated["step, total"] - plain
    assert 0.5 * own < gated["estimator"] < own


@pytest.mark.parametrize("steps", [[10, 20, 30, 40], list(range(2, 41, 2)),
                                   [7, 10, 14, 20, 21, 28, 30, 35, 40]],
                         ids=["once an epoch", "five times an epoch", "every 7 steps and at ends"])
def test_a_runs_state_after_epoch_e_is_its_theta_at_the_end_of_epoch_e(tmp_path, steps):
    """Four epochs of 10 steps, θ recorded at the given steps (snapshot k holds the value k)."""
    snapshots = np.arange(len(steps), dtype=float)[:, None] * np.ones(3)
    np.savez(tmp_path / "history.npz", theta_snapshots=snapshots,
             theta_snapshot_steps=np.array(steps), train_loss=np.ones(4))
    (tmp_path / "metrics.json").write_text('{"gate_config": {"kappa": 2.0}}')
    for epoch in (1, 3):
        theta, config = bench_gates.run_state(tmp_path, epoch)
        assert theta[0] == steps.index(10 * epoch)  # the snapshot taken at the epoch's last step
        assert config.kappa == 2.0
    assert bench_gates.run_state(tmp_path, 0)[0] is None
