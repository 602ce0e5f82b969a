"""Layer outputs and gradients against PyTorch (an independent reference); skipped without torch.

PyTorch is never used by the engine, only here and in benchmarks.
"""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.losses import softmax_cross_entropy

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(host):
    return torch.tensor(host, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_against_torch(stride, pad):
    rng = np.random.default_rng(stride * 10 + pad)
    x, dout_shape = rng.standard_normal((3, 2, 9, 8)), None
    layer = L.Conv2D(2, 4, (3, 2), stride=stride, pad=pad, rng=rng, dtype="float64")
    layer.params["b"] = B.asarray(rng.standard_normal(4))
    y = layer.forward(B.asarray(x))
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(B.asarray(dout))
    xt, wt, bt = _t(x), _t(B.to_numpy(layer.params["W"])), _t(B.to_numpy(layer.params["b"]))
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=pad)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(B.to_numpy(y), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(dx), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(layer.grads["W"]), wt.grad.numpy(), rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(B.to_numpy(layer.grads["b"]), bt.grad.numpy(), rtol=1e-12, atol=1e-11)


def test_maxpool_dense_relu_against_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    net = L.Sequential(L.MaxPool2D(2), L.Flatten(), L.Dense(48, 5, rng=rng, dtype="float64"), L.ReLU())
    y = net.forward(B.asarray(x))
    dout = rng.standard_normal(y.shape)
    dx = net.backward(B.asarray(dout))
    xt, wt = _t(x), _t(B.to_numpy(net[2].params["W"]))
    yt = F.relu(F.max_pool2d(xt, 2).reshape(2, -1) @ wt)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(B.to_numpy(y), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(dx), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(net[2].grads["W"]), wt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_cross_entropy_against_torch():
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((7, 10)) * 5, rng.integers(0, 10, size=7)
    loss, dlogits = softmax_cross_entropy(B.asarray(logits), B.asarray(labels))
    zt = _t(logits)
    lt = F.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    assert B.to_float(loss) == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(B.to_numpy(dlogits), zt.grad.numpy(), rtol=1e-10, atol=1e-14)
