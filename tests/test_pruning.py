"""Physical pruning: removal invariance (P1)–(P4), optimiser slicing (P5), the summary's counts,
the last-unit case, and pruning inside training (removals, resume, the dry-run measurement)."""
import copy

import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.gated_models import lenet5_caffe, lenet300_100
from minibern.bernoulli.pruning import PruningError, remove_units
from minibern.bernoulli.topology import kept_units
from minibern.losses import softmax_cross_entropy
from minibern.optim import SGD, Adam
from minibern.training.summary import summarize
from minibern.training.trainer import Hook, TrainConfig


def _set_theta(net, rng, off_share=0.4):
    """θ ∈ {0, 1} on every gate (deterministic masks), about ``off_share`` of them 0."""
    for name, layer in net:
        if isinstance(layer, BernoulliGate):
            layer.theta[:] = (rng.random(layer.n_units) >= off_share).astype(float)
            layer.theta[0] = 1.0  # never the whole layer


def _prune_all_zero(net, optimizer=None):
    removed = {}
    for name, layer in list(net):
        if isinstance(layer, BernoulliGate):
            removed[name] = remove_units(net, name, layer.theta > 0, optimizer)
    return removed


def _net(model, rng, dtype="float64"):
    build = lenet300_100 if model == "lenet300" else lenet5_caffe
    net = build(0.1, seed=int(rng.integers(1 << 30)), gates=True, dtype=dtype)
    for name, value in net.named_parameters().items():  # non-zero biases exercise (P1)
        if name.endswith(".b"):
            net.set_parameter(name, B.asarray(rng.standard_normal(value.shape).astype(value.dtype)))
    return net


def _inputs(model, rng, n=6):
    shape = (n, 784) if model == "lenet300" else (n, 1, 28, 28)
    return B.asarray(rng.random(shape))


@pytest.mark.parametrize("model,gate", [
    ("lenet300", "gate_in"),      # input features: SelectFeatures keeps the raw inputs working
    ("lenet300", "gate1"),        # dense -> dense
    ("lenet5", "gate_conv1"),     # conv -> conv
    ("lenet5", "gate_conv2"),     # conv -> flatten -> dense
    ("lenet5", "gate_fc1"),       # dense -> dense (output layer)
])
def test_removing_units_at_zero_leaves_outputs_unchanged(model, gate):
    rng = np.random.default_rng(len(gate))
    net = _net(model, rng)
    for name, layer in net:
        if isinstance(layer, BernoulliGate):
            layer.theta[:] = 1.0
    net[gate].theta[:] = (rng.random(net[gate].n_units) >= 0.4).astype(float)
    net[gate].theta[0] = 1.0
    x = _inputs(model, rng)
    before = B.to_numpy(net.eval().forward(x))
    params_before, off = net.num_parameters(), int((net[gate].theta == 0).sum())
    removed = remove_units(net, gate, net[gate].theta > 0)
    after = B.to_numpy(net.eval().forward(x))
    assert removed == off > 0 and net[gate].n_units == net[gate].n_original - off
    assert net.num_parameters() < params_before
    np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-12)
    if gate == "gate_in":
        assert isinstance(net[0], L.SelectFeatures) and net[0].index.size == 784 - removed


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_pruning_every_layer_twice_keeps_outputs_and_input_map(model):
    rng = np.random.default_rng(3)
    net = _net(model, rng)
    x = _inputs(model, rng)
    _set_theta(net, rng)
    before = B.to_numpy(net.eval().forward(x))
    _prune_all_zero(net)
    _set_theta(net, rng, off_share=0.3)  # a second round removes more of what is left
    before2 = B.to_numpy(net.eval().forward(x))
    _prune_all_zero(net)
    np.testing.assert_allclose(B.to_numpy(net.eval().forward(x)), before2, rtol=1e-12, atol=1e-12)
    assert not np.allclose(before, before2)  # the second θ really changed the function
    if model == "lenet300":
        assert sum(isinstance(layer, L.SelectFeatures) for _, layer in net) == 1


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
@pytest.mark.parametrize("optimizer_class", [Adam, SGD])
def test_a_step_after_removal_equals_the_masked_step(model, optimizer_class):
    rng = np.random.default_rng(7)
    masked = _net(model, rng)
    x, labels = _inputs(model, rng, n=8), B.asarray(rng.integers(0, 10, size=8))
    optimizer = optimizer_class(lr=1e-2, weight_decay=1e-3)

    def step(net, opt):
        _, dlogits = softmax_cross_entropy(net.forward(x), labels)
        net.backward(dlogits)
        opt.step(net)

    for _ in range(2):  # non-zero momentum / Adam moments
        step(masked, optimizer)
    _set_theta(masked, rng)
    pruned, pruned_optimizer = copy.deepcopy(masked), copy.deepcopy(optimizer)
    _prune_all_zero(pruned, pruned_optimizer)
    step(masked, optimizer)
    step(pruned, pruned_optimizer)
    np.testing.assert_allclose(B.to_numpy(pruned.eval().forward(x)),
                               B.to_numpy(masked.eval().forward(x)), rtol=1e-10, atol=1e-12)
    # every kept parameter and its optimiser state moved exactly as in the masked network
    for name, value in pruned.named_parameters().items():
        for key, buffer in pruned_optimizer.state[name].items():
            assert buffer.shape == value.shape, (name, key)
    first_linear = "fc1"
    w_pruned = B.to_numpy(pruned[first_linear].params["W"])
    w_masked = B.to_numpy(masked[first_linear].params["W"])
    if model == "lenet300":  # rows: kept inputs, columns: kept h1 units
        rows, cols = pruned[0].index, pruned["gate1"].unit_index
    else:  # rows: kept conv2 filters' 16-pixel blocks, columns: kept fc1 units
        kept = pruned["gate_conv2"].unit_index
        rows, cols = (kept[:, None] * 16 + np.arange(16)).ravel(), pruned["gate_fc1"].unit_index
    np.testing.assert_allclose(w_pruned, w_masked[np.ix_(rows, cols)], rtol=1e-12, atol=1e-14)
    for key in optimizer_class.buffers:
        state_masked = B.to_numpy(optimizer.state[f"{first_linear}.W"][key])
        np.testing.assert_allclose(B.to_numpy(pruned_optimizer.state[f"{first_linear}.W"][key]),
                                   state_masked[np.ix_(rows, cols)], rtol=1e-12, atol=1e-14)


