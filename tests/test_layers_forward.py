"""Every layer's forward pass against a naive loop (tests/naive.py), over seeded random shapes,
on both kernel paths (reference and fast, :mod:`minibern.kernels`) and every backend."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from tests import naive

SEEDS = range(4)

pytestmark = pytest.mark.usefixtures("kernels_name")


def _float64(host):
    return B.asarray(np.asarray(host, np.float64))


@pytest.mark.parametrize("seed", SEEDS)
def test_dense_matches_loop(seed):
    rng = np.random.default_rng(seed)
    n, d, m = rng.integers(1, 6, size=3)
    layer = L.Dense(int(d), int(m), rng=rng, dtype="float64")
    layer.params["b"] = _float64(rng.standard_normal(m))
    x = rng.standard_normal((n, d))
    got = B.to_numpy(layer.forward(_float64(x)))
    want = naive.dense(x, B.to_numpy(layer.params["W"]), B.to_numpy(layer.params["b"]))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_conv2d_matches_loop(seed):
    rng = np.random.default_rng(100 + seed)
    n, c, f = (int(v) for v in rng.integers(1, 4, size=3))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    h, w = kh + int(rng.integers(0, 5)), kw + int(rng.integers(0, 5))
    layer = L.Conv2D(c, f, (kh, kw), stride=stride, pad=pad, rng=rng, dtype="float64")
    layer.params["b"] = _float64(rng.standard_normal(f))
    x = rng.standard_normal((n, c, h, w))
    got = B.to_numpy(layer.forward(_float64(x)))
    want = naive.conv2d(x, B.to_numpy(layer.params["W"]), B.to_numpy(layer.params["b"]), stride, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("size,stride", [(2, 2), (2, 1), (3, 2), (3, 3)])
def test_maxpool_matches_loop(size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((2, 3, 7, 6))
    got = B.to_numpy(L.MaxPool2D(size, stride).forward(_float64(x)))
    np.testing.assert_array_equal(got, naive.maxpool2d(x, size, stride))


def test_maxpool_tie_sends_gradient_to_one_input():
    x = _float64(np.ones((1, 1, 2, 2)))
    layer = L.MaxPool2D(2)
    layer.forward(x)
    dx = B.to_numpy(layer.backward(_float64(np.full((1, 1, 1, 1), 3.0))))
    np.testing.assert_array_equal(dx, [[[[3.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("size,stride,shape", [(2, 2, (2, 3, 8, 6)), (2, 2, (2, 3, 7, 5)),
                                               (2, 1, (1, 2, 5, 5)), (3, 2, (2, 2, 7, 6)),
                                               (3, 3, (1, 2, 9, 9)), (1, 1, (1, 2, 3, 3))])
def test_maxpool_backward_with_many_ties_matches_loop(size, stride, shape):
    """Small integers tie often: every window's gradient must reach its first maximum only,
    whether the windows tile the input (dx written once) or overlap / leave a ragged edge."""
    rng = np.random.default_rng(size * 100 + stride * 10 + shape[2])
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    layer = L.MaxPool2D(size, stride)
    y = layer.forward(_float64(x))
    dout = rng.standard_normal(y.shape)
    dx = B.to_numpy(layer.backward(_float64(dout)))
    np.testing.assert_array_equal(dx, naive.maxpool2d_backward(x, dout, size, stride))


def test_relu_and_flatten_match_loops():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_array_equal(B.to_numpy(L.ReLU().forward(_float64(x))), naive.relu(x))
    flat = B.to_numpy(L.Flatten().forward(_float64(x)))
    assert flat.shape == (2, 12)
    assert flat[1, 1 * 4 + 0 * 2 + 1] == x[1, 1, 0, 1]  # index c*H*W + h*W + w


def test_layers_keep_float32_end_to_end():
    rng = np.random.default_rng(0)
    net = L.Sequential(L.Conv2D(1, 2, 3, rng=rng), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                       L.Dense(2 * 3 * 3, 4, rng=rng))
    x = B.asarray(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    y = net.forward(x)
    dx = net.backward(B.asarray(np.ones((2, 4), np.float32)))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.named_gradients().values())


def test_backward_leaves_inputs_and_dout_untouched():
    rng = np.random.default_rng(1)
    cases = [(L.Dense(4, 3, dtype="float64"), (2, 4)), (L.ReLU(), (2, 4)),
             (L.Conv2D(2, 2, 3, pad=1, dtype="float64"), (2, 2, 4, 4)),
             (L.MaxPool2D(2), (2, 2, 4, 4)), (L.Flatten(), (2, 2, 2, 2))]
    for layer, shape in cases:
        x = _float64(rng.standard_normal(shape))
        x_before = B.to_numpy(x).copy()
        y = layer.forward(x)
        dout = _float64(rng.standard_normal(y.shape))
        dout_before = B.to_numpy(dout).copy()
        layer.backward(dout)
        np.testing.assert_array_equal(B.to_numpy(x), x_before, err_msg=type(layer).__name__)
        np.testing.assert_array_equal(B.to_numpy(dout), dout_before, err_msg=type(layer).__name__)


def test_sequential_names_parameters():
    net = L.Sequential(L.Dense(3, 4), L.ReLU(), ("head", L.Dense(4, 2)))
    assert list(net.named_parameters()) == ["dense0.W", "dense0.b", "head.W", "head.b"]
    assert net.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2
    assert net["head"] is net[2]


@pytest.mark.parametrize("seed", SEEDS)
def test_select_features_matches_loop(seed):
    rng = np.random.default_rng(500 + seed)
    n, d = int(rng.integers(1, 5)), int(rng.integers(2, 9))
    index = rng.permutation(d)[: int(rng.integers(1, d + 1))]
    x = rng.standard_normal((n, d))
    got = B.to_numpy(L.SelectFeatures(index, d).forward(_float64(x)))
    want = np.array([[x[i, k] for k in index] for i in range(n)])
    np.testing.assert_array_equal(got, want)
