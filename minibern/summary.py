r"""Counting a network: architecture, parameters and FLOPs per example.

**Architecture** (as the structured-pruning literature reports it): for a dense network, the
inputs of the first layer followed by every hidden layer's units (LeNet-300-100:
``[784, 300, 100]``); for a convolutional one, every conv layer's filters, then the inputs and
units of each hidden dense layer (LeNet-5-Caffe: ``[20, 50, 800, 500]``). The output layer is
never listed.

**FLOPs per example** count multiply–accumulate operations of the dense and conv layers, the
convention of the papers we compare with (biases, activations and pooling are left out):

.. math::
    \text{Dense}(D \to M):\ D M, \qquad
    \text{Conv2D}:\ F\,C\,K_H K_W\, O_H O_W .
"""
from __future__ import annotations

from minibern import layers as L


def architecture(net: L.Sequential) -> list[int]:
    """Kept widths, inputs first, output layer excluded (see module docstring)."""
    weighted = [layer for _, layer in net if isinstance(layer, (L.Dense, L.Conv2D))]
    widths: list[int] = []
    for index, layer in enumerate(weighted):
        w = layer.params["W"]
        if isinstance(layer, L.Conv2D):
            widths.append(int(w.shape[0]))
            continue
        if index == 0 or isinstance(weighted[index - 1], L.Conv2D):
            widths.append(int(w.shape[0]))
        if index < len(weighted) - 1:
            widths.append(int(w.shape[1]))
    return widths


def flops_per_example(net: L.Sequential, input_shape) -> int:
    """Multiply–accumulates of one forward pass for an input of shape ``input_shape`` (no N)."""
    shape = (1,) + tuple(input_shape)
    total = 0
    for _, layer in net:
        if isinstance(layer, L.Dense):
            d, m = layer.params["W"].shape
            total += int(d) * int(m)
            shape = (1, int(m))
        elif isinstance(layer, L.Conv2D):
            f, c, kh, kw = layer.params["W"].shape
            _, _, oh, ow = layer.output_shape(shape)
            total += int(f * c * kh * kw * oh * ow)
            shape = (1, int(f), oh, ow)
        elif isinstance(layer, L.MaxPool2D):
            n, c, h, w = shape
            shape = (n, c, (h - layer.size) // layer.stride + 1, (w - layer.size) // layer.stride + 1)
        elif isinstance(layer, L.Flatten):
            size = 1
            for s in shape[1:]:
                size *= s
            shape = (1, size)
    return total


def summarize(net: L.Sequential) -> dict:
    """``{"architecture", "params", "flops_per_example"}`` for a model with ``input_shape``."""
    return {"architecture": architecture(net), "params": net.num_parameters(),
            "flops_per_example": flops_per_example(net, net.input_shape)}
