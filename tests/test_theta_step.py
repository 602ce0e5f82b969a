"""The θ step's pieces on a small gated network: estimate → visit average → projected step
(E10), (C3)–(C6), (B20)–(B22) (minibern.bernoulli.theta_step), the unit prices (B14)–(B15)
(minibern.bernoulli.prices), the recorder (minibern.bernoulli.recording) and metrics.json's
``decisions`` (minibern.bernoulli.audit.decisions_report)."""
import inspect
from types import SimpleNamespace

import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.audit import decisions_report
from minibern.bernoulli.config import ESTIMATORS, GateConfig
from minibern.bernoulli.estimators import make_estimator
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.prices import UnitPrices
from minibern.bernoulli.recording import GateRecorder
from minibern.bernoulli.theta_step import ThetaStep
from minibern.bernoulli.topology import gate_layers
from minibern.losses import softmax_cross_entropy

N_DATA = 100


def _net(theta=0.5, seed=0):
    rng = np.random.default_rng(seed)
    return L.Sequential(("g0", BernoulliGate(4, theta_init=theta, rng=rng)),
                        L.Dense(4, 3, rng=rng, dtype="float64"), L.ReLU(),
                        ("g1", BernoulliGate(3, theta_init=theta, rng=rng)),
                        L.Dense(3, 2, rng=rng, dtype="float64"))


def _estimates(g0, v0, g1, v1):
    return {"g0": (np.asarray(g0, dtype=float), np.asarray(v0)),
            "g1": (np.asarray(g1, dtype=float), np.asarray(v1))}


def test_the_step_moves_visited_movable_gates_by_the_scaled_visit_average():
    net = _net()
    config = GateConfig(kappa=2.0, theta_lr=0.1, theta_decay=None)
    step = ThetaStep(net, config, N_DATA)
    step.states["g0"].frozen[3] = True  # decided: never moves, not a candidate
    candidates = step.candidates()
    delta = [0.01, -0.03, 0.5, 0.7]
    visited = np.array([True, True, False, True])
    gates = gate_layers(net)
    moved = step.step(gates, _estimates(delta, visited, [0.0] * 3, [True] * 3), candidates, 0.0)
    grad, movable = moved["g0"]
    np.testing.assert_allclose(grad, np.asarray(delta) + 2.0 / N_DATA)  # (E10)
    np.testing.assert_array_equal(movable, [True, True, False, False])
    # first visit: the average is the estimate (C3); n/m = 3 movable / 2 moved (C6)
    expected = np.clip(0.5 - 0.1 * 1.5 * (np.asarray(delta[:2]) + 0.02), 0, 1)  # (B20)
    np.testing.assert_allclose(gates[0][2].theta[:2], expected, rtol=1e-12)
    np.testing.assert_array_equal(gates[0][2].theta[2:], [0.5, 0.5])
    assert step.states["g0"].visits.tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(gates[1][2].theta, 0.5 - 0.1 * 0.02)


def test_theta_is_clipped_into_the_box_at_the_start_and_after_a_step():
    net = _net(theta=1.0)
    step = ThetaStep(net, GateConfig(hyperprior=False), N_DATA)
    gates = gate_layers(net)
    assert all(np.all(gate.theta == 1 - 1e-6) for _, _, gate in gates)
    step.step(gates, _estimates([-9.0] * 4, [True] * 4, [9.0] * 3, [True] * 3),
              step.candidates(), 0.0)
    np.testing.assert_array_equal(gates[0][2].theta, 1 - 1e-6)
    np.testing.assert_array_equal(gates[1][2].theta, 1e-6)


def test_unit_prices_are_computed_once_per_width_unless_they_follow_theta():
    net = _net()
    prices = UnitPrices(net, GateConfig(kappa=2.0), N_DATA)
    before = prices.gradient("g1")
    prices.follow(gate_layers(net))  # (B14) does not depend on θ: nothing recomputed
    assert prices.gradient("g1") is before
    net["g1"].keep_units(np.array([True, False, True]))
    prices.resize(net)
    assert prices.gradient("g1").shape == (2,) and np.all(prices.gradient("g1") == 2.0 / N_DATA)
    expected = UnitPrices(net, GateConfig(kappa=2.0, kappa_expected_params=True), N_DATA)
    first = expected.gradient("g1").copy()
    net["g0"].theta[:] = 0.25  # fewer expected inputs: g1's units cost fewer weights (B14′)
    expected.follow(gate_layers(net))
    assert np.all(expected.gradient("g1") < first)


