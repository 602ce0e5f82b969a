r"""What a gated run records of θ: snapshots, gradient snapshots, kept units and the log line.

Into the trainer's history (``history.npz``):

``theta_snapshots`` (S, G), ``theta_snapshot_steps`` (S,)
    θ of every original gate (0 for removed ones), concatenated in gate order, at every epoch
    end and, with ``snapshot_every``, every so many steps;
``gradient_snapshots`` (S, G)
    beside each, N times the mean of the gate's θ-gradient estimates (E10) since the previous
    snapshot, i.e. the estimated Δ_i + κ_i over that period (0 for removed gates and gates not
    visited in it): where positive, the estimator pushed θ_i towards 0;
``decided_1e-3``, ``decided_1e-2``, ``kept_<gate>``, ``units_<gate>``
    per epoch: the share of gates within 1e-3 (1e-2) of a vertex, the units 1[θ ≥ ½] keeps and
    the units left in the arrays.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.gate import DECIDED_TOL

np = B.host


def gate_counts(gates) -> list[dict]:
    """metrics.json's ``gates``: per layer total / at_zero / at_one / undecided (1e-3)."""
    return [{"name": name, **gate.counts(DECIDED_TOL)} for _, name, gate in gates]


def decided_fraction(gates, tol: float) -> float:
    """Share of all original gates within ``tol`` of 0 or 1 (removed ones count as 0)."""
    theta = np.concatenate([g.full_theta() for _, _, g in gates])
    return float(np.mean((theta <= tol) | (theta >= 1 - tol)))


class GateRecorder:
    """Sums the θ-gradient estimates between snapshots and writes the records above.

    Parameters
    ----------
    gates : list
        ``gate_layers(net)``.
    n_data : int
        N, the scale of the recorded gradients.
    """

    def __init__(self, gates, n_data: int):
        self.n_data = n_data
        self.reset(gates)

    def reset(self, gates) -> None:
        """Zero sums for the layers ``gates``."""
        self.grad_sum = {name: np.zeros(gate.n_units) for _, name, gate in gates}
        self.grad_count = {name: np.zeros(gate.n_units, dtype=np.int64)
                           for _, name, gate in gates}
        self._flat = None  # (sums, counts) of every layer side by side, once add_all binds them

    def add(self, name: str, grad, moved) -> None:
        """Fold this step's estimates ``grad`` (host (n,)) of the ``moved`` gates in."""
        self.grad_sum[name][moved] += grad[moved]
        self.grad_count[name][moved] += 1

    def add_all(self, flat, grad, moved) -> None:
        """:meth:`add` for every layer at once: ``grad``, ``moved`` (host (n_total,)) side by
        side as in the :class:`~minibern.bernoulli.flat_layout.FlatLayout` ``flat``; the sums
        become views of two flat arrays (laid out again after pruning or a reset)."""
        if not self._bound_to(flat):
            self._flat = tuple(np.concatenate([arrays[name] for name in flat.names])
                               for arrays in (self.grad_sum, self.grad_count))
            for arrays, joined in zip((self.grad_sum, self.grad_count), self._flat):
                arrays.update(flat.split(joined))
        sums, counts = self._flat
        sums[moved] += grad[moved]
        counts[moved] += 1

    def _bound_to(self, flat) -> bool:
        """Whether every layer's sums are still views of :attr:`_flat`, in ``flat``'s order."""
        if self._flat is None or list(self.grad_sum) != flat.names:
            return False
        return all(arrays[name].base is joined and arrays[name].size == size
                   for arrays, joined in zip((self.grad_sum, self.grad_count), self._flat)
                   for name, size in zip(flat.names, flat.sizes.tolist()))

    def keep(self, name: str, keep) -> None:
        """After pruning removed the units where ``keep`` (host bool (n,)) is False."""
        self.grad_sum[name] = self.grad_sum[name][keep]
        self.grad_count[name] = self.grad_count[name][keep]

    def snapshot(self, history: dict, step: int, gates) -> None:
        """Append θ and the period's mean gradients to ``history``; restart the sums."""
        history.setdefault("theta_snapshot_steps", []).append(step)
        history.setdefault("theta_snapshots", []).append(
            np.concatenate([g.full_theta() for _, _, g in gates]).tolist())
        averages = []
        for _, name, gate in gates:
            total, count = self.grad_sum[name], self.grad_count[name]
            full = np.zeros(gate.n_original)
            full[gate.unit_index] = total / np.maximum(count, 1) * self.n_data
            total[:] = 0.0
            count[:] = 0
            averages.append(full)
        history.setdefault("gradient_snapshots", []).append(np.concatenate(averages).tolist())

    def epoch_end(self, trainer, gates) -> None:
        """The epoch's snapshot, decided shares, kept units and the log line."""
        history = trainer.history
        self.snapshot(history, trainer.global_step, gates)
        counts = gate_counts(gates)
        history.setdefault("decided_1e-3", []).append(decided_fraction(gates, 1e-3))
        history.setdefault("decided_1e-2", []).append(decided_fraction(gates, 1e-2))
        for _, name, gate in gates:
            history.setdefault(f"kept_{name}", []).append(int((gate.theta >= 0.5).sum()))
            history.setdefault(f"units_{name}", []).append(gate.n_units)
        trainer.log("  gates: " + "  ".join(
            f"{c['name']} {c['at_zero']}/{c['at_one']}/{c['undecided']}" for c in counts)
            + f"  (at 0 / at 1 / undecided, within {DECIDED_TOL:g}; decided within 1e-2: "
              f"{100 * decided_fraction(gates, 1e-2):.1f}%)")

    def state_dict(self) -> dict:
        return {**{f"grad_sum/{name}": value.copy() for name, value in self.grad_sum.items()},
                **{f"grad_count/{name}": value.copy() for name, value in self.grad_count.items()}}

    def load_state_dict(self, state: dict) -> None:
        """The sums from a checkpoint (older checkpoints may lack them: left at zero)."""
        for name in self.grad_sum:
            for key, arrays in (("grad_sum", self.grad_sum), ("grad_count", self.grad_count)):
                if f"{key}/{name}" in state:
                    arrays[name][:] = state[f"{key}/{name}"]
