"""Optimisers: one step against the formulas (O1)/(O2), state slicing, checkpoints, and a
tiny network whose loss falls."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.losses import softmax_cross_entropy
from minibern.optim import SGD, Adam


def _param_and_grads(rng, shape=(3, 2), steps=3):
    return rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(steps)]


def test_sgd_momentum_follows_formula():
    rng = np.random.default_rng(0)
    p0, grads = _param_and_grads(rng)
    p = B.asarray(p0.copy())
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    want, v = p0.copy(), np.zeros_like(p0)
    for g in grads:
        opt.step({"w": p}, {"w": B.asarray(g)})
        v = 0.9 * v + (g + 0.01 * want)
        want = want - 0.1 * v
    np.testing.assert_allclose(B.to_numpy(p), want, rtol=1e-12)


def test_adam_follows_formula():
    rng = np.random.default_rng(1)
    p0, grads = _param_and_grads(rng)
    p = B.asarray(p0.copy())
    opt = Adam(lr=0.01)
    want, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        opt.step({"w": p}, {"w": B.asarray(g)})
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        want = want - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(B.to_numpy(p), want, rtol=1e-10)


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.05), lambda: Adam(lr=0.01)])
def test_sliced_state_steps_like_the_kept_rows(make):
    """Deleting rows from a parameter and its state, then stepping, equals stepping the full
    parameter and deleting the rows afterwards (what pruning relies on)."""
    rng = np.random.default_rng(2)
    p0, grads = _param_and_grads(rng, shape=(5, 3), steps=4)
    keep = np.array([True, False, True, True, False])
    full, pruned = B.asarray(p0.copy()), None
    opt_full, opt_pruned = make(), make()
    for step, g in enumerate(grads):
        opt_full.step({"w": full}, {"w": B.asarray(g)})
        if step == 1:
            pruned = B.asarray(B.to_numpy(full)[keep])
            opt_pruned.state = {"w": {k: B.asarray(B.to_numpy(v).copy())
                                      for k, v in opt_full.state["w"].items()}}
            opt_pruned.steps = opt_full.steps
            opt_pruned.slice_state("w", keep, axis=0)
        elif step > 1:
            opt_pruned.step({"w": pruned}, {"w": B.asarray(g[keep])})
    np.testing.assert_allclose(B.to_numpy(pruned), B.to_numpy(full)[keep], rtol=1e-12)


def test_state_dict_roundtrip_continues_identically():
    rng = np.random.default_rng(3)
    p0, grads = _param_and_grads(rng, steps=4)
    a, b = B.asarray(p0.copy()), B.asarray(p0.copy())
    opt_a, opt_b = Adam(lr=0.01), Adam(lr=0.01)
    for g in grads[:2]:
        opt_a.step({"w": a}, {"w": B.asarray(g)})
        opt_b.step({"w": b}, {"w": B.asarray(g)})
    saved = opt_b.state_dict()
    assert all(isinstance(v, np.ndarray) for k, v in saved.items() if k != "steps")
    opt_b = Adam(lr=0.01)
    opt_b.load_state_dict(saved)
    for g in grads[2:]:
        opt_a.step({"w": a}, {"w": B.asarray(g)})
        opt_b.step({"w": b}, {"w": B.asarray(g)})
    np.testing.assert_array_equal(B.to_numpy(a), B.to_numpy(b))


@pytest.mark.host_only
def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="lr must be a positive"):
        SGD(lr=0)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        SGD(lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        Adam(weight_decay=-1)


def _blobs(rng, n=200):
    centers = rng.standard_normal((3, 4)) * 3
    labels = rng.integers(0, 3, size=n)
    x = centers[labels] + rng.standard_normal((n, 4))
    return B.asarray(x.astype(np.float32)), B.asarray(labels)


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, momentum=0.9), lambda: Adam(lr=0.01)],
                         ids=["sgd", "adam"])
def test_tiny_network_loss_falls(make):
    rng = np.random.default_rng(4)
    x, y = _blobs(rng)
    net = L.Sequential(L.Dense(4, 16, rng=rng), L.ReLU(), L.Dense(16, 3, rng=rng))
    opt = make()
    losses = []
    for _ in range(60):
        loss, dlogits = softmax_cross_entropy(net.forward(x), y)
        net.backward(dlogits)
        opt.step(net)
        losses.append(B.to_float(loss))
    assert losses[-1] < 0.3 * losses[0]
    assert all(v.dtype == np.float32 for v in net.named_parameters().values())
