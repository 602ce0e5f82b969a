"""Bernoulli gates and the Δ estimators: gradients, sampling discipline, and unbiasedness
against the exact enumeration (networks of ≤ 10 gates)."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import gradcheck as G
from minibern import layers as L
from minibern.bernoulli import flip_products
from minibern.bernoulli.estimators import (ExactEstimator, FirstOrderEstimator, RemovalEstimator,
                                           make_estimator)
from minibern.bernoulli.removal_fused import FusedRemovalEstimator
from minibern.bernoulli.exact import MAX_EXACT_GATES, exact_expected_loss
from minibern.bernoulli.flip_products import linear_change
from minibern.bernoulli.gate import BernoulliGate, bernoulli_bytes
from minibern.losses import per_example_cross_entropy
from tests import naive


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)])
def test_gate_gradients_with_injected_mask(shape):
    rng = np.random.default_rng(0)
    gate = BernoulliGate(3)
    mask = (rng.random((shape[0], 3)) < 0.5).astype(np.float64)
    gate.inject_mask(mask)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    G.check_layer(gate, x, dout)  # dx of (E2)
    gate.forward(B.asarray(x))
    gate.backward(B.asarray(dout))

    def phi(mask_host):  # ⟨gate(x; ξ), u⟩ as a function of a continuous mask
        gate.inject_mask(mask_host)
        return float(np.sum(B.to_numpy(gate.forward(B.asarray(x))) * dout))

    numeric = G.numerical_vjp(phi, mask).sum(axis=0)  # (E3): Σ_n ∂/∂ξ_{n,i}
    assert G.relative_error(B.to_numpy(gate.grad_xi), numeric) < 1e-8


def test_decided_gates_draw_no_random_numbers():
    gate = BernoulliGate(5, theta_init=[1.0, 0.0, 1.0, 1.0, 0.0], rng=np.random.default_rng(3))
    before = gate.rng.bit_generator.state
    y = B.to_numpy(gate.forward(B.asarray(np.ones((7, 5), np.float32))))
    assert gate.rng.bit_generator.state == before
    np.testing.assert_array_equal(y, np.tile([1, 0, 1, 1, 0], (7, 1)))
    gate.theta[1] = 0.5
    y = B.to_numpy(gate.forward(B.asarray(np.ones((7, 5), np.float32))))
    reference = np.random.default_rng(3)
    random_bytes = reference.bit_generator.random_raw(1).astype("<u8").view(np.uint8)[:7]
    if (random_bytes == 128).any():  # (E0)'s tie: one float64 uniform per tied byte
        reference.random(int((random_bytes == 128).sum()))
    assert gate.rng.bit_generator.state == reference.bit_generator.state  # 7 bytes, 1 gate
    np.testing.assert_array_equal(y[:, 1], random_bytes < 128)


def test_byte_sampler_matches_its_equation_draw_by_draw():
    """(E0) written out independently, one draw at a time, against the vectorised sampler."""
    theta = np.array([0.3, 0.5 + 0.4 / 256, 1 / 512, 0.999, 7 / 256])
    drawn = bernoulli_bytes(np.random.default_rng(8), theta, 300)
    reference = np.random.default_rng(8)
    stream = reference.bit_generator.random_raw(-(-300 * 5 // 8)).astype("<u8").tobytes()
    expected, ties = np.empty((300, 5)), []
    for flat in range(300 * 5):
        b, c = stream[flat], int(np.floor(256 * theta[flat % 5]))
        if b == c:
            ties.append(flat)
        expected.flat[flat] = b < c
    for flat, u in zip(ties, reference.random(len(ties))):  # tied draws in row-major order
        expected.flat[flat] = u < 256 * theta[flat % 5] - np.floor(256 * theta[flat % 5])
    assert ties, "this seed should give ties (about 6 expected in 1500 draws)"
    np.testing.assert_array_equal(drawn, expected)


def test_byte_sampler_is_exact_where_theta_sits_between_byte_levels():
    """P(ξ = 1) = θ also for θ strictly inside one 1/256 step (the tie branch carries it)."""
    theta = np.array([0.5 / 256, 0.5 + 0.5 / 256, 255.5 / 256])
    rates = bernoulli_bytes(np.random.default_rng(9), theta, 400_000).mean(axis=0)
    assert np.all(np.abs(rates - theta) < 5 * np.sqrt(theta * (1 - theta) / 400_000))
    # the byte alone would give ⌊256θ⌋/256: 0, 0.5, 255/256 — rejected at this sample size
    assert abs(rates[0] - 0.0) > 5 * np.sqrt(theta[0] / 400_000)


def test_masks_follow_theta_and_evaluation_is_deterministic():
    theta = np.array([0.2, 0.5, 0.9])
    gate = BernoulliGate(3, theta_init=theta, rng=np.random.default_rng(4))
    x = B.asarray(np.ones((20000, 3), np.float32))
    rates = B.to_numpy(gate.forward(x)).mean(axis=0)
    assert np.all(np.abs(rates - theta) < 4 * np.sqrt(theta * (1 - theta) / 20000))
    gate.training = False
    np.testing.assert_array_equal(B.to_numpy(gate.forward(x[:2])), [[0, 1, 1], [0, 1, 1]])


@pytest.mark.host_only
def test_theta_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"theta_init must lie in \[0, 1\].*theta_init\[1\] = 1.5"):
        BernoulliGate(3, theta_init=[0.5, 1.5, 0.2])
    with pytest.raises(ValueError, match=r"theta_init\[0\] = nan"):
        BernoulliGate(1, theta_init=float("nan"))
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'"):
        make_estimator("reinforce")


def _dense_net(rng):
    gates = [BernoulliGate(n, theta_init=rng.uniform(0.2, 0.9, n), rng=rng) for n in (3, 4, 3)]
    net = L.Sequential(("g0", gates[0]), L.Dense(3, 4, rng=rng, dtype="float64"), L.ReLU(),
                       ("g1", gates[1]), L.Dense(4, 3, rng=rng, dtype="float64"), L.ReLU(),
                       ("g2", gates[2]), L.Dense(3, 2, rng=rng, dtype="float64"))
    return net, B.asarray(rng.standard_normal((5, 3))), B.asarray(rng.integers(0, 2, 5))


def _conv_net(rng):
    gates = [BernoulliGate(n, theta_init=rng.uniform(0.2, 0.9, n), rng=rng) for n in (2, 3, 3)]
    net = L.Sequential(L.Conv2D(1, 2, 3, rng=rng, dtype="float64"), L.ReLU(), ("g0", gates[0]),
                       L.Conv2D(2, 3, 3, pad=1, rng=rng, dtype="float64"), L.ReLU(),
                       L.MaxPool2D(2), ("g1", gates[1]), L.Flatten(),
                       L.Dense(12, 3, rng=rng, dtype="float64"), L.ReLU(), ("g2", gates[2]),
                       L.Dense(3, 2, rng=rng, dtype="float64"))
    return net, B.asarray(rng.standard_normal((4, 1, 6, 6))), B.asarray(rng.integers(0, 2, 4))


def test_exact_expected_loss_equals_monte_carlo_average():
    rng = np.random.default_rng(10)
    net, x, y = _dense_net(rng)
    exact = exact_expected_loss(net, x, y)
    samples = [B.to_float(per_example_cross_entropy(net.forward(x), y).mean()) for _ in range(3000)]
    error = 4 * np.std(samples) / np.sqrt(len(samples))
    assert abs(np.mean(samples) - exact) < error


@pytest.mark.parametrize("build, estimator", [(_dense_net, RemovalEstimator),
                                              (_conv_net, RemovalEstimator),
                                              (_dense_net, FusedRemovalEstimator)],
                         ids=["dense", "conv", "dense-fused"])
@pytest.mark.parametrize("subset", [None, 1])
def test_removal_estimator_is_unbiased(build, estimator, subset):
    rng = np.random.default_rng(20)
    net, x, y = build(rng)
    exact = ExactEstimator().estimate(net, x, y)
    removal = estimator(subset=subset)
    draws = {k: [] for k in exact}
    for _ in range(1000):
        net.forward(x)
        for name, (delta, visited) in removal.estimate(net, x, y, rng=rng).items():
            draws[name].append(np.where(visited, delta, np.nan))
    for name, (truth, _) in exact.items():
        values = np.array(draws[name])
        mean = np.nanmean(values, axis=0)
        stderr = np.nanstd(values, axis=0) / np.sqrt(np.sum(~np.isnan(values), axis=0))
        assert np.all(np.abs(mean - truth) <= 4.5 * stderr + 1e-12), (name, mean, truth, stderr)


def test_exact_refuses_large_networks():
    net = L.Sequential(("g", BernoulliGate(MAX_EXACT_GATES + 1)), L.Dense(MAX_EXACT_GATES + 1, 2))
    with pytest.raises(ValueError, match=r"limited to G ≤ 12 gates; this network has 13"):
        ExactEstimator().estimate(net, B.asarray(np.zeros((1, 13), np.float32)),
                                  B.asarray(np.zeros(1, np.int64)))


def test_removal_estimator_visits_only_candidates_and_stays_unbiased_on_them():
    rng = np.random.default_rng(21)
    net, x, y = _dense_net(rng)
    exact = ExactEstimator().estimate(net, x, y)
    candidates = {"g0": np.array([True, False, True]), "g1": np.array([False, True, True, True]),
                  "g2": np.array([True, True, False])}
    removal = RemovalEstimator(subset=1)
    draws = {k: [] for k in exact}
    for _ in range(1000):
        net.forward(x)
        for name, (delta, visited) in removal.estimate(net, x, y, rng=rng, candidates=candidates).items():
            assert not np.any(visited & ~candidates[name]) and np.all(delta[~candidates[name]] == 0)
            draws[name].append(np.where(visited, delta, np.nan))
    for name, (truth, _) in exact.items():
        values = np.array(draws[name])[:, candidates[name]]
        mean = np.nanmean(values, axis=0)
        stderr = np.nanstd(values, axis=0) / np.sqrt(np.sum(~np.isnan(values), axis=0))
        assert np.all(np.abs(mean - truth[candidates[name]]) <= 4.5 * stderr + 1e-12), name


def test_first_subset_limits_the_first_gate_layer_only():
    rng = np.random.default_rng(22)
    net, x, y = _dense_net(rng)
    net.forward(x)
    visited = {name: v for name, (_, v) in RemovalEstimator(subset=2, first_subset=1)
               .estimate(net, x, y, rng=rng).items()}
    assert (visited["g0"].sum(), visited["g1"].sum(), visited["g2"].sum()) == (1, 2, 3)
    with pytest.raises(ValueError, match="first_subset must be a positive integer or None, got 0"):
        RemovalEstimator(subset=2, first_subset=0)


def test_an_all_on_gate_is_the_identity_and_still_gives_its_xi_gradient():
    rng = np.random.default_rng(23)
    gate = BernoulliGate(4, theta_init=1.0, rng=np.random.default_rng(5))
    x, dout = rng.standard_normal((3, 4, 2, 2)), rng.standard_normal((3, 4, 2, 2))
    before = gate.rng.bit_generator.state
    y = gate.forward(B.asarray(x))
    dx = gate.backward(B.asarray(dout))
    assert gate.rng.bit_generator.state == before  # θ = 1 everywhere: no draws
    np.testing.assert_array_equal(B.to_numpy(y), x)
    np.testing.assert_array_equal(B.to_numpy(dx), dout)
    np.testing.assert_allclose(B.to_numpy(gate.grad_xi), (dout * x).sum(axis=(0, 2, 3)), rtol=1e-12)
    gate.theta[2] = 0.0  # no longer all on: the product is taken again
    np.testing.assert_array_equal(B.to_numpy(gate.forward(B.asarray(x)))[:, 2], 0.0)


@pytest.mark.parametrize("consumer", ["dense", "conv", "conv-strided"])
@pytest.mark.parametrize("block_bytes", [None, 1, 3000])
def test_batched_linear_change_matches_the_loop_over_gates(consumer, block_bytes, monkeypatch):
    """(E5a)–(E5b), all pairs at once (in blocks of pairs, down to one pair per block), against
    the per-gate loop they replace, on random pairs with repeated and unsorted gates."""
    if block_bytes is not None:
        monkeypatch.setattr(flip_products, "PAIR_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(24)
    n, n_units, height, width = 6, 5, 5, 4
    if consumer == "dense":
        layer = L.Dense(n_units * height * width, 7, rng=rng)
        stride, pad = 1, 0
    else:
        stride, pad = (1, 1) if consumer == "conv" else (2, 0)
        layer = L.Conv2D(n_units, 3, (3, 2), stride=stride, pad=pad, rng=rng)
    visit = np.array([4, 0, 2, 3])
    change = rng.standard_normal((n, visit.size, height, width)).astype(np.float32)
    rows, cols = rng.integers(0, n, 23), rng.integers(0, visit.size, 23)
    got = linear_change(layer, B.asarray(change), B.asarray(rows), B.asarray(cols),
                        B.asarray(visit))
    weight = B.to_numpy(layer.params["W"]).astype(np.float64)
    expected = naive.removal_linear_change(change.astype(np.float64), rows, cols, visit, weight,
                                           "dense" if consumer == "dense" else "conv", stride, pad)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(B.to_numpy(got), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())
