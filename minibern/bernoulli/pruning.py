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

Between producer and gate only per-channel maps may stand (ReLU, MaxPool2D): they commute with
deleting a channel. Removing every unit of a layer would disconnect the network: that raises
:class:`PruningError` and changes nothing.
"""
from __future__ import annotations

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.topology import find_site

np = B.host

#: Layers that act on each unit/channel separately, so a unit can be deleted through them.
PER_CHANNEL = (L.ReLU, L.MaxPool2D)

#: Name given to the SelectFeatures layer that input-gate pruning puts at the front.
SELECT_NAME = "select_in"


class PruningError(RuntimeError):
    """Pruning would disconnect the network (every unit of a layer removed)."""


def _check_site(net, found):
    """(P1)–(P4) need per-channel maps between producer and gate and, before the consumer, also
    a Flatten; raise NotImplementedError naming the first layer that breaks this."""
    for k in found.upstream:
        if not isinstance(net[k], PER_CHANNEL):
            raise NotImplementedError(
                f"cannot prune gate {found.name!r}: {type(net[k]).__name__} stands between "
                "it and its layer; only ReLU and MaxPool2D may")
    for k in found.downstream:
        if not isinstance(net[k], (*PER_CHANNEL, L.Flatten)):
            raise NotImplementedError(
                f"cannot prune gate {found.name!r}: {type(net[k]).__name__} follows it "
                "before the next linear layer")
    if found.consumer is None:
        raise ValueError(f"gate {found.name!r} has no linear layer after it")


def _take(net, optimizer, layer_name, key, keep, axis):
    """Keep the entries ``keep`` (host int indices) of parameter ``layer_name.key`` along
    ``axis``, and the same entries of its optimiser state (P5)."""
    name = f"{layer_name}.{key}"
    value = net[layer_name].params[key]
    xp = B.get_array_module(value)
    net.set_parameter(name, xp.ascontiguousarray(xp.take(value, B.asarray(keep), axis=axis)))
    if optimizer is not None:
        optimizer.slice_state(name, keep, axis=axis)


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
    producer_at, consumer_at = found.producer, found.consumer
    producer, consumer = (None if producer_at is None else net[producer_at]), net[consumer_at]

    if producer is None:  # input features (P4)
        if isinstance(net[0], L.SelectFeatures):
            select = net[0]
            net.replace(net.names[0], L.SelectFeatures(select.index[kept], select.in_features))
        else:
            net.insert(0, SELECT_NAME, L.SelectFeatures(kept, gate.n_units))
            consumer_at += 1
    else:  # (P1)
        name = net.names[producer_at]
        axis = 1 if isinstance(producer, L.Dense) else 0
        _take(net, optimizer, name, "W", kept, axis)
        _take(net, optimizer, name, "b", kept, 0)
        if isinstance(producer, L.Dense):
            producer.out_features = int(kept.size)
        else:
            producer.out_channels = int(kept.size)

    name = net.names[consumer_at]
    if isinstance(consumer, L.Conv2D):  # (P2) conv
        _take(net, optimizer, name, "W", kept, 1)
        consumer.in_channels = int(kept.size)
    else:
        block = consumer.params["W"].shape[0] // gate.n_units if found.through_flatten else 1
        rows = (kept[:, None] * block + np.arange(block)).ravel()  # (P2), (P3)
        _take(net, optimizer, name, "W", rows, 0)
        consumer.in_features = int(rows.size)

    gate.keep_units(keep)
    return removed


def restore_structure(net, unit_index: dict) -> None:
    """Re-apply the removals recorded as ``{gate name: kept original indices}`` to a freshly
    built network (resuming a pruned run: the arrays are then overwritten by the checkpoint)."""
    for gate_name, kept_original in unit_index.items():
        gate = net[gate_name]
        keep = np.isin(gate.unit_index, np.asarray(kept_original))
        remove_units(net, gate_name, keep)
