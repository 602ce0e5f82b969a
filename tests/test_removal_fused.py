"""The fused removal estimator (minibern/bernoulli/removal_fused.py) against the reference.

It must visit the same gates (same draws) and give the same estimate as RemovalEstimator up to
rounding, on every case the reference handles: subsampled and whole layers, candidates, gates
at θ = 1 (the identity), a layer with no candidate, a layer whose flips change nothing. (That it
is unbiased for the exact Δ is tested beside the reference's test, tests/test_gates.py.)
"""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.config import GateConfig, gate_config_for, recorded_config
from minibern.bernoulli.estimators import RemovalEstimator, make_estimator
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.removal_fused import FusedRemovalEstimator


def _chain(rng, widths=(9, 7, 5), classes=3, theta_low=0.2):
    """A float64 gated chain: gate → Dense → ReLU → gate → ... → Dense (classes)."""
    layers = []
    for k, (width, following) in enumerate(zip(widths, widths[1:] + (classes,))):
        gate = BernoulliGate(width, theta_init=rng.uniform(theta_low, 0.9, width), rng=rng)
        layers += [(f"g{k}", gate), L.Dense(width, following, rng=rng, dtype="float64")]
        if k < len(widths) - 1:
            layers.append(L.ReLU())
    return L.Sequential(*layers)


def _batch(rng, n=12, width=9, classes=3):
    images = np.maximum(rng.standard_normal((n, width)), 0.0)  # zeros, as black pixels
    return B.asarray(images), B.asarray(rng.integers(0, classes, n))


def _both(net, x, y, seed, **kwargs):
    """The reference's and the fused estimate of one forward pass, the visits drawn alike."""
    net.forward(x)
    visits = {key: kwargs.pop(key) for key in ("subset", "first_subset") if key in kwargs}
    reference = RemovalEstimator(**visits).estimate(net, x, y, rng=np.random.default_rng(seed),
                                                    **kwargs)
    fused = FusedRemovalEstimator(**visits).estimate(net, x, y, rng=np.random.default_rng(seed),
                                                     **kwargs)
    return reference, fused


