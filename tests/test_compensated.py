"""The compensated removal estimate (R1)–(R6) against a brute-force re-fit, the fold, the Gram's
bookkeeping, and the early θ bound (R7): docs/derivations/compensated.md."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.compensated import CompensatedEstimator
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.estimators import RemovalEstimator
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.refit import RunningGram
from minibern.bernoulli.theta_step import ThetaStep
from minibern.bernoulli.topology import gate_layers, gate_sites
from minibern.losses import per_example_cross_entropy

RIDGE = 1e-2


def _net(rng, widths=(5, 6, 4)):
    theta = [rng.uniform(0.3, 0.9, n) for n in widths]
    for values in theta:
        values[1] = 0.0  # one unit off: outside the regressors K, fitted on them (R3)
    gates = [BernoulliGate(n, theta_init=t, rng=rng) for n, t in zip(widths, theta)]
    net = L.Sequential(("g0", gates[0]), L.Dense(5, 6, rng=rng, dtype="float64"), L.ReLU(),
                       ("g1", gates[1]), L.Dense(6, 4, rng=rng, dtype="float64"), L.ReLU(),
                       ("g2", gates[2]), L.Dense(4, 3, rng=rng, dtype="float64"))
    return net, B.asarray(rng.standard_normal((20, 5))), B.asarray(rng.integers(0, 3, 20))


def _losses(net, x, y, masks):
    for name, mask in masks.items():
        net[name].inject_mask(mask)
    return B.to_numpy(per_example_cross_entropy(net.forward(x), y))


def _brute_force_delta(net, x, y, found, masks, unit):
    """Mean over the batch of ℓ(unit on) − ℓ(unit off, consumer re-fitted by an explicitly
    solved ridge regression and folded), every other gate at its sampled mask."""
    _losses(net, x, y, masks)  # the activations of the sampled masks
    a = B.to_numpy(found.gate.last_input)
    theta = found.gate.theta
    inside = theta > 0
    lam = RIDGE * (a[:, inside] ** 2).sum() / inside.sum()
    others = np.flatnonzero(inside & (np.arange(theta.size) != unit))
    design = np.hstack([a[:, others], np.ones((len(a), 1))])
    ridge = lam * np.diag(np.append(np.ones(others.size), 0.0))
    beta = np.linalg.solve(design.T @ design + ridge, design.T @ a[:, unit])
    consumer = net[found.consumer]
    weight, bias = B.to_numpy(consumer.params["W"]), B.to_numpy(consumer.params["b"])
    on, off = dict(masks), dict(masks)
    on[found.name] = masks[found.name].copy()
    on[found.name][:, unit] = 1.0
    off[found.name] = masks[found.name].copy()
    off[found.name][:, unit] = 0.0
    kept = _losses(net, x, y, on)
    folded = weight.copy()
    folded[others] += np.outer(beta[:-1], weight[unit])  # (R5)
    consumer.params["W"] = B.asarray(folded)
    consumer.params["b"] = B.asarray(bias + beta[-1] * weight[unit])
    removed = _losses(net, x, y, off)
    consumer.params["W"], consumer.params["b"] = B.asarray(weight), B.asarray(bias)
    return float(np.mean(kept - removed))


def test_the_estimate_equals_the_loss_difference_after_an_explicit_refit_and_fold():
    rng = np.random.default_rng(3)
    net, x, y = _net(rng)
    net.forward(x)
    masks = {name: B.to_numpy(gate.mask).copy() for _, name, gate in gate_layers(net)}
    estimates = CompensatedEstimator(subset=None, ridge=RIDGE).estimate(net, x, y)
    held = RemovalEstimator(subset=None).estimate(net, x, y)
    differs = 0
    for found in gate_sites(net):
        delta, visited = estimates[found.name]
        assert visited.all()
        for unit in range(found.gate.n_units):
            truth = _brute_force_delta(net, x, y, found, masks, unit)
            np.testing.assert_allclose(delta[unit], truth, rtol=1e-9, atol=1e-12)
            differs += not np.isclose(truth, held[found.name][0][unit])
    assert differs > 10  # the re-fit is not the held removal


def _linear_layer_net(rng):
    """Positive inputs and weights: the ReLU passes everything, and unit 3's activation is
    exactly a_0 + 2 a_1 + 0.5."""
    producer = L.Dense(3, 4, rng=rng, dtype="float64")
    weight = rng.uniform(0.1, 1.0, (3, 4))
    weight[:, 3] = weight[:, 0] + 2 * weight[:, 1]
    bias = rng.uniform(0.1, 1.0, 4)
    bias[3] = bias[0] + 2 * bias[1] + 0.5
    producer.params["W"], producer.params["b"] = B.asarray(weight), B.asarray(bias)
    net = L.Sequential(producer, L.ReLU(), ("g", BernoulliGate(4, rng=rng)),
                       L.Dense(4, 3, rng=rng, dtype="float64"))
    return net, B.asarray(rng.uniform(0.0, 1.0, (30, 3))), B.asarray(rng.integers(0, 3, 30))


def test_the_fold_preserves_the_function_when_the_unit_is_a_combination_of_the_others():
    rng = np.random.default_rng(5)
    net, x, y = _linear_layer_net(rng)
    before = B.to_numpy(net.forward(x)).copy()
    estimator = CompensatedEstimator(subset=None, ridge=1e-12)
    delta = estimator.estimate(net, x, y)["g"][0]
    held = RemovalEstimator(subset=None).estimate(net, x, y)["g"][0]
    assert abs(delta[3]) < 1e-6 * abs(held[3])  # nothing is lost once the others carry it
    theta_before = {"g": net["g"].theta.copy()}
    net["g"].theta[3] = 0.0
    assert estimator.fold(net, theta_before) == {"g": 1}
    after = B.to_numpy(net.forward(x))  # unit 3 now off in every example
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-8)


def test_the_fold_moves_the_share_theta_before():
    """(R6) with θ⁻ = ¼: a quarter of what the full fold moves."""
    moved = []
    for share in (1.0, 0.25):
        net, x, y = _linear_layer_net(np.random.default_rng(5))
        weight = B.to_numpy(net[3].params["W"]).copy()
        estimator = CompensatedEstimator(subset=None, ridge=1e-12)
        net.forward(x)
        estimator.estimate(net, x, y)
        theta_before = {"g": np.array([1.0, 1.0, 1.0, share])}
        net["g"].theta[3] = 0.0
        estimator.fold(net, theta_before)
        moved.append(B.to_numpy(net[3].params["W"]) - weight)
    np.testing.assert_allclose(moved[1], 0.25 * moved[0], rtol=1e-8)


def test_the_running_gram_is_sliced_with_the_units_and_survives_a_checkpoint():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((9, 5))
    gram = RunningGram(5, decay=0.5)
    gram.update(B.asarray(a[:4]))
    gram.update(B.asarray(a[4:]))
    keep = np.array([True, False, True, True, False])
    gram.keep(keep)
    x = np.hstack([a[:, keep], np.ones((9, 1))])
    expected = 0.5 * x[:4].T @ x[:4] + x[4:].T @ x[4:]  # (R1)
    np.testing.assert_allclose(B.to_numpy(gram.gram), expected, rtol=1e-12)
    gram.current(np.ones(3))
    copy = RunningGram(3)
    copy.load_state_dict(gram.state_dict())
    np.testing.assert_array_equal(B.to_numpy(copy.coefficients), B.to_numpy(gram.coefficients))
    np.testing.assert_array_equal(B.to_numpy(copy.gram), B.to_numpy(gram.gram))


def test_gates_on_conv_filters_are_refused_by_name():
    rng = np.random.default_rng(1)
    net = L.Sequential(L.Conv2D(1, 2, 3, rng=rng, dtype="float64"), L.ReLU(),
                       ("g0", BernoulliGate(2, rng=rng)), L.Flatten(),
                       L.Dense(32, 2, rng=rng, dtype="float64"))
    x = B.asarray(rng.standard_normal((2, 1, 6, 6)))
    net.forward(x)
    with pytest.raises(NotImplementedError, match="gate 'g0' feeds Dense through Flatten"):
        CompensatedEstimator().estimate(net, x, B.asarray(np.array([0, 1])))


def test_the_early_bound_keeps_theta_off_the_vertices_until_its_epoch():
    rng = np.random.default_rng(0)
    net = L.Sequential(("g", BernoulliGate(3, rng=rng)), L.Dense(3, 2, rng=rng, dtype="float64"))
    config = GateConfig(theta_lr=1e3, theta_decay=None, theta_bound=0.1, theta_bound_epochs=2.0,
                        average_visits=1)
    step = ThetaStep(net, config, 100)
    gates = gate_layers(net)
    push = {"g": (np.array([-1.0, 1.0, 0.0]), np.ones(3, dtype=bool))}  # up, down, κ only
    for clock in (0.0, 1.5):
        step.step(gates, push, step.candidates(), clock)
        np.testing.assert_allclose(net["g"].theta, [0.9, 0.1, 0.1])  # (R7)
    step.step(gates, push, step.candidates(), 2.0)
    np.testing.assert_array_equal(net["g"].theta, [1.0, 0.0, 0.0])


def test_the_early_bound_is_recorded_only_when_on():
    from minibern.bernoulli.config import recorded_config
    assert "theta_bound" not in recorded_config(GateConfig())
    on = recorded_config(GateConfig(theta_bound_epochs=3.0))
    assert (on["theta_bound"], on["theta_bound_epochs"]) == (0.05, 3.0)
    with pytest.raises(ValueError, match="theta_bound must lie in"):
        GateConfig(theta_bound=0.5).validate()


def _gated_trainer(mnist, gate_config, **overrides):
    """A small gated LeNet-300-100 run, built as the CLI builds one; (trainer, gate hook)."""
    from minibern.bernoulli.run import build_run
    from minibern.training.trainer import TrainConfig
    config = TrainConfig(**{"model": "lenet300", "epochs": 2, "train_subset": 1000,
                            "width_mult": 0.2, **overrides})
    trainer = build_run(config, mnist, gate_config, log=lambda *_: None)
    return trainer, trainer.hooks[-1]


def test_a_pruned_compensated_run_resumes_exactly_with_its_gram_from_the_checkpoint(mnist,
                                                                                    tmp_path):
    config = GateConfig(estimator="compensated", subset=8, theta_lr=50.0, kappa=3.0,
                        prune_patience=3)
    straight, straight_hook = _gated_trainer(mnist, config)
    straight.fit()
    first, first_hook = _gated_trainer(mnist, config, epochs=1)
    first.fit(tmp_path)
    assert sum(g.n_removed for _, _, g in first_hook.gates) > 0  # pruned when saved
    assert all(gram.gram.shape[0] == gate.n_units + 1  # the Gram followed the pruning
               for _, name, gate in first_hook.gates
               for gram in [first_hook.estimator.grams[name]])
    resumed, hook = _gated_trainer(mnist, config)
    resumed.fit(tmp_path, resume=True)
    for (_, name, a), (_, _, b) in zip(straight_hook.gates, hook.gates):
        np.testing.assert_array_equal(a.theta, b.theta, err_msg=name)
        np.testing.assert_array_equal(B.to_numpy(straight_hook.estimator.grams[name].gram),
                                      B.to_numpy(hook.estimator.grams[name].gram), err_msg=name)
    for key, value in straight.net.named_parameters().items():
        np.testing.assert_array_equal(B.to_numpy(value),
                                      B.to_numpy(resumed.net.named_parameters()[key]), err_msg=key)


def test_a_model_with_conv_gates_is_refused_before_the_run_starts(tmp_path):
    from minibern.bernoulli.config import gate_config_for
    from minibern.cli import train as cli

    with pytest.raises(ValueError, match="lenet5"):
        gate_config_for("lenet5", estimator="compensated")
    gate_config_for("lenet300", estimator="compensated").validate()  # LeNet-300-100 is accepted
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", "lenet5", "--gates", "--estimator", "compensated", "--out", str(out),
                  "--quiet"])
    assert exit_info.value.code == 2
    assert not out.exists()