def test_removing_the_last_unit_is_refused_and_changes_nothing():
    rng = np.random.default_rng(0)
    net = _net("lenet300", rng)
    shapes = {k: tuple(v.shape) for k, v in net.named_parameters().items()}
    net["gate2"].theta[:] = 0.0
    with pytest.raises(PruningError, match=r"every remaining unit of 'gate2' \(10\).*disconnect"):
        remove_units(net, "gate2", net["gate2"].theta > 0)
    assert {k: tuple(v.shape) for k, v in net.named_parameters().items()} == shapes
    assert net["gate2"].n_units == 10


def test_summary_counts_after_pruning_match_hand_computed_values():
    net = lenet300_100(gates=True)
    start = summarize(net)
    for name, keep in (("gate_in", 500), ("gate1", 200), ("gate2", 50)):
        net[name].theta[keep:] = 0.0
    masked = summarize(net, start=start, kept=kept_units(net))
    _prune_all_zero(net)
    pruned = summarize(net, start=start, kept=kept_units(net))
    params = (500 * 200 + 200) + (200 * 50 + 50) + (50 * 10 + 10)
    flops = 500 * 200 + 200 * 50 + 50 * 10
    for summary in (masked, pruned):
        assert summary["architecture"] == [500, 200, 50]
        assert (summary["params"], summary["flops_per_example"]) == (params, flops)
        assert summary["compression_params"] == pytest.approx(266_610 / params)
        assert summary["compression_flops"] == pytest.approx(266_200 / flops)
    assert net.num_parameters() == params

    net = lenet5_caffe(gates=True)
    start = summarize(net)
    for name, keep in (("gate_conv1", 10), ("gate_conv2", 20), ("gate_fc1", 100)):
        net[name].theta[keep:] = 0.0
    _prune_all_zero(net)
    pruned = summarize(net, start=start, kept=kept_units(net))
    assert pruned["architecture"] == [10, 20, 320, 100]
    assert pruned["params"] == 10 * 26 + 20 * (10 * 25 + 1) + 100 * 321 + 10 * 101
    assert pruned["flops_per_example"] == 10 * 25 * 24 * 24 + 20 * 10 * 25 * 8 * 8 + 320 * 100 + 1000
    assert pruned["params"] == net.num_parameters()
    assert pruned["architecture_start"] == [20, 50, 800, 500]


# -- inside training ----------------------------------------------------------------------------
def _gated_trainer(mnist, gate_config, **overrides):
    """A small gated LeNet-300-100 run, built as the CLI builds one; (trainer, gate hook)."""
    from minibern.bernoulli.run import build_run
    config = TrainConfig(**{"model": "lenet300", "epochs": 2, "train_subset": 1000,
                            "width_mult": 0.2, **overrides})
    trainer = build_run(config, mnist, gate_config, log=lambda *_: None)
    return trainer, trainer.hooks[-1]


PRUNING = GateConfig(estimator="removal", subset=8, theta_lr=50.0, kappa=3.0, prune_patience=3)


