"""Every gate layer's per-unit arrays as views into one flat host array per quantity.

A speed layout beside the math: the θ step (:class:`minibern.bernoulli.theta_step.ThetaStep`),
the decision rule and the pruning trigger are elementwise in every unit, so they may run once
over the units of all gate layers side by side instead of once per layer — a handful of NumPy
calls per step whatever the number of layers, with bitwise the same results. Only the n/m scale
of (C6) is per layer (:meth:`FlatLayout.per_layer`).

:class:`FlatLayout` concatenates the :data:`~minibern.bernoulli.state.FIELDS` of every layer's
:class:`~minibern.bernoulli.state.GateState` and makes the layers' fields *views* of the flat
arrays; the θ step does the same with θ (it alone writes θ). Pruning, a checkpoint's
structure or any other code that replaces one of those arrays breaks the binding;
:meth:`FlatLayout.is_bound` notices (by identity) and the θ step binds again, copying the
current values.
"""
from __future__ import annotations

from types import SimpleNamespace

from minibern import backend as B
from minibern.bernoulli.state import FIELDS

np = B.host


class FlatLayout:
    """The flat arrays of the gate layers last bound, in the network's order.

    Attributes
    ----------
    theta : host float64 (n_total,)
        θ of every unit of every layer, in order.
    state : SimpleNamespace
        One flat host array per GateState field (:data:`FIELDS`), (n_total,): what
        :func:`~minibern.bernoulli.averaging.update_average`, :func:`~minibern.bernoulli.rules.
        decide` and the pruning trigger take as a state.
    names : list of str
        The layers, in order; layer k owns ``[starts[k], starts[k] + sizes[k])``.
    """

    def __init__(self):
        self.names, self.sizes, self.starts = [], np.zeros(0, dtype=np.int64), None
        self.state, self._views = None, []  # and theta, once the θ step binds it

    def is_bound(self, gates, states) -> bool:
        """Whether every layer's θ and state arrays are still this layout's views."""
        if [name for _, name, _ in gates] != self.names:
            return False
        for (_, name, gate), fields, size in zip(gates, self._views, self.sizes.tolist()):
            state = states[name]
            if gate.theta.base is not self.theta or gate.theta.size != size or any(
                    getattr(state, key) is not fields[key] for key in FIELDS):
                return False
        return True

    def bind(self, gates, states) -> None:
        """Lay out ``gates`` (``gate_layers(net)``): copy the states' current arrays into fresh
        flat ones and make each GateState's fields views of them. θ is the θ step's to bind:
        it puts every layer's θ into :attr:`theta` and each gate's θ as a view of it
        (:meth:`split`)."""
        self.names = [name for _, name, _ in gates]
        self.sizes = np.array([gate.n_units for _, _, gate in gates], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.state = SimpleNamespace(**{
            key: np.concatenate([getattr(states[name], key) for name in self.names]).astype(
                dtype, copy=False) for key, dtype in FIELDS.items()})
        self._views = []
        for name, start, size in zip(self.names, self.starts.tolist(), self.sizes.tolist()):
            fields = {key: getattr(self.state, key)[start:start + size] for key in FIELDS}
            for key, view in fields.items():
                setattr(states[name], key, view)
            self._views.append(fields)

    def join(self, per_layer: dict):
        """The layers' arrays ``{name: (n_k,)}`` side by side, (n_total,) (one copy)."""
        return np.concatenate([per_layer[name] for name in self.names])

    def split(self, flat) -> dict:
        """``{name: view}`` of a flat (n_total,) array, layer by layer (no copies)."""
        return {name: flat[start:start + size]
                for name, start, size in zip(self.names, self.starts.tolist(),
                                             self.sizes.tolist())}

    def per_layer(self, numerator, denominator):
        """Per unit, its layer's ``sum(numerator) / max(sum(denominator), 1)`` over the
        layer's units (host bool/int (n_total,) each): float64 (n_total,)."""
        running = np.zeros((2, self.sizes.sum() + 1), dtype=np.int64)
        np.cumsum(np.stack([numerator, denominator]), axis=1, out=running[:, 1:])
        totals = running[:, self.starts + self.sizes] - running[:, self.starts]
        ratio = totals[0] / np.maximum(totals[1], 1)
        return np.repeat(ratio, self.sizes)
