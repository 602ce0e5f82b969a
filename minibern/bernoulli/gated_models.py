"""The paper's MNIST networks with Bernoulli gates: the engine's models, gates inserted by name.

:mod:`minibern.models` builds LeNet-300-100 and LeNet-5-Caffe of plain engine layers; this module
puts a :class:`~minibern.bernoulli.gate.BernoulliGate` at each of the paper's sites
(:data:`GATE_SITES`). LeNet-300-100 gates its 784 inputs and both hidden layers' units;
LeNet-5-Caffe gates both conv layers' filters (after pooling: a per-filter 0/1 factor commutes
with max-pooling, and the pooled tensor is 4× smaller) and fc1's 500 units. The output layer is
never gated. A gate's width is the number of units (axis 1) flowing at its site, found from the
layers' :meth:`~minibern.layers.Layer.output_shape`. Gates draw nothing when they are built, so a
gated network's weights are those of the un-gated one with the same seed.
"""
from __future__ import annotations

from minibern import models
from minibern.bernoulli.gate import BernoulliGate

#: ``{model name: ((gate name, the layer it follows, or None for the raw input), ...)}``.
GATE_SITES = {
    "lenet300": (("gate_in", None), ("gate1", "relu1"), ("gate2", "relu2")),
    "lenet5": (("gate_conv1", "relu1"), ("gate_conv2", "relu2"), ("gate_fc1", "relu3")),
}


def insert_gates(net, sites, theta_init=1.0):
    """Insert a gate named ``gate`` after the layer named ``after`` (in front for None), for
    every ``(gate, after)`` of ``sites``, each over the units of the tensor at its place.

    Parameters
    ----------
    net : minibern.layers.Sequential
        With ``net.input_shape`` set (one example's shape).
    sites : sequence of (str, str or None)
    theta_init : float or array
        The gates' initial keep probabilities θ.

    Returns
    -------
    minibern.layers.Sequential
        ``net`` itself, gates inserted.
    """
    for gate_name, after in sites:
        position = 0 if after is None else net.names.index(after) + 1
        shape = (1,) + tuple(net.input_shape)
        for layer in net.layers[:position]:
            shape = layer.output_shape(shape)
        net.insert(position, gate_name, BernoulliGate(int(shape[1]), theta_init=theta_init))
    return net


def build_model(name: str, width_mult: float = 1.0, *, gates: bool = False, theta_init=1.0,
                **kwargs):
    """:func:`minibern.models.build_model` (the CLI's ``--model``; ``kwargs``: seed, init,
    init_scale, dtype), with the gates of :data:`GATE_SITES` if ``gates``."""
    net = models.build_model(name, width_mult, **kwargs)
    return insert_gates(net, GATE_SITES[name], theta_init) if gates else net


def lenet300_100(width_mult: float = 1.0, *, gates: bool = False, theta_init=1.0, **kwargs):
    """:func:`minibern.models.lenet300_100`, gated at its inputs and hidden units if ``gates``."""
    return build_model("lenet300", width_mult, gates=gates, theta_init=theta_init, **kwargs)


def lenet5_caffe(width_mult: float = 1.0, *, gates: bool = False, theta_init=1.0, **kwargs):
    """:func:`minibern.models.lenet5_caffe`, gated at its filters and fc1's units if ``gates``."""
    return build_model("lenet5", width_mult, gates=gates, theta_init=theta_init, **kwargs)
