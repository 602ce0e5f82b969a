"""When a gate's unit leaves the arrays: the pruning trigger (P6), and its measurement.

Derivation: docs/derivations/pruning.md, (P6). A gate whose θ has been exactly 0 for
``prune_patience`` consecutive visits (a frozen gate counts one every step) is *ready*: the
hook then removes its unit (:func:`minibern.bernoulli.pruning.remove_units`). With
``prune=False`` nothing is removed; :class:`WouldBePruned` instead marks the ready gates and
counts how many of them later leave 0 — the measurement behind the default patience.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.rules import prune_rule, streak

np = B.host


class PruningTrigger:
    """Counts each gate's visits at θ = 0 (``GateState.zero_run``) and says which are ready."""

    def __init__(self, patience: int):
        self.patience = patience

    @staticmethod
    def count(state, theta, moved) -> None:
        """After a θ step: one visit for every gate ``moved`` or frozen (host bool (n,))."""
        counted = moved | state.frozen  # a visit, for the pruning patience (P6)
        state.zero_run[counted] = streak(theta[counted] == 0.0, state.zero_run[counted])

    def ready(self, state):
        """Host bool (n,): θ exactly 0 for the patience in visits (P6)."""
        return prune_rule(state.zero_run, self.patience)  # (P6)


#: The arrays of :class:`WouldBePruned`, per gate layer (host bool (n,)).
MEASURED = ("marked", "left_zero", "came_back")


class WouldBePruned:
    """``prune=False``: the gates that met the trigger (``marked``) and, of those, the ones
    that later left θ = 0 (``left_zero``) or came back to θ ≥ ½ (``came_back``)."""

    def __init__(self, gates):
        self.reset(gates)

    def reset(self, gates) -> None:
        self.flags = {name: {key: np.zeros(gate.n_units, dtype=bool) for key in MEASURED}
                      for _, name, gate in gates}

    def mark(self, name: str, ready, theta) -> None:
        """Flag the ``ready`` gates of layer ``name`` and update the later-left flags."""
        flags = self.flags[name]
        flags["marked"] |= ready
        flags["left_zero"] |= flags["marked"] & ~(theta == 0.0)
        flags["came_back"] |= flags["marked"] & (theta >= 0.5)

    def report(self) -> dict:
        """``{"marked": {name: count}, "left_zero": ..., "came_back": ...}``."""
        return {key: {name: int(flags[key].sum()) for name, flags in self.flags.items()}
                for key in MEASURED}

    def state_dict(self) -> dict:
        return {f"{key}/{name}": flags[key].copy() for name, flags in self.flags.items()
                for key in MEASURED}

    def load_state_dict(self, state: dict) -> None:
        for name, flags in self.flags.items():
            for key in MEASURED:
                if f"{key}/{name}" in state:
                    flags[key][:] = state[f"{key}/{name}"]
