"""What layers say about themselves (minibern.layers.base), checked against what they do:
output shapes against forward, pruning slices against slicing the outputs/inputs, costs against
counts by hand, export records against the rebuilt layer's forward."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.gate import BernoulliGate


def _random(shape, seed=0):
    return B.asarray(np.random.default_rng(seed).standard_normal(shape))


def _forward(layer, x):
    return B.to_numpy(layer.forward(x))


def _layers():
    """(layer, input shape) pairs covering every layer, float64, odd sizes and strides."""
    gate = BernoulliGate(3, theta_init=np.array([0.9, 0.2, 0.6]))
    gate.training = False
    return [
        (L.Dense(5, 4, rng=1, dtype="float64"), (3, 5)),
        (L.Conv2D(2, 3, (3, 2), stride=2, pad=1, rng=2, dtype="float64"), (2, 2, 7, 6)),
        (L.MaxPool2D(2), (2, 3, 6, 4)),
        (L.MaxPool2D(3, stride=2), (2, 3, 7, 8)),  # overlapping, ragged
        (L.ReLU(), (2, 3, 4, 4)),
        (L.Flatten(), (2, 3, 4, 5)),
        (L.SelectFeatures([4, 0, 2], 6), (3, 6)),
        (gate, (2, 3, 4, 4)),
        (L.Sequential(L.Conv2D(1, 2, 3, rng=3, dtype="float64"), L.MaxPool2D(2), L.ReLU(),
                      L.Flatten(), L.Dense(8, 3, rng=4, dtype="float64")), (2, 1, 6, 6)),
    ]


@pytest.mark.parametrize("index", range(len(_layers())))
def test_output_shape_is_the_shape_forward_returns(index):
    layer, shape = _layers()[index]
    assert layer.output_shape(shape) == _forward(layer, _random(shape)).shape


@pytest.mark.parametrize("index", [0, 1])
def test_keeping_output_units_then_forward_is_forward_then_keeping_them(index):
    """(P1): Dense columns / Conv2D filters; the returned slices reproduce the new arrays (P5)."""
    layer, shape = _layers()[index]
    x = _random(shape)
    before = {key: B.to_numpy(value) for key, value in layer.params.items()}
    full = _forward(layer, x)
    kept = np.array([0, 2])
    taken = layer.keep_output_units(kept)
    np.testing.assert_allclose(_forward(layer, x), full[:, kept], rtol=1e-12, atol=1e-12)
    assert layer.n_units_out == kept.size == layer.output_shape(shape)[1]
    assert sorted(key for key, _, _ in taken) == sorted(layer.params)
    for key, index_kept, axis in taken:
        assert np.array_equal(np.take(before[key], index_kept, axis=axis),
                              B.to_numpy(layer.params[key]))


def test_select_features_keeps_positions_of_its_index():
    """(P4): keeping positions of the selected features composes the index map."""
    layer, shape = _layers()[6]
    x = _random(shape)
    full = _forward(layer, x)
    assert layer.keep_output_units(np.array([1, 2])) == []
    assert np.array_equal(_forward(layer, x), full[:, [1, 2]])


@pytest.mark.parametrize("index", [0, 1])
def test_keeping_input_units_equals_zeroing_the_others(index):
    """(P2): y(x_K) with the kept rows / input channels is y(x) with the other inputs zero."""
    layer, shape = _layers()[index]
    x = B.to_numpy(_random(shape))
    kept = np.array([0, 1, 4]) if index == 0 else np.array([1])
    zeroed = np.zeros_like(x)
    zeroed[:, kept] = x[:, kept]
    expected = _forward(layer, B.asarray(zeroed))
    taken = layer.keep_input_units(kept)
    assert [key for key, _, _ in taken] == ["W"] and layer.n_units_in == kept.size
    np.testing.assert_allclose(_forward(layer, B.asarray(x[:, kept])), expected, rtol=1e-12,
                               atol=1e-12)


def test_dense_behind_a_flatten_keeps_a_block_of_rows_per_channel():
    """(P3): channel c of (N, C, H, W) is the rows c·H·W … c·H·W + H·W − 1 after Flatten."""
    x = B.to_numpy(_random((2, 4, 2, 3)))
    dense = L.Dense(24, 5, rng=5, dtype="float64")
    kept = np.array([1, 3])
    zeroed = np.zeros_like(x)
    zeroed[:, kept] = x[:, kept]
    flatten = L.Flatten()
    expected = _forward(dense, flatten.forward(B.asarray(zeroed)))
    dense.keep_input_units(kept, block=6)
    assert dense.in_features == dense.n_units_in == 12
    np.testing.assert_allclose(_forward(dense, flatten.forward(B.asarray(x[:, kept]))), expected,
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="block=6"):
        L.Conv2D(4, 2, 3).keep_input_units(kept, block=6)


@pytest.mark.parametrize("index", [2, 3, 4])
def test_channelwise_layers_commute_with_deleting_a_channel(index):
    layer, shape = _layers()[index]
    assert layer.is_channelwise and not layer.is_linear
    x = _random(shape)
    kept = B.asarray(np.array([0, 2]))
    assert np.array_equal(_forward(layer, x)[:, [0, 2]], _forward(layer, x[:, kept]))


def test_flatten_turns_a_channel_into_a_block_of_features():
    layer, shape = _layers()[5]
    assert layer.flattens and not layer.is_channelwise
    x = _random(shape)
    block = shape[2] * shape[3]
    rows = (np.array([1, 2])[:, None] * block + np.arange(block)).ravel()
    assert np.array_equal(_forward(layer, x)[:, rows],
                          _forward(layer, x[:, B.asarray(np.array([1, 2]))]))


def test_costs_count_the_arrays_and_the_products_by_hand():
    dense, _ = _layers()[0]
    assert dense.n_params(5, 4) == sum(int(v.size) for v in dense.params.values())
    assert (dense.n_params(2, 3), dense.n_macs(2, 3, (1, 2))) == (2 * 3 + 3, 2 * 3)
    conv, shape = _layers()[1]  # (7, 6) input, 3×2 kernel, stride 2, pad 1: 4×4 outputs
    assert conv.n_params(2, 3) == sum(int(v.size) for v in conv.params.values())
    assert conv.n_params(1, 2) == 2 * (1 * 3 * 2 + 1)
    assert conv.n_macs(2, 3, (1,) + shape[1:]) == 3 * 2 * (3 * 2) * (4 * 4)
    for layer, _ in _layers()[2:8]:
        assert not layer.is_linear
        with pytest.raises(TypeError, match="no weights"):
            layer.n_params(1, 1)


@pytest.mark.parametrize("index", range(7))
def test_export_record_rebuilds_the_same_layer(index):
    layer, shape = _layers()[index]
    op = layer.export_op("x")
    assert op["kind"] == layer.op_kind and op["name"] == "x"
    assert all(type(value) is np.ndarray for value in op.values() if hasattr(value, "shape"))
    rebuilt = type(layer).from_op(op)
    x = _random(shape)
    assert np.array_equal(_forward(rebuilt, x), _forward(layer, x))


def test_what_a_layer_does_not_know_names_itself():
    gate, _ = _layers()[7]
    assert gate.is_gate and not gate.is_linear and gate.op_kind is None
    with pytest.raises(ValueError, match="'g' is a BernoulliGate, which export does not know"):
        gate.export_op("g")
    with pytest.raises(TypeError, match="ReLU has no output units"):
        L.ReLU().keep_output_units([0])
    with pytest.raises(TypeError, match="MaxPool2D has no input units"):
        L.MaxPool2D().keep_input_units([0])


def test_gate_n_kept_counts_the_units_its_evaluation_mask_lets_through():
    gate, shape = _layers()[7]
    y = _forward(gate, B.asarray(np.ones(shape)))
    assert gate.n_kept == int((y.reshape(shape[0], shape[1], -1) != 0).any(axis=(0, 2)).sum())
