r"""The θ step: from this step's estimates to the new θ of every gate layer.

Derivations: docs/derivations/estimators.md (E10), docs/derivations/convergence.md (C3)–(C6),
docs/derivations/bernoulli_objective.md (B15), (B20)–(B22).

For every gate layer and every *movable* gate i (not frozen) that the estimator visited:

.. math::
    \hat g_i = \hat\Delta_i/N + \kappa_i/N                                         \tag{E10}

    \bar g_i \leftarrow \bar g_i + \beta_k(\hat g_i - \bar g_i),\quad
        \beta_k = \max(1/k, 1/W)                                                   \tag{C3}

    \theta_i \leftarrow \mathrm{clip}\big(\theta_i - \eta_t\,\tfrac{n}{m}\,\bar g_i,\ 0,\ 1\big)
                                                                          \tag{B20, C6}

where m of the layer's n movable gates were visited (the n/m scale moves every movable gate by
η ḡ in expectation) and η_t is the Robbins–Monro step (B21) on the epoch clock t. A gate on a
vertex stays there exactly while ḡ points at it (C7): the clip is what lets θ reach 0 or 1.
With ``theta_bound_epochs`` E > 0 the box is [b, 1 − b] while t < E (R7 of
docs/derivations/compensated.md). ``--no-hyperprior`` puts the fixed-γ KL gradient (B6) in
place of κ_i/N and projects onto [1e-6, 1 − 1e-6]. :class:`ThetaStep` is the only writer of ``gate.theta`` (pruning only slices
it); it owns the visit averages (:class:`~minibern.bernoulli.state.GateState`) and the unit
prices (:class:`~minibern.bernoulli.prices.UnitPrices`).
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.averaging import update_average
from minibern.bernoulli.flat_layout import FlatLayout
from minibern.bernoulli.objective import bernoulli_kl
from minibern.bernoulli.prices import UnitPrices
from minibern.bernoulli.state import FIELDS, GateState
from minibern.bernoulli.theta_sgd import ProjectedSGD
from minibern.bernoulli.topology import gate_layers

np = B.host


class ThetaStep:
    """Visit averages and the projected step of every gate layer of ``net``.

    Parameters
    ----------
    net : Sequential with gates
        θ of its gates is clipped into the box the step projects onto (B20).
    config : GateConfig
    n_data : int
        N of the per-example cost.

    Attributes
    ----------
    states : dict
        ``{gate name: GateState}``, the per-unit arrays (visit averages, frozen, ...).
    prices : UnitPrices
        κ_i and κ_i/N (B14)–(B15).
    flat : FlatLayout
        θ and the states of all layers side by side (:mod:`~minibern.bernoulli.flat_layout`);
        after :meth:`step`, ``flat.theta`` and ``flat.state`` are views' bases of the layers'.
    moved : tuple
        The last step's ``(ĝ, moved)`` over all layers' units, flat (n_total,).
    """

    def __init__(self, net, config, n_data: int):
        self.config, self.n_data = config, n_data
        self.bounds = bounds = (0.0, 1.0) if config.hyperprior else (1e-6, 1 - 1e-6)
        self.sgd = ProjectedSGD(config.theta_lr, config.theta_decay, bounds=bounds,
                                warmup=config.theta_warmup)
        gates = gate_layers(net)
        for _, _, gate in gates:  # θ starts inside the box the step projects onto (B20)
            np.clip(gate.theta, *bounds, out=gate.theta)
        self.prices = UnitPrices(net, config, n_data)
        self.reset(gates)

    def reset(self, gates) -> None:
        """Fresh (zero) states for the gate layers ``gates`` (``gate_layers(net)``)."""
        self.states = {name: GateState(gate.n_units) for _, name, gate in gates}
        self.flat = FlatLayout()

    def candidates(self) -> dict:
        """``{gate name: host bool (n,)}``: the gates whose θ may still move (not frozen)."""
        return {name: ~state.frozen for name, state in self.states.items()}

    def step(self, gates, estimates: dict, candidates: dict, clock: float) -> dict:
        """Move θ of every gate layer in place; returns ``{name: (ĝ (n,), moved (n,) bool)}``.

        ``estimates``: an estimator's ``{name: (Δ̂/N, visited)}``; ``candidates`` as
        :meth:`candidates` gave them to the estimator; ``clock`` the fractional epoch t. All
        layers step at once, side by side in :attr:`flat` (every line below is elementwise per
        unit but the n/m scale, which is per layer); :attr:`moved` keeps ĝ and moved flat.
        """
        self.prices.follow(gates)  # (B14′) only: κ_i at this step's expected widths
        self.sgd.bounds = self._box(clock)  # (R7): [b, 1 − b] early, else (B20)'s box
        flat = self._bound(gates)
        delta = flat.join({name: estimates[name][0] for name in flat.names})
        visited = flat.join({name: estimates[name][1] for name in flat.names})
        movable_ones = flat.join(candidates)
        grad = delta + flat.join(self._prior_gradients(gates))  # (E10)
        movable = visited & movable_ones
        scale = flat.per_layer(movable_ones, movable)  # n/m of each layer (C6)
        update_average(flat.state, grad, movable, self.config.average_visits)  # (C3)–(C5)
        self.sgd.update(flat.theta, scale * flat.state.mean, t=clock, mask=movable)  # (B20)–(B22)
        self.moved = (grad, movable)
        grads, moved = flat.split(grad), flat.split(movable)
        return {name: (grads[name], moved[name]) for name in flat.names}

    def _bound(self, gates) -> FlatLayout:
        """:attr:`flat` with every layer's θ and state arrays its views (bound again after
        pruning, a checkpoint or anything else replaced one of them)."""
        if not self.flat.is_bound(gates, self.states):
            self.flat.bind(gates, self.states)
            self.flat.theta = np.concatenate([gate.theta for _, _, gate in gates])
            views = self.flat.split(self.flat.theta)
            for _, name, gate in gates:
                gate.theta = views[name]
        return self.flat

    def _prior_gradients(self, gates) -> dict:
        return {name: self._prior_gradient(name, gate.theta) for _, name, gate in gates}

    def _box(self, clock: float) -> tuple:
        """The box θ is projected onto at epoch ``clock``: [b, 1 − b] before
        ``theta_bound_epochs`` (R7), else the run's box (B20)."""
        if clock < self.config.theta_bound_epochs:
            return (self.config.theta_bound, 1.0 - self.config.theta_bound)  # (R7)
        return self.bounds

    def _prior_gradient(self, name, theta):
        """κ_i/N (B15), or with ``hyperprior=False`` the fixed-γ KL gradient (B6)."""
        if self.config.hyperprior:
            return self.prices.gradient(name)  # (B15)
        return bernoulli_kl(theta, self.config.gamma, self.n_data, eps=1e-6)[1]  # (B6)

    def keep(self, name: str, keep) -> None:
        """After pruning removed the units where ``keep`` (host bool (n,)) is False."""
        self.states[name].keep(keep)

    def load(self, gates, state: dict) -> None:
        """θ and the per-gate states from a checkpoint's ``{"<field>/<gate name>": array}``."""
        for _, name, gate in gates:
            gate.theta[:] = state[f"theta/{name}"]
            self.states[name].load_state_dict({key: state[f"{key}/{name}"] for key in FIELDS
                                               if f"{key}/{name}" in state})
