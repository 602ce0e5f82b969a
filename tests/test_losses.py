"""Softmax cross-entropy: value against exact arithmetic, gradient against (G1), stability."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import gradcheck as G
from minibern.losses import accuracy, softmax_cross_entropy
from tests import naive


def _labels(values):
    return B.asarray(np.asarray(values, dtype=np.int64))


@pytest.mark.parametrize("seed", range(3))
def test_value_matches_exact_arithmetic(seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, size=5)
    loss, _ = softmax_cross_entropy(B.asarray(logits), _labels(labels))
    assert B.to_float(loss) == pytest.approx(naive.softmax_cross_entropy(logits, labels), rel=1e-12)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5))
    labels = _labels(rng.integers(0, 5, size=6))
    _, dlogits = softmax_cross_entropy(B.asarray(logits), labels)

    def phi(z_host):
        return B.to_float(softmax_cross_entropy(B.asarray(z_host), labels)[0])

    numeric = G.numerical_vjp(phi, logits)
    assert G.relative_error(B.to_numpy(dlogits), numeric) < 1e-7


def test_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])
    loss, dlogits = softmax_cross_entropy(B.asarray(logits), _labels([1, 2, 0]))
    loss, dlogits = B.to_float(loss), B.to_numpy(dlogits)
    # example 0 misses by 2e4, example 1 is certain, example 2 splits between two classes
    assert loss == pytest.approx((2e4 + 0.0 + np.log(2.0)) / 3, rel=1e-12)
    assert np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)
    float32_loss, _ = softmax_cross_entropy(B.asarray(logits.astype(np.float32)), _labels([1, 2, 0]))
    assert np.isfinite(B.to_float(float32_loss))


def test_bad_labels_are_named():
    logits = B.asarray(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"labels must lie in 0..2.*found 0..3"):
        softmax_cross_entropy(logits, _labels([0, 3]))
    with pytest.raises(TypeError, match="integer array"):
        softmax_cross_entropy(logits, B.asarray(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        softmax_cross_entropy(logits, _labels([0, 1, 2]))
    with pytest.raises(ValueError, match=r"logits must be \(N, K\)"):
        softmax_cross_entropy(B.asarray(np.zeros(3)), _labels([0, 1, 2]))


def test_accuracy():
    logits = B.asarray(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]))
    assert accuracy(logits, _labels([1, 0, 0])) == pytest.approx(2 / 3)
