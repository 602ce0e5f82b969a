"""Visit averages (C3)–(C5), the sequential decision test (C9)–(C10) on synthetic streams, the
audit (C11)–(C12), and θ reaching the right vertices by the projected step alone on a planted
problem (docs/derivations/convergence.md)."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.audit import false_decisions, full_data_gradients
from minibern.bernoulli.averaging import standard_error, update_average
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.hook import GateTrainer
from minibern.bernoulli.rules import certify_rule, sequential_threshold
from minibern.bernoulli.state import GateState
from minibern.bernoulli.theta_sgd import ProjectedSGD
from minibern.training.trainer import Split, TrainConfig, Trainer


class VisitAverages(GateState):
    """A gate layer's state with its averaging window, for the tests below."""

    def __init__(self, n_units, window):
        super().__init__(n_units)
        self.window = window

    def update(self, grad, visited):
        update_average(self, grad, visited, self.window)

    def standard_error(self):
        return standard_error(self, self.window)


def certified(theta, averages, alpha, min_visits, at_one=True):
    return certify_rule(theta, averages.mean, averages.standard_error(), averages.visits, alpha,
                        min_visits, at_one)


@pytest.mark.host_only
def test_visit_average_is_the_running_mean_then_an_exponential_one():
    rng = np.random.default_rng(0)
    stream = rng.normal(size=30)
    averages = VisitAverages(2, window=10)
    visited = np.array([True, False])
    for k, value in enumerate(stream, start=1):
        averages.update(np.array([value, 99.0]), visited)
        if k <= 10:  # (C3) with β = 1/k: the plain mean and population variance so far
            np.testing.assert_allclose(averages.mean[0], stream[:k].mean(), rtol=1e-12)
            np.testing.assert_allclose(averages.var[0], stream[:k].var(), rtol=1e-12, atol=1e-15)
    weights = 0.1 * 0.9 ** np.arange(20)[::-1]  # the last 20 visits at β = 1/W
    expected = stream[:10].mean() * 0.9 ** 20 + weights @ stream[10:]
    np.testing.assert_allclose(averages.mean[0], expected, rtol=1e-12)
    assert averages.visits.tolist() == [30, 0] and averages.mean[1] == 0.0
    n_eff = min(30, 2 * 10 - 1)  # (C4)
    np.testing.assert_allclose(averages.standard_error()[0], np.sqrt(averages.var[0] / n_eff))


@pytest.mark.host_only
def test_visit_average_variance_matches_c4_on_iid_estimates():
    rng = np.random.default_rng(1)
    averages = VisitAverages(4000, window=8)
    for _ in range(200):
        averages.update(rng.normal(size=4000), np.ones(4000, dtype=bool))
    # the spread of the averages across gates is σ²/(2W − 1) = 1/15, and (C5) estimates it
    assert abs(averages.mean.var() * 15 - 1.0) < 0.1
    assert abs(np.mean(averages.standard_error() ** 2) * 15 - 1.0) < 0.1


def _simulate_certification(mean, alpha, visits=300, gates=4000, window=1000, seed=2):
    """Share of gates held at θ = 1 ever certified within ``visits`` visits of N(mean, 1)."""
    rng = np.random.default_rng(seed)
    averages = VisitAverages(gates, window)
    theta = np.ones(gates)
    ever = np.zeros(gates, dtype=bool)
    for _ in range(visits):
        averages.update(rng.normal(mean, 1.0, size=gates), ~ever)
        ever |= certified(theta, averages, alpha, min_visits=10)
    return ever.mean()


@pytest.mark.host_only
def test_sequential_test_bounds_false_certifications_over_all_visits():
    # g = 0 is H₀'s worst case (C8): certifying θ = 1 is a false decision at most α of the time
    assert _simulate_certification(0.0, alpha=0.05) <= 0.05
    # a fixed threshold tested at every visit would not be bounded: z = 2 certifies far more
    rng = np.random.default_rng(2)
    walks = np.cumsum(rng.normal(size=(300, 4000)), axis=0) / np.sqrt(np.arange(1, 301))[:, None]
    assert (walks[9:] < -2.0).any(axis=0).mean() > 0.1


@pytest.mark.host_only
def test_sequential_test_certifies_clear_gates_and_threshold_grows():
    assert _simulate_certification(-0.5, alpha=0.05) > 0.95  # |g| = σ/2: found within 300 visits
    z = sequential_threshold(np.array([10, 100, 1000]), 0.05)
    assert np.all(np.diff(z) > 0) and 3.5 < z[0] < 4.5


@pytest.mark.host_only
def test_a_constant_estimate_is_certified_at_min_visits():
    averages = VisitAverages(3, window=20)
    theta = np.array([0.0, 0.0, 1.0])
    for k in range(1, 11):
        averages.update(np.array([1e-4, -1e-4, 1e-4]), np.ones(3, dtype=bool))
        assert certified(theta, averages, 0.05, min_visits=10).tolist() == [k == 10, False, False]


