"""The MNIST models: shapes, width multiplier, and their counts against hand-computed values."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli import gated_models as G
from minibern.bernoulli.topology import kept_units
from minibern.models import build_model, lenet300_100, lenet5_caffe
from minibern.training.summary import summarize


def test_lenet300_counts_by_hand():
    s = summarize(lenet300_100())
    assert s["architecture"] == [784, 300, 100]
    assert s["params"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10  # 266,610
    assert s["flops_per_example"] == 784 * 300 + 300 * 100 + 100 * 10


def test_lenet5_counts_by_hand():
    s = summarize(lenet5_caffe())
    assert s["architecture"] == [20, 50, 800, 500]
    conv1 = 20 * 1 * 25 + 20
    conv2 = 50 * 20 * 25 + 50
    assert s["params"] == conv1 + conv2 + 800 * 500 + 500 + 500 * 10 + 10  # 431,080
    macs = 20 * 25 * 24 * 24 + 50 * 20 * 25 * 8 * 8 + 800 * 500 + 500 * 10
    assert s["flops_per_example"] == macs


@pytest.mark.parametrize("name,shape", [("lenet300", (3, 784)), ("lenet5", (3, 1, 28, 28))])
def test_forward_backward_shapes_with_width(name, shape):
    net = build_model(name, width_mult=0.5, seed=1)
    x = B.asarray(np.random.default_rng(0).random(shape, dtype=np.float32))
    logits = net.forward(x)
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert net.backward(B.zeros((3, 10))).shape == shape
    widths = summarize(net)["architecture"]
    assert widths == ([784, 150, 50] if name == "lenet300" else [10, 25, 400, 250])


def test_same_seed_same_initial_weights_and_bad_width():
    a, b, c = lenet300_100(seed=4), lenet300_100(seed=4), lenet300_100(seed=5)
    wa, wb, wc = (B.to_numpy(n.named_parameters()["fc1.W"]) for n in (a, b, c))
    assert np.array_equal(wa, wb) and not np.array_equal(wa, wc)
    with pytest.raises(ValueError, match="width_mult must be a positive number"):
        lenet300_100(width_mult=0)
    with pytest.raises(ValueError, match="unknown model 'lenet7'"):
        build_model("lenet7")


def test_gated_counts_follow_the_deterministic_mask():
    net = G.lenet300_100(gates=True)
    net["gate_in"].theta[:400] = 0.0
    net["gate1"].theta[:100] = 0.2   # below ½: dropped in evaluation
    net["gate2"].theta[:10] = 0.6    # above ½: kept
    s = summarize(net, kept=kept_units(net))
    assert s["architecture"] == [384, 200, 100]
    assert s["params"] == 384 * 200 + 200 + 200 * 100 + 100 + 100 * 10 + 10
    assert s["flops_per_example"] == 384 * 200 + 200 * 100 + 100 * 10
    conv = G.lenet5_caffe(gates=True)
    conv["gate_conv2"].theta[:10] = 0.0
    assert summarize(conv, kept=kept_units(conv))["architecture"] == [20, 40, 640, 500]
    assert summarize(conv)["architecture"] == [20, 50, 800, 500]  # without kept: the arrays


@pytest.mark.parametrize("name,names", [
    ("lenet300", ["gate_in", "fc1", "relu1", "gate1", "fc2", "relu2", "gate2", "fc3"]),
    ("lenet5", ["conv1", "pool1", "relu1", "gate_conv1", "conv2", "pool2", "relu2", "gate_conv2",
                "flatten", "fc1", "relu3", "gate_fc1", "fc2"])])
def test_gated_models_insert_the_gates_by_name_over_the_units_at_their_place(name, names):
    """The gates go between the engine's layers (whose weights stay those of the same seed),
    each as wide as the tensor it multiplies (gate widths follow the width multiplier)."""
    plain = build_model(name, 0.5, seed=3)
    gated = G.build_model(name, 0.5, seed=3, gates=True, theta_init=0.7)
    assert gated.names == names and gated.input_shape == plain.input_shape
    assert [n for n in gated.names if not gated[n].is_gate] == plain.names
    for key, value in plain.named_parameters().items():
        assert np.array_equal(B.to_numpy(gated.named_parameters()[key]), B.to_numpy(value))
    x = B.asarray(np.random.default_rng(0).random((2,) + plain.input_shape, dtype=np.float32))
    gated.eval().forward(x)
    for position, layer in enumerate(gated.layers):
        if layer.is_gate:
            assert layer.n_units == gated.outputs[position].shape[1]
            assert np.all(layer.theta == 0.7)
    assert G.build_model(name, 0.5, seed=3).names == plain.names  # gates=False: the engine's


def test_lenet5_pool_then_relu_is_bitwise_the_textbook_relu_then_pool():
    """lenet5_caffe runs conv → pool → ReLU; outputs and every gradient equal conv → ReLU → pool
    (layers.md: the two commute), including windows whose maximum is tied or ≤ 0."""
    net = lenet5_caffe(seed=2)
    order = [name for name, _ in net]
    assert order.index("pool1") < order.index("relu1") and order.index("pool2") < order.index("relu2")
    textbook = L.Sequential(
        ("conv1", net["conv1"]), ("relu1", L.ReLU()), ("pool1", L.MaxPool2D(2)),
        ("conv2", net["conv2"]), ("relu2", L.ReLU()), ("pool2", L.MaxPool2D(2)),
        ("flatten", L.Flatten()), ("fc1", net["fc1"]), ("relu3", L.ReLU()), ("fc2", net["fc2"]))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    x[:, :, :8] = 0.0  # all-zero image rows: windows whose conv outputs all equal the bias,
    bias = np.where(np.arange(20) % 2 == 0, 0.1, -0.1).astype(np.float32)  # tied > 0 and < 0
    net["conv1"].params["b"][...] = B.asarray(bias)
    dout = rng.standard_normal((4, 10)).astype(np.float32)
    results = []
    for model in (net, textbook):
        logits = B.to_numpy(model.forward(B.asarray(x)))
        dx = B.to_numpy(model.backward(B.asarray(dout)))
        grads = {k: B.to_numpy(v).copy() for k, v in model.named_gradients().items()}
        results.append((logits, dx, grads))
    (la, dxa, ga), (lb, dxb, gb) = results
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(dxa, dxb)
    assert ga.keys() == gb.keys()
    for key in ga:
        np.testing.assert_array_equal(ga[key], gb[key], err_msg=key)
