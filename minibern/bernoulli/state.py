"""The hook's per-gate state of one gate layer: counters and flags that follow its units.

Every array is host, shape (n,) for the layer's n remaining units, and is sliced, saved and
restored together (:meth:`GateState.keep`, :meth:`GateState.state_dict`), so physical pruning
(P1)–(P6) and checkpoints cannot leave one behind.
"""
from __future__ import annotations

from minibern import backend as B

np = B.host

#: Checkpoint key prefix -> dtype of every per-gate array, in the checkpoint's order.
FIELDS = {"high": np.int64,       # consecutive updates with θ ≥ 1 − tol (the keep rule)
          "low": np.int64,        # consecutive visits with θ ≤ tol (the zero rule)
          "frozen": bool,         # snapped to 0 or 1: no more updates
          "zero_run": np.int64,   # consecutive visits with θ exactly 0 (P6)
          "marked": bool,         # prune=False: met the pruning condition
          "left_zero": bool,      # ... and later left θ = 0
          "came_back": bool,      # ... and later came back to θ ≥ ½
          "visits": np.int64,     # visits of the estimator, k (C3)
          "mean": np.float64,     # the visit average ḡ of the θ-gradient (C3)
          "var": np.float64,      # the running variance of its estimates (C5)
          "certified": bool,      # certified on its vertex by the decision rule (C10)
          "grad_sum": np.float64,  # Σ of the θ-gradient estimates since the last record
          "grad_count": np.int64}  # ... and how many (the recorded per-period mean)

#: Fields older checkpoints may lack (they are then left at zero).
OPTIONAL = ("zero_run", "marked", "left_zero", "came_back", "visits", "mean", "var",
            "certified", "grad_sum", "grad_count")


class GateState:
    """Counters and flags of one gate layer's n units (see :data:`FIELDS`)."""

    def __init__(self, n_units: int):
        for key, dtype in FIELDS.items():
            setattr(self, key, np.zeros(n_units, dtype=dtype))

    def keep(self, mask) -> None:
        """Keep the entries where the host bool ``mask`` (n,) is True (units removed by pruning)."""
        for key in FIELDS:
            setattr(self, key, getattr(self, key)[mask])

    def mark(self, ready, theta) -> None:
        """prune=False: flag the gates that meet the pruning condition (``ready``) and record
        which flagged ones later leave θ = 0 or come back to θ ≥ ½."""
        self.marked |= ready
        self.left_zero |= self.marked & ~(theta == 0.0)
        self.came_back |= self.marked & (theta >= 0.5)

    def state_dict(self) -> dict:
        """``{field: copy}`` of every array."""
        return {key: getattr(self, key).copy() for key in FIELDS}

    def load_state_dict(self, state: dict) -> None:
        """Overwrite the arrays in place from ``state`` (the fields of :data:`OPTIONAL` may be
        missing)."""
        for key in FIELDS:
            if key in state or key not in OPTIONAL:
                getattr(self, key)[:] = state[key]