def test_training_removes_units_and_reports_them(mnist):
    trainer, hook = _gated_trainer(mnist, PRUNING)
    metrics = trainer.fit()
    removed = metrics["pruning"]["removed"]
    assert sum(removed.values()) > 0
    for gate in metrics["gates"]:
        layer = trainer.net[gate["name"]]
        assert gate["removed"] == removed[gate["name"]] == layer.n_original - layer.n_units
        assert gate["at_zero"] >= gate["removed"]
    assert metrics["params"] <= trainer.net.num_parameters() < metrics["params_start"]
    units = trainer.history["units_gate_in"]
    assert units[-1] < 784 and units == sorted(units, reverse=True)
    assert trainer.history["params"][-1] < metrics["params_start"]
    snaps = np.asarray(trainer.history["theta_snapshots"])
    assert snaps.shape[1] == 784 + 60 + 20  # θ over the original gates, removed ones at 0
    averages = np.asarray(trainer.history["gradient_snapshots"])
    assert averages.shape == snaps.shape
    assert np.abs(averages[-1]).max() > 0
    start = 0
    for _, name, gate in hook.gates:  # removed gates record 0; the sums restart at each record
        removed = np.setdiff1d(np.arange(gate.n_original), gate.unit_index)
        assert (averages[-1, start + removed] == 0).all() and (snaps[-1, start + removed] == 0).all()
        assert not hook.recorder.grad_count[name].any() and not hook.recorder.grad_sum[name].any()
        start += gate.n_original


def test_gradient_snapshots_are_the_mean_estimate_of_each_period(mnist):
    trainer, hook = _gated_trainer(mnist, GateConfig(estimator="removal", subset=8,
                                                     theta_lr=50.0, kappa=20.0), epochs=1)
    estimates = {name: [] for _, name, _ in hook.gates}

    class Spy(Hook):  # the hook's estimates of each step, taken from the state it accumulates
        def after_backward(self, trainer):
            for _, name, _ in hook.gates:
                recorder = hook.recorder
                estimates[name].append((recorder.grad_sum[name].copy(),
                                        recorder.grad_count[name].copy()))

    trainer.hooks.append(Spy())
    trainer.fit()
    averages = np.asarray(trainer.history["gradient_snapshots"])
    start = 0
    for _, name, gate in hook.gates:  # one record, at the epoch's end: no unit was removed
        total, count = estimates[name][-1]
        assert count.sum() > 0
        expected = total / np.maximum(count, 1) * hook.n_data
        np.testing.assert_allclose(averages[0, start:start + gate.n_original][gate.unit_index],
                                   expected)
        start += gate.n_original


def test_resume_of_a_pruned_run_repeats_weights_theta_and_structure(mnist, tmp_path):
    straight, straight_hook = _gated_trainer(mnist, PRUNING)
    straight.fit()
    first, first_hook = _gated_trainer(mnist, PRUNING, epochs=1)
    first.fit(tmp_path)
    assert sum(g.n_removed for _, _, g in first_hook.gates) > 0  # it was pruned when saved
    resumed, hook = _gated_trainer(mnist, PRUNING)
    resumed.fit(tmp_path, resume=True)
    assert resumed.net.names == straight.net.names
    for (_, name, a), (_, _, b) in zip(straight_hook.gates, hook.gates):
        np.testing.assert_array_equal(a.unit_index, b.unit_index, err_msg=name)
        np.testing.assert_array_equal(a.theta, b.theta, err_msg=name)
    for key, value in straight.net.named_parameters().items():
        np.testing.assert_array_equal(B.to_numpy(value),
                                      B.to_numpy(resumed.net.named_parameters()[key]), err_msg=key)
    for key, value in straight.optimizer.state_dict().items():
        np.testing.assert_array_equal(value, resumed.optimizer.state_dict()[key], err_msg=key)


def test_without_removal_the_would_be_removals_are_counted(mnist):
    config = GateConfig(**{**PRUNING.__dict__, "prune": False})
    trainer, hook = _gated_trainer(mnist, config)
    metrics = trainer.fit()
    report = metrics["pruning"]
    assert sum(report["removed"].values()) == 0
    assert sum(report["marked"].values()) > 0
    for name in report["marked"]:
        assert report["came_back"][name] <= report["left_zero"][name] <= report["marked"][name]
    assert trainer.net.num_parameters() == trainer.start_summary["params"]


def test_training_that_would_remove_a_whole_layer_stops_with_a_clear_message(mnist, tmp_path):
    config = GateConfig(estimator="removal", subset=8, theta_lr=100.0, kappa=60.0,
                        prune_patience=3)
    trainer, hook = _gated_trainer(mnist, config, epochs=3)
    with pytest.raises(PruningError, match=r"every remaining unit of 'gate\d' .*disconnect.*--kappa"):
        trainer.fit(tmp_path)
    assert all(gate.n_units >= 1 for _, _, gate in hook.gates)  # the refused removal did nothing