def test_the_recorder_reports_n_times_the_mean_estimate_of_each_period():
    net = _net()
    gates = gate_layers(net)
    recorder = GateRecorder(gates, n_data=N_DATA)
    recorder.add("g0", np.array([1.0, 2.0, 3.0, 4.0]), np.array([True, True, False, False]))
    recorder.add("g0", np.array([3.0, 9.0, 9.0, 9.0]), np.array([True, False, False, False]))
    recorder.keep("g0", np.array([True, True, True, False]))
    net["g0"].keep_units(np.array([True, True, True, False]))
    history = {}
    recorder.snapshot(history, 7, gates)
    assert history["theta_snapshot_steps"] == [7]
    np.testing.assert_allclose(history["gradient_snapshots"][0],
                               [200.0, 200.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert history["theta_snapshots"][0] == [0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5]
    assert not recorder.grad_count["g0"].any()  # the sums restart at each snapshot


def test_decisions_count_certified_gates_in_the_arrays_and_removed():
    gates = [(0, "a", SimpleNamespace(n_original=4)), (1, "b", SimpleNamespace(n_original=6))]
    states = {"a": SimpleNamespace(certified=np.array([True, False, True])),
              "b": SimpleNamespace(certified=np.zeros(6, dtype=bool))}
    report = decisions_report(gates, states, {"a": 1, "b": 2}, 0.05, None)
    assert [layer["by_rule"] for layer in report["layers"]] == [3, 2]
    assert report["share_by_rule"] == pytest.approx(0.5) and report["false_rate"] is None
    audited = decisions_report(gates, states, {"a": 0, "b": 0}, 0.05, {"false_rate": 0.25})
    assert audited["false_rate"] == 0.25


def test_every_estimator_answers_the_same_call():
    signatures = {name: inspect.signature(make_estimator(name, None).estimate)
                  for name in ESTIMATORS}
    assert len(set(map(str, signatures.values()))) == 1, signatures
    rng = np.random.default_rng(3)
    net = _net(seed=3)
    x, y = B.asarray(rng.standard_normal((6, 4))), B.asarray(rng.integers(0, 2, 6))
    _, dlogits = softmax_cross_entropy(net.forward(x), y)
    net.backward(dlogits)
    for name in ESTIMATORS:  # nothing set from outside: the batch comes with the call
        found = make_estimator(name, None).estimate(net, x, y, rng=rng, candidates=None)
        assert sorted(found) == ["g0", "g1"], name
        assert all(delta.shape == visited.shape == (gate.n_units,) and visited.all()
                   for (_, gname, gate) in gate_layers(net)
                   for delta, visited in [found[gname]]), name


def test_theta_is_written_by_the_theta_step_only():
    """Outside the gate itself (construction, pruning's slice), no module of the method assigns
    to a gate's θ but minibern/bernoulli/theta_step.py."""
    import re
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "minibern" / "bernoulli"
    write = re.compile(r"\.theta\s*(\[[^\]]*\])?\s*[-+*/]?=(?!=)|out=[\w.]*\.theta\b")
    writers = {path.name for path in package.glob("*.py")
               if write.search(path.read_text(encoding="utf-8"))}
    assert writers == {"theta_step.py", "gate.py"}, writers


def _per_layer_reference(theta, state, delta, visited, candidates, prior, config, clock):
    """The θ step of one layer on its own (E10), (C3)–(C6), (B20)–(B22)."""
    from minibern.bernoulli.averaging import update_average
    from minibern.bernoulli.theta_sgd import ProjectedSGD
    grad = delta + prior
    movable = visited & candidates
    scale = int(candidates.sum()) / max(int(movable.sum()), 1)
    update_average(state, grad, movable, config.average_visits)
    ProjectedSGD(config.theta_lr, config.theta_decay).update(theta, scale * state.mean, t=clock,
                                                             mask=movable)


def test_all_layers_at_once_step_bitwise_as_each_layer_alone_and_follow_pruning():
    """The flat layout (minibern.bernoulli.flat_layout) changes no bit: every layer's θ and
    averages equal those of the per-layer step, also after a unit leaves the arrays."""
    from minibern.bernoulli.state import GateState
    config = GateConfig(kappa=2.0, theta_lr=0.3, theta_decay=None)
    net = _net(theta=0.6)
    step = ThetaStep(net, config, N_DATA)
    gates = gate_layers(net)
    rng = np.random.default_rng(5)
    reference = {name: (gate.theta.copy(), GateState(gate.n_units)) for _, name, gate in gates}
    for t in range(6):
        if t == 3:  # prune unit 1 of g0 in both (as GateTrainer._remove does)
            keep = np.array([True, False, True, True])
            net["g0"].keep_units(keep)
            step.keep("g0", keep)
            step.prices.resize(net)
            theta, state = reference["g0"]
            state.keep(keep)
            reference["g0"] = (theta[keep].copy(), state)
            gates = gate_layers(net)
        step.states["g1"].frozen[0] = t >= 2
        reference["g1"][1].frozen[0] = t >= 2
        estimates = {name: (rng.standard_normal(gate.n_units) / 50,
                            rng.random(gate.n_units) < 0.7) for _, name, gate in gates}
        candidates = step.candidates()
        step.step(gates, estimates, candidates, float(t))
        for _, name, gate in gates:
            theta, state = reference[name]
            _per_layer_reference(theta, state, *estimates[name], ~state.frozen,
                                 step.prices.gradient(name), config, float(t))
            assert np.array_equal(gate.theta, theta), (t, name)
            assert np.array_equal(step.states[name].mean, state.mean), (t, name)
            assert np.array_equal(step.states[name].var, state.var), (t, name)
            assert step.states[name].mean.base is step.flat.state.mean  # a view of the flat one


def test_per_layer_ratio_counts_each_layer_apart_and_empty_layers():
    from minibern.bernoulli.flat_layout import FlatLayout
    layout = FlatLayout()
    gates = [(0, "a", SimpleNamespace(n_units=3)), (1, "b", SimpleNamespace(n_units=0)),
             (2, "c", SimpleNamespace(n_units=2))]
    from minibern.bernoulli.state import GateState
    layout.bind(gates, {name: GateState(gate.n_units) for _, name, gate in gates})
    ratio = layout.per_layer(np.array([1, 1, 1, 1, 1]), np.array([1, 0, 0, 0, 0]))
    np.testing.assert_array_equal(ratio, [3.0, 3.0, 3.0, 2.0, 2.0])  # c: 2 / max(0, 1)
