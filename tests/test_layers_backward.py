"""Every backward pass against the float64 numerical VJP (G1), and im2col/col2im adjointness, on
both kernel paths (reference and fast, :mod:`minibern.kernels`) and every backend."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import gradcheck as G
from minibern import layers as L

TOL = 1e-6

pytestmark = pytest.mark.usefixtures("kernels_name")


@pytest.mark.parametrize("seed", range(3))
def test_dense_gradients(seed):
    rng = np.random.default_rng(seed)
    n, d, m = (int(v) for v in rng.integers(1, 6, size=3))
    report = G.check_layer(L.Dense(d, m, rng=rng, dtype="float64"), rng.standard_normal((n, d)),
                           rng=rng, tol=TOL)
    assert set(report.errors) == {"x", "W", "b"} and report.worst < TOL


@pytest.mark.parametrize("seed", range(6))
def test_conv2d_gradients_random_shapes_strides_pads(seed):
    rng = np.random.default_rng(200 + seed)
    n, c, f = (int(v) for v in rng.integers(1, 4, size=3))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    h, w = kh + int(rng.integers(0, 4)), kw + int(rng.integers(0, 4))
    layer = L.Conv2D(c, f, (kh, kw), stride=stride, pad=pad, rng=rng, dtype="float64")
    report = G.check_layer(layer, rng.standard_normal((n, c, h, w)), rng=rng, tol=TOL)
    assert set(report.errors) == {"x", "W", "b"}


def test_conv2d_gradients_when_chunked():
    rng = np.random.default_rng(9)
    layer = L.Conv2D(2, 2, 3, pad=1, rng=rng, dtype="float64", max_col_bytes=4 * 4 * 2 * 9 * 8)
    G.check_layer(layer, rng.standard_normal((3, 2, 4, 4)), rng=rng, tol=TOL)


@pytest.mark.parametrize("size,stride", [(2, 2), (2, 1), (3, 2)])
def test_maxpool_gradients(size, stride):
    rng = np.random.default_rng(size + 7 * stride)
    x = G.distinct_values(rng, (2, 2, 7, 6))  # no ties: max is differentiable there
    G.check_layer(L.MaxPool2D(size, stride), x, rng=rng, tol=TOL)


def test_relu_and_flatten_gradients():
    rng = np.random.default_rng(4)
    G.check_layer(L.ReLU(), G.distinct_values(rng, (3, 5)), rng=rng, tol=TOL)
    G.check_layer(L.Flatten(), rng.standard_normal((2, 3, 2, 2)), rng=rng, tol=TOL)


def test_sequential_gradients_through_every_layer():
    rng = np.random.default_rng(11)
    net = L.Sequential(L.Conv2D(1, 2, 3, pad=1, rng=rng, dtype="float64"), L.ReLU(),
                       L.MaxPool2D(2), L.Flatten(), L.Dense(2 * 3 * 3, 3, rng=rng, dtype="float64"))
    report = G.check_layer(net, G.distinct_values(rng, (2, 1, 6, 6), spacing=0.02), rng=rng, tol=TOL)
    assert {"dense4.W", "conv2d0.W", "x"} <= set(report.errors)


@pytest.mark.parametrize("seed", range(5))
def test_im2col_col2im_are_adjoint(seed):
    rng = np.random.default_rng(300 + seed)
    n, c = (int(v) for v in rng.integers(1, 4, size=2))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride, pad = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    shape = (n, c, kh + int(rng.integers(0, 6)), kw + int(rng.integers(0, 6)))
    x = B.asarray(rng.standard_normal(shape))
    col = L.im2col(x, (kh, kw), stride, pad)
    y = B.asarray(rng.standard_normal(col.shape))
    lhs = float(np.sum(B.to_numpy(col) * B.to_numpy(y)))
    rhs = float(np.sum(B.to_numpy(x) * B.to_numpy(L.col2im(y, shape, (kh, kw), stride, pad))))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)  # (L13)


class _DenseWithWrongBiasGradient(L.Dense):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = self.grads["b"] * 1.01
        return dx


def test_gradcheck_catches_a_wrong_gradient_and_reports_evidence():
    rng = np.random.default_rng(0)
    layer = _DenseWithWrongBiasGradient(3, 2, rng=rng, dtype="float64")
    with pytest.raises(G.GradcheckError) as failure:
        G.check_layer(layer, rng.standard_normal((4, 3)), rng=rng)
    message = str(failure.value)
    assert "'b' (shape (2,))" in message and "index (" in message and "analytic" in message


def test_gradcheck_refuses_float32_layers():
    with pytest.raises(TypeError, match="float64"):
        G.check_layer(L.Dense(2, 2), np.zeros((1, 2)))


@pytest.mark.host_only
def test_distinct_values_keep_away_from_kinks_and_ties():
    values = G.distinct_values(np.random.default_rng(0), (5, 40))
    flat = np.sort(values.ravel())
    assert np.min(np.diff(flat)) >= 0.05 - 1e-12
    assert np.min(np.abs(flat)) >= 0.0125 - 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_select_features_gradients(seed):
    rng = np.random.default_rng(600 + seed)
    d = int(rng.integers(2, 9))
    index = rng.permutation(d)[: int(rng.integers(1, d + 1))]
    report = G.check_layer(L.SelectFeatures(index, d), rng.standard_normal((3, d)), rng=rng, tol=TOL)
    assert set(report.errors) == {"x"}