def _assert_same(reference, fused):
    assert list(reference) == list(fused)
    for name, (delta, visited) in reference.items():
        np.testing.assert_array_equal(fused[name][1], visited, err_msg=name)
        np.testing.assert_allclose(fused[name][0], delta, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("visits", [{"subset": None}, {"subset": 3}, {"subset": 2,
                                                                        "first_subset": 4}])
def test_fused_matches_the_reference_gate_by_gate(visits):
    rng = np.random.default_rng(0)
    net = _chain(rng)
    x, y = _batch(rng)
    for seed in range(4):
        reference, fused = _both(net, x, y, seed, **visits)
        assert any(np.any(delta != 0) for delta, _ in reference.values())
        _assert_same(reference, fused)


def test_fused_matches_the_reference_on_candidates_identity_gates_and_empty_layers():
    rng = np.random.default_rng(1)
    net = _chain(rng, widths=(9, 7, 5, 4))
    net["g1"].theta[:] = 1.0  # an all-on gate: the identity, whose mask is a broadcast view
    x, y = _batch(rng)
    reference, fused = _both(net, x, y, 2, subset=None)  # the identity gate visited too
    assert fused["g1"][1].all() and np.any(fused["g1"][0] != 0)
    _assert_same(reference, fused)
    candidates = {"g0": rng.random(9) < 0.6, "g1": np.zeros(7, dtype=bool),  # g1: none to visit
                  "g2": np.ones(5, dtype=bool), "g3": rng.random(4) < 0.5}
    reference, fused = _both(net, x, y, 3, subset=2, candidates=candidates)
    _assert_same(reference, fused)
    assert not fused["g1"][1].any()
    # a batch whose every input is 0: no flip of the first gate layer changes anything, the
    # later layers' flips do (fc1's bias makes their inputs non-zero)
    net[1].params["b"][:] = B.asarray(rng.uniform(0.5, 1.0, 7))
    blank = B.asarray(np.zeros((12, 9)))
    reference, fused = _both(net, blank, y, 4, subset=None)
    assert np.all(fused["g0"][0] == 0) and np.any(fused["g2"][0] != 0)
    _assert_same(reference, fused)


def test_fused_matches_the_reference_on_a_float32_lenet300():
    from minibern.bernoulli.gated_models import lenet300_100

    rng = np.random.default_rng(5)
    net = lenet300_100(0.1, seed=0, gates=True, theta_init=0.8)
    for _, layer in net:
        if layer.is_gate:
            layer.rng = np.random.default_rng(6)  # the masks' draws (the trainer sets this)
    images = rng.random((32, 784), dtype=np.float32) * (rng.random((32, 784)) < 0.3)
    x, y = B.asarray(images.astype(np.float32)), B.asarray(rng.integers(0, 10, 32))
    for seed in range(3):
        reference, fused = _both(net, x, y, seed, subset=8)
        for name, (delta, visited) in reference.items():
            np.testing.assert_array_equal(fused[name][1], visited, err_msg=name)
            np.testing.assert_allclose(fused[name][0], delta, rtol=1e-5,
                                       atol=1e-6 * np.abs(delta).max(), err_msg=name)


def test_layers_other_than_dense_relu_and_gates_are_refused():
    rng = np.random.default_rng(3)
    net = L.Sequential(("g0", BernoulliGate(4, theta_init=0.5, rng=rng)),
                       L.Dense(4, 3, rng=rng, dtype="float64"), L.Flatten(),
                       L.Dense(3, 2, rng=rng, dtype="float64"))
    x = B.asarray(rng.standard_normal((2, 4)))
    net.forward(x)
    with pytest.raises(NotImplementedError, match="not Flatten; leave --fused-estimator off"):
        FusedRemovalEstimator().estimate(net, x, B.asarray(np.array([0, 1])))


def test_conv_gates_are_refused_with_the_fix():
    rng = np.random.default_rng(2)
    net = L.Sequential(L.Conv2D(1, 2, 3, rng=rng, dtype="float64"), L.ReLU(),
                       ("g0", BernoulliGate(2, theta_init=0.5, rng=rng)), L.Flatten(),
                       L.Dense(32, 2, rng=rng, dtype="float64"))
    x = B.asarray(rng.standard_normal((2, 1, 6, 6)))
    net.forward(x)
    with pytest.raises(NotImplementedError,
                       match="gate 'g0' is on conv filters.*--fused-estimator"):
        FusedRemovalEstimator().estimate(net, x, B.asarray(np.array([0, 1])))


def test_the_cli_refuses_it_for_lenet5_before_the_run_starts(tmp_path):
    from minibern.cli import train as cli

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", "lenet5", "--gates", "--fused-estimator", "--out", str(out),
                  "--quiet"])
    assert exit_info.value.code == 2
    assert not out.exists()


def test_the_setting_is_checked_and_recorded_only_when_on():
    assert "fused_estimator" not in recorded_config(GateConfig())
    assert recorded_config(GateConfig(fused_estimator=True))["fused_estimator"] is True
    assert type(make_estimator("removal", fused=True)) is FusedRemovalEstimator
    with pytest.raises(ValueError, match="use it with --estimator removal"):
        GateConfig(estimator="compensated", fused_estimator=True).validate()
    with pytest.raises(ValueError, match="not lenet5's conv gates; leave it off"):
        gate_config_for("lenet5", fused_estimator=True)


def test_a_short_fused_run_follows_the_reference_run(mnist):
    """Two epochs of a small gated LeNet-300-100: the same seed with either path keeps the same
    θ up to rounding (θ's path amplifies a difference in the last bit only slowly)."""
    from minibern.bernoulli.run import build_run
    from minibern.training.trainer import TrainConfig

    runs = []
    for fused in (False, True):
        config = TrainConfig(model="lenet300", epochs=2, train_subset=1000, width_mult=0.2)
        trainer = build_run(config, mnist, GateConfig(subset=8, theta_init=0.8, fused_estimator=fused),
                            log=lambda *_: None)
        trainer.fit()
        runs.append({name: gate.full_theta() for _, name, gate in trainer.hooks[-1].gates})
    for name, theta in runs[0].items():
        assert np.any((theta > 0) & (theta < 1)), name  # θ moved off its start of 0.8 ...
        assert np.any(theta != 0.8), name
        assert np.mean(np.abs(runs[1][name] - theta)) < 0.05, name  # ... alike on both paths
