"""The networks of the paper's MNIST experiments, with a width multiplier.

``lenet300_100``: 784 → 300 → 100 → 10, ReLU after each hidden layer (input: flattened (N, 784)).

``lenet5_caffe``: Caffe's LeNet-5 (input (N, 1, 28, 28))::

    conv1 20@5×5 → ReLU → maxpool 2 → conv2 50@5×5 → ReLU → maxpool 2 → flatten (800)
    → fc1 500 → ReLU → fc2 10

Caffe's original prototxt has no ReLU after the convolutions; we follow the structured-pruning
literature we compare with (e.g. the L0 and Bayesian-compression LeNet-5 models), which do.
The layers run as conv → maxpool → ReLU: max-pooling and ReLU commute, max_j max(x_j, 0) =
max(max_j x_j, 0), and so do their gradients ((L15)–(L16) with (L6): both send dout to the
first maximal input of a window if that maximum is positive, and nothing otherwise;
docs/derivations/layers.md). The outputs and gradients are bitwise those of
conv → ReLU → maxpool (tests/test_models.py), and the ReLU runs on a 4× smaller tensor.
``width_mult`` scales every hidden width (conv filters and hidden units; inputs and the 10
outputs stay) for the robustness-to-width experiments. Initial weights are drawn from a seeded
host generator (He normal by default; see :mod:`minibern.layers.init`).

These are engine networks. The gated ones of the paper are built by
:mod:`minibern.bernoulli.gated_models`, which inserts Bernoulli gates into them by layer name.
"""
from __future__ import annotations

from minibern import backend as B
from minibern import layers as L

MODEL_NAMES = ("lenet300", "lenet5")


def _width(base: int, width_mult: float, name: str) -> int:
    if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool) or width_mult <= 0:
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
    width = int(round(base * width_mult))
    if width < 1:
        raise ValueError(f"width_mult={width_mult} leaves {name} with {width} units; use a larger value")
    return width


def lenet300_100(width_mult: float = 1.0, *, seed=0, init: str = "he", init_scale: float = 1.0,
                 dtype=None) -> L.Sequential:
    """LeNet-300-100 (hidden widths 300·m and 100·m), input (N, 784)."""
    rng = B.make_rng(seed)
    h1, h2 = _width(300, width_mult, "fc1"), _width(100, width_mult, "fc2")
    kw = dict(rng=rng, init=init, init_scale=init_scale, dtype=dtype)
    net = L.Sequential(("fc1", L.Dense(784, h1, **kw)), ("relu1", L.ReLU()),
                       ("fc2", L.Dense(h1, h2, **kw)), ("relu2", L.ReLU()),
                       ("fc3", L.Dense(h2, 10, **kw)))
    net.input_shape = (784,)
    return net


def lenet5_caffe(width_mult: float = 1.0, *, seed=0, init: str = "he", init_scale: float = 1.0,
                 dtype=None) -> L.Sequential:
    """LeNet-5-Caffe (20·m and 50·m filters, 500·m hidden units), input (N, 1, 28, 28)."""
    rng = B.make_rng(seed)
    c1, c2 = _width(20, width_mult, "conv1"), _width(50, width_mult, "conv2")
    h = _width(500, width_mult, "fc1")
    kw = dict(rng=rng, init=init, init_scale=init_scale, dtype=dtype)
    net = L.Sequential(("conv1", L.Conv2D(1, c1, 5, **kw)), ("pool1", L.MaxPool2D(2)),
                       ("relu1", L.ReLU()),
                       ("conv2", L.Conv2D(c1, c2, 5, **kw)), ("pool2", L.MaxPool2D(2)),
                       ("relu2", L.ReLU()),
                       ("flatten", L.Flatten()), ("fc1", L.Dense(c2 * 4 * 4, h, **kw)),
                       ("relu3", L.ReLU()),
                       ("fc2", L.Dense(h, 10, **kw)))
    net.input_shape = (1, 28, 28)
    return net


def build_model(name: str, width_mult: float = 1.0, **kwargs) -> L.Sequential:
    """``"lenet300"`` or ``"lenet5"`` by name (the CLI's ``--model``)."""
    if name == "lenet300":
        return lenet300_100(width_mult, **kwargs)
    if name == "lenet5":
        return lenet5_caffe(width_mult, **kwargs)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