@pytest.mark.host_only
def test_gates_at_one_are_certified_only_when_asked():
    averages = VisitAverages(2, window=20)
    for _ in range(30):
        averages.update(np.array([-1e-3, 1e-3]), np.ones(2, dtype=bool))
    theta = np.array([1.0, 0.0])
    assert certified(theta, averages, 0.05, 10, at_one=False).tolist() == [False, True]
    assert certified(theta, averages, 0.05, 10, at_one=True).tolist() == [True, True]


@pytest.mark.host_only
def test_false_decisions_count_vertices_against_the_full_data_sign():
    theta = np.array([1.0, 1.0, 0.0, 0.0, 0.5])
    gradient = np.array([-1.0, 2.0, 3.0, -4.0, 5.0])
    assert false_decisions(theta, gradient) == {"at_one": 2, "at_zero": 2, "false_at_one": 1,
                                                "false_at_zero": 1}


# -- a planted problem: 4 informative and 4 noise inputs --------------------------------------
def _planted(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    scores = x[:, :4] @ np.array([[2, -1, -1], [-1, 2, -1], [-1, -1, 2], [1, 1, -2]])
    return x, scores.argmax(axis=1).astype(np.int64)


def _gated_net(seed=0):
    rng = B.make_rng(seed)
    net = L.Sequential(("gate_in", BernoulliGate(8)), ("fc1", L.Dense(8, 16, rng=rng)),
                       ("relu1", L.ReLU()), ("gate1", BernoulliGate(16)),
                       ("fc2", L.Dense(16, 3, rng=rng)))
    net.input_shape = (8,)
    return net


def _train_planted(config: GateConfig, epochs=40):
    x, y = _planted()
    split = Split(B.asarray(x), B.asarray(y))
    net = _gated_net()
    hook = GateTrainer(net, config, n_data=x.shape[0])
    trainer = Trainer(net, {"train": split, "val": split, "test": split},
                      TrainConfig(model="lenet300", epochs=epochs, batch_size=100, seed=0),
                      hooks=[hook], log=lambda *_: None)
    trainer.fit()
    return hook


def test_projected_step_alone_puts_every_gate_on_the_right_vertex():
    config = GateConfig(kappa=20.0, decide_alpha=0.0, prune=False, audit=False)
    hook = _train_planted(config)
    inputs = hook.gates[0][2].theta
    assert inputs[:4].tolist() == [1.0] * 4  # informative inputs kept, exactly
    assert inputs[4:].tolist() == [0.0] * 4  # noise inputs dropped, exactly
    hidden = hook.gates[1][2].theta
    assert np.all((hidden == 0.0) | (hidden == 1.0)) and 0 < hidden.sum() < 16
    assert not any(layer["by_rule"] for layer in hook.decisions()["layers"])


def _share_on_vertex(window, steps=3000, gates=500, seed=3):
    """Gates with g = −σ/4 stepped by (C6) on raw (W = 1) or averaged estimates: the share of
    the last 1000 steps each spends exactly at θ = 1."""
    rng = np.random.default_rng(seed)
    sgd = ProjectedSGD(0.02)
    theta, averages = np.ones(gates), VisitAverages(gates, window)
    on_vertex = np.zeros(gates)
    every = np.ones(gates, dtype=bool)
    for step in range(steps):
        averages.update(rng.normal(-0.25, 1.0, size=gates), every)
        sgd.update(theta, averages.mean)
        if step >= steps - 1000:
            on_vertex += theta == 1.0
    return on_vertex.mean() / 1000


@pytest.mark.host_only
def test_averaging_keeps_a_gate_on_its_vertex_where_raw_steps_leave_it():
    # (C2): raw estimates hold θ near, not at, 1; (C4): the average's sign is right nearly always
    raw, averaged = _share_on_vertex(1), _share_on_vertex(20)
    assert raw < 0.5 and averaged > 0.85  # Φ(−0.25·√39) ≈ 6 % wrong-signed averages at W = 20


def test_audit_agrees_with_a_direct_removal_on_the_planted_net():
    x, y = _planted(n=300)
    net = _gated_net()
    net[0].theta[:] = [1, 1, 1, 1, 0, 0, 0, 0]
    gradients = full_data_gradients(net, B.asarray(x), B.asarray(y), {"gate_in": 0.0,
                                                                       "gate1": 0.0}, 300,
                                    batch_size=128)
    from minibern.losses import per_example_cross_entropy

    def mean_loss(mask):
        net[0].inject_mask(np.broadcast_to(mask, (300, 8)).astype(np.float32).copy())
        try:
            return float(B.to_numpy(per_example_cross_entropy(net.forward(B.asarray(x)),
                                                              B.asarray(y))).mean())
        finally:
            net[0].inject_mask(None)

    base = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=np.float32)
    for i in (0, 5):
        on, off = base.copy(), base.copy()
        on[i], off[i] = 1, 0
        assert gradients["gate_in"][i] == pytest.approx(mean_loss(on) - mean_loss(off), rel=1e-4,
                                                        abs=1e-6)
