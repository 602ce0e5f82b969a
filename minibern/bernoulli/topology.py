r"""Where the gates sit in a network: the one walk that pruning, the estimators and the hook share.

A gate at position g of a :class:`~minibern.layers.Sequential` multiplies the units (filters,
input features) of the layer that produced them and feeds the next linear layer:

.. code-block:: text

    producer (Dense/Conv2D)  →  upstream (e.g. ReLU, MaxPool2D)  →  gate g
                             →  downstream (e.g. Flatten)        →  consumer (Dense/Conv2D)

:func:`gate_sites` walks the network once and records, for every gate, the producer's position
(None when the gate is on the raw input, or on the features a ``SelectFeatures`` picked from
it), the layers between producer and gate, the consumer's position and the layers between gate
and consumer. The walk asks each layer what it is (``is_gate``, ``is_linear``,
``selects_inputs``, ``flattens``: :mod:`minibern.layers.base`). Each user applies its own rule to those layers: pruning (P1)–(P4) lets per-channel
maps stand on either side and a Flatten before the consumer (docs/derivations/pruning.md); the
removal estimator's partial forward (E5) starts at the consumer, so only a Flatten may stand
between (docs/derivations/estimators.md). :func:`unit_params` is the parameter cost of one unit
(the κ per parameter of (B15)), :func:`kept_units` the evaluation widths that
:func:`minibern.training.summary.summarize` counts.
"""
from __future__ import annotations

from dataclasses import dataclass

from minibern.bernoulli.gate import BernoulliGate


@dataclass(frozen=True)
class GateSite:
    """One gate's neighbourhood in a network (positions are indices into the ``Sequential``).

    Attributes
    ----------
    index, name, gate
        The gate's position, name and layer.
    producer : int or None
        The Dense/Conv2D whose outputs the gate scales; None for a gate on the raw input.
    upstream : tuple of int
        The positions between producer (or the start, or a ``SelectFeatures``) and the gate,
        nearest the gate first.
    consumer : int or None
        The first Dense/Conv2D after the gate; None when there is none.
    downstream : tuple of int
        The positions between the gate and the consumer (or the end), in order.
    through_flatten : bool
        A Flatten stands downstream: unit i is then a block of H·W consumer rows (L17).
    """

    index: int
    name: str
    gate: BernoulliGate
    producer: int | None
    upstream: tuple
    consumer: int | None
    downstream: tuple
    through_flatten: bool


def gate_sites(net) -> list[GateSite]:
    """Every gate of ``net`` with its producer, consumer and the layers between, in order."""
    layers = net.layers
    sites = []
    for index, (name, layer) in enumerate(net):
        if not layer.is_gate:
            continue
        k = index - 1
        while k >= 0 and not (layers[k].is_linear or layers[k].selects_inputs):
            k -= 1
        producer = k if k >= 0 and layers[k].is_linear else None
        upstream = tuple(range(index - 1, k, -1))
        k = index + 1
        while k < len(layers) and not layers[k].is_linear:
            k += 1
        downstream = tuple(range(index + 1, k))
        sites.append(GateSite(index, name, layer, producer, upstream,
                              k if k < len(layers) else None, downstream,
                              any(layers[j].flattens for j in downstream)))
    return sites


def gate_layers(net) -> list[tuple[int, str, BernoulliGate]]:
    """(index, name, gate) of every gate in ``net``, in order."""
    return [(i, name, layer) for i, (name, layer) in enumerate(net) if layer.is_gate]


def find_site(net, gate_name: str) -> GateSite:
    """The :class:`GateSite` of the gate named ``gate_name`` (TypeError if it is no gate)."""
    for found in gate_sites(net):
        if found.name == gate_name:
            return found
    raise TypeError(f"{gate_name!r} is a {type(net[gate_name]).__name__}, not a BernoulliGate")


def unit_params(net, found: GateSite) -> int:
    """Parameters one unit of the gate costs: its producer's incoming weights and bias (Dense:
    D + 1; Conv2D: C·KH·KW + 1); for a gate on the raw input, the weights it feeds in its
    consumer (Dense: M; Conv2D: F·KH·KW); 1 when nothing follows."""
    if found.producer is not None:
        producer = net[found.producer]
        return producer.n_params(producer.n_units_in, 1)
    if found.consumer is not None:
        consumer = net[found.consumer]
        return consumer.n_params(1, consumer.n_units_out) - consumer.n_units_out  # no biases
    return 1


def kept_units(net) -> dict:
    """``{gate name: units kept by the evaluation mask 1[θ ≥ ½]}``: the ``kept`` of
    :func:`minibern.training.summary.summarize` for a gated network."""
    return {name: gate.n_kept for _, name, gate in gate_layers(net)}


@dataclass(frozen=True)
class WeightBlock:
    """A linear layer's weights seen as (input units) × (output units), for the expected
    parameter count (B14′): ``rows_per_input`` weights join one input unit to one output unit
    (1 for Dense, KH·KW for Conv2D, H·W for a Dense behind a Flatten of gated channels).

    ``inputs``/``outputs`` name the gate on the layer's input/output units, or None when that
    side is ungated; ``n_inputs``/``n_outputs`` are the current widths of the ungated sides.
    """

    layer: int
    inputs: str | None
    outputs: str | None
    rows_per_input: int
    n_inputs: int
    n_outputs: int


def weight_blocks(net) -> list[WeightBlock]:
    """One :class:`WeightBlock` per Dense/Conv2D of ``net``. ValueError when two gates feed
    the same side of a layer (the expected count would no longer be bilinear in the widths)."""
    sites = gate_sites(net)
    blocks = []
    for index, (name, layer) in enumerate(net):
        if not layer.is_linear:
            continue
        before = [s for s in sites if s.consumer == index]
        after = [s for s in sites if s.producer == index]
        if len(before) > 1 or len(after) > 1:
            raise ValueError(f"layer {name!r} has {len(before)} gates on its inputs and "
                             f"{len(after)} on its outputs; the expected parameter count needs at "
                             "most one on each side — use --kappa-per-param instead")
        per_pair = layer.n_params(1, 1) - 1  # weights joining two units: Dense 1, Conv2D KH·KW
        # a gate over C channels before a Dense behind a Flatten: H·W rows per gated unit (L17)
        group = layer.n_units_in // before[0].gate.n_units if before else 1
        blocks.append(WeightBlock(index, before[0].name if before else None,
                                  after[0].name if after else None, per_pair * group,
                                  layer.n_units_in // group, layer.n_units_out))
    return blocks
