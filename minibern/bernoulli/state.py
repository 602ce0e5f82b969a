"""The per-gate state of one gate layer: the arrays that follow its units.

Every array is host, shape (n,) for the layer's n remaining units, and is sliced, saved and
restored together (:meth:`GateState.keep`, :meth:`GateState.state_dict`), so physical pruning
(P1)–(P6) and checkpoints cannot leave one behind. The θ step
(:class:`minibern.bernoulli.theta_step.ThetaStep`) owns one per gate layer; the visit average
is its (C3)–(C5), ``frozen`` and ``certified`` the decision rule's (C10), ``zero_run`` the
pruning trigger's (P6).
"""
from __future__ import annotations

from minibern import backend as B

np = B.host

#: Checkpoint key prefix -> dtype of every per-gate array, in the checkpoint's order.
FIELDS = {"frozen": bool,         # decided: θ no longer moves and the gate is not visited
          "zero_run": np.int64,   # consecutive visits with θ exactly 0 (P6)
          "visits": np.int64,     # visits of the estimator, k (C3)
          "mean": np.float64,     # the visit average ḡ of the θ-gradient (C3)
          "var": np.float64,      # the running variance of its estimates (C5)
          "certified": bool}      # certified on its vertex by the decision rule (C10)

#: Fields older checkpoints may lack (they are then left at zero).
OPTIONAL = ("zero_run", "visits", "mean", "var", "certified")


class GateState:
    """Counters and flags of one gate layer's n units (see :data:`FIELDS`)."""

    def __init__(self, n_units: int):
        for key, dtype in FIELDS.items():
            setattr(self, key, np.zeros(n_units, dtype=dtype))

    def keep(self, mask) -> None:
        """Keep the entries where the host bool ``mask`` (n,) is True (units removed by pruning)."""
        for key in FIELDS:
            setattr(self, key, getattr(self, key)[mask])

    def state_dict(self) -> dict:
        """``{field: copy}`` of every array."""
        return {key: getattr(self, key).copy() for key in FIELDS}

    def load_state_dict(self, state: dict) -> None:
        """Overwrite the arrays in place from ``state`` (the fields of :data:`OPTIONAL` may be
        missing; keys of other pieces are ignored)."""
        for key in FIELDS:
            if key in state or key not in OPTIONAL:
                getattr(self, key)[:] = state[key]
