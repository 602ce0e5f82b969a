"""Bad input gets a ValueError/TypeError that names the value, the expectation and the fix."""
import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L


def _x(shape, dtype=np.float32):
    return B.asarray(np.zeros(shape, dtype=dtype))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"Dense expects a 2-D input.*\(2, 3, 4\).*Flatten"):
        L.Dense(12, 2).forward(_x((2, 3, 4)))
    with pytest.raises(ValueError, match=r"Conv2D expects a 4-D input \(N, C, H, W\)"):
        L.Conv2D(1, 2, 3).forward(_x((2, 9, 9)))
    with pytest.raises(ValueError, match=r"MaxPool2D expects a 4-D input"):
        L.MaxPool2D().forward(_x((2, 4)))


def test_wrong_feature_count_and_channels():
    with pytest.raises(ValueError, match=r"Dense expects 5 input features, got x of shape \(2, 4\)"):
        L.Dense(5, 2).forward(_x((2, 4)))
    with pytest.raises(ValueError, match=r"Conv2D expects 3 input channels.*\(1, 2, 8, 8\)"):
        L.Conv2D(3, 4, 3).forward(_x((1, 2, 8, 8)))


def test_non_float_input_and_dtype_mismatch():
    with pytest.raises(TypeError, match=r"dtype int64.*astype"):
        L.Dense(2, 2).forward(_x((1, 2), np.int64))
    with pytest.raises(TypeError, match=r"float32 parameters but got a float64 input"):
        L.Dense(2, 2).forward(_x((1, 2), np.float64))


def test_non_positive_output_size():
    with pytest.raises(ValueError, match=r"input size 3 with kernel 5.*output size -1 < 1"):
        L.Conv2D(1, 1, 5).forward(_x((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"MaxPool2D.*output size 0 < 1"):
        L.MaxPool2D(2).forward(_x((1, 1, 1, 4)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="out_features must be a positive integer, got 0"):
        L.Dense(3, 0)
    with pytest.raises(ValueError, match="pad must be a non-negative integer"):
        L.Conv2D(1, 1, 3, pad=-1)
    with pytest.raises(ValueError, match="kernel_size must be an int or an"):
        L.Conv2D(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="unknown init scheme 'xavier'"):
        L.Dense(2, 2, init="xavier")


def test_backward_before_forward_and_wrong_dout():
    with pytest.raises(RuntimeError, match="before forward"):
        L.Dense(2, 2).backward(_x((1, 2)))
    layer = L.Dense(2, 3)
    layer.forward(_x((4, 2)))
    with pytest.raises(ValueError, match=r"dout of shape \(4, 2\), expected \(4, 3\)"):
        layer.backward(_x((4, 2)))


def test_host_array_into_device_layer_is_refused(backend_name):
    if backend_name == "numpy":
        pytest.skip("on the numpy backend host arrays are the device arrays")
    layer = L.Dense(2, 2)
    with pytest.raises(TypeError, match="host numpy.ndarray.*asarray"):
        layer.forward(np.zeros((1, 2), np.float32))


def test_select_features_refuses_bad_index_and_input():
    with pytest.raises(ValueError, match=r"distinct features in \[0, 4\)"):
        L.SelectFeatures([0, 0, 1], 4)
    with pytest.raises(ValueError, match=r"distinct features in \[0, 4\)"):
        L.SelectFeatures([1, 4], 4)
    with pytest.raises(ValueError, match=r"expects \(N, 4\) raw inputs, got \(2, 3\)"):
        L.SelectFeatures([1, 2], 4).forward(_x((2, 3)))
