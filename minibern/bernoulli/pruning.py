r"""Physical structured pruning: a removed unit or filter leaves the weight arrays.

Derivation and the pruning condition: docs/derivations/pruning.md, (P1)–(P6).

A gate ξ_i multiplies unit (filter, input feature) i. When ξ_i = 0 for every example — θ_i = 0
exactly — the unit contributes nothing downstream, so the arrays that only serve it can go:

========================  ======================================================================
producer ``Dense``        column i of W (D, M) and entry i of b                            (P1)
producer ``Conv2D``       filter i of W (F, C, KH, KW) and entry i of b                    (P1)
no producer (inputs)      feature i of the raw input: a :class:`~minibern.layers.SelectFeatures`
                          at the front keeps the index map, so raw inputs still work       (P4)
consumer ``Dense``        row i of W (P2), or across ``Flatten`` the H·W rows
                          i·H·W … (i+1)·H·W − 1 (C-order flattening, (L17))                (P3)
consumer ``Conv2D``       input channel i of W: W[:, i]                                    (P2)
the gate                  θ_i, its original index, and the trainer's per-gate counters
the optimiser             the same entries of every state buffer (momentum, Adam m and v):
                          the updates are elementwise, (O1)–(O2), so the kept entries'
                          trajectories do not change                                      (P5)
========================  ======================================================================

Each layer slices itself (:meth:`~minibern.layers.Layer.keep_output_units`,
:meth:`~minibern.layers.Layer.keep_input_units`, where the tags stand at the slicing lines);
this module finds the layers, checks the path between them and keeps the optimiser in step.
Between producer and gate only per-channel maps may stand (``is_channelwise``: ReLU,
MaxPool2D): they commute with deleting a channel. Removing every unit of a layer would
disconnect the network: that raises :class:`PruningError` and changes nothing.
"""
from __future__ import annotations

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.topology import find_site

np = B.host

#: Name given to the SelectFeatures layer that input-gate pruning puts at the front.
SELECT_NAME = "select_in"


class PruningError(RuntimeError):
    """Pruning would disconnect the network (every unit of a layer removed)."""


def _check_site(net, found):
    """(P1)–(P4) need per-channel maps between producer and gate and, before the consumer, also
    a Flatten; raise NotImplementedError naming the first layer that breaks this."""
    for k in found.upstream:
        if not net[k].is_channelwise:
            raise NotImplementedError(
                f"cannot prune gate {found.name!r}: {type(net[k]).__name__} stands between "
                "it and its layer; only ReLU and MaxPool2D may")
    for k in found.downstream:
        if not (net[k].is_channelwise or net[k].flattens):
            raise NotImplementedError(
                f"cannot prune gate {found.name!r}: {type(net[k]).__name__} follows it "
                "before the next linear layer")
    if found.consumer is None:
        raise ValueError(f"gate {found.name!r} has no linear layer after it")


def _slice_state(optimizer, layer_name, taken) -> None:
    """Keep in ``optimizer``'s state buffers the entries a layer kept of its parameters:
    ``taken`` lists ``(key, index, axis)`` (:meth:`~minibern.layers.Layer.take_units`)."""
    if optimizer is None:
        return
    for key, index, axis in taken:
        optimizer.slice_state(f"{layer_name}.{key}", index, axis=axis)  # (P5)


def remove_units(net, gate_name: str, keep, optimizer=None) -> int:
    """Physically remove the units of gate ``gate_name`` where ``keep`` (host bool (n,)) is
    False: from the gate, its producer, its consumer, the input map and ``optimizer``'s state.

    Returns the number of units removed. Raises :class:`PruningError` (changing nothing) if no
    unit would remain.
    """
    found = find_site(net, gate_name)
    gate = found.gate
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (gate.n_units,):
        raise ValueError(f"keep has shape {keep.shape}, expected ({gate.n_units},) for {gate_name!r}")
    removed = int(gate.n_units - keep.sum())
    if removed == 0:
        return 0
    if not keep.any():
        raise PruningError(
            f"every remaining unit of {gate_name!r} ({gate.n_units}) has θ = 0: removing them "
            "would disconnect the network; lower κ (--kappa) or raise --theta-init")
    kept = np.flatnonzero(keep)
    _check_site(net, found)
    consumer_name = net.names[found.consumer]
    if found.producer is not None:  # (P1): the producer's columns / filters and biases
        producer_name = net.names[found.producer]
        _slice_state(optimizer, producer_name, net[producer_name].keep_output_units(kept))
    elif net[0].selects_inputs:  # input features behind an input map: compose it (P4)
        net[0].keep_output_units(kept)
    else:  # input features: a new input map in front (P4)
        net.insert(0, SELECT_NAME, L.SelectFeatures(kept, gate.n_units))
    consumer = net[consumer_name]
    # behind a Flatten a unit (channel) is a block of H·W consumer inputs (P3), else one (P2)
    block = consumer.n_units_in // gate.n_units if found.through_flatten else 1
    _slice_state(optimizer, consumer_name, consumer.keep_input_units(kept, block))
    gate.keep_units(keep)
    return removed


def restore_structure(net, unit_index: dict) -> None:
    """Re-apply the removals recorded as ``{gate name: kept original indices}`` to a freshly
    built network (resuming a pruned run: the arrays are then overwritten by the checkpoint)."""
    for gate_name, kept_original in unit_index.items():
        gate = net[gate_name]
        keep = np.isin(gate.unit_index, np.asarray(kept_original))
        remove_units(net, gate_name, keep)
