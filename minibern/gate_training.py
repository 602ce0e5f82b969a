r"""Learning θ during training: the :class:`GateTrainer` hook.

Derivations: docs/derivations/bernoulli_objective.md (B14)–(B22) and
docs/derivations/estimators.md (E3)–(E10).

After every backward pass, for every gate layer l and visited gate i, the gradient of the
per-example cost (B15) is estimated as

.. math::
    \hat g_i = \hat\Delta_i / N + \kappa_{l,i} / N                      \tag{E10}

(``--no-hyperprior``: the fixed-γ KL gradient (B6) in place of κ), and θ takes a projected
Robbins–Monro step (B20)–(B22), :math:`\theta_i \leftarrow \mathrm{clip}(\theta_i - \eta_t
\tfrac{n}{m}\hat g_i, 0, 1)`, where a layer visited on a subset of m of its n gates scales the
step by n/m so every gate moves by η ĝ in expectation. The clock t counts epochs
(fractional), so ``--theta-decay`` is in epochs.

Two practical rules are optional (both off by default, both from the prototype of method.md §6):
*keep* — θ ≥ 1 − ``snap_tol`` for ``keep_patience`` consecutive updates snaps θ to exactly 1,
only from epoch ``keep_after``; *zero* — θ ≤ ``snap_tol`` for ``zero_patience`` consecutive
updates (visits) snaps θ to exactly 0. A snapped gate is frozen: no further updates (a gate
at exactly 0 is one physical pruning may remove; one at exactly 1 draws no random numbers).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from minibern import backend as B
from minibern import objective as obj
from minibern.estimators import ESTIMATORS, ExactEstimator, gate_layers, make_estimator
from minibern.gates import DECIDED_TOL
from minibern.theta_sgd import ProjectedSGD
from minibern.train import Hook

np = B.host


@dataclass
class GateConfig:
    """The θ-learning settings (the CLI's ``--kappa``, ``--theta-lr``, ...)."""

    estimator: str = "removal"
    kappa: float = 5.5
    kappa_per_param: bool = False
    theta_lr: float = 20.0
    theta_decay: float | None = 0.5
    theta_init: float = 1.0
    hyperprior: bool = True
    gamma: float = 0.5
    subset: int | None = 32
    snap_tol: float = 0.0
    keep_patience: int = 100
    keep_after: float = 5.0
    zero_patience: int = 100
    snapshot_every: int = 0

    def validate(self) -> "GateConfig":
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; expected one of "
                             f"{', '.join(ESTIMATORS)}")
        obj.check_theta(np.asarray(self.theta_init), "theta_init")
        if not self.kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa!r}; use e.g. --kappa 5.5")
        if not self.theta_lr > 0:
            raise ValueError(f"theta_lr must be > 0, got {self.theta_lr!r}")
        if self.theta_decay is not None and not self.theta_decay > 0:
            raise ValueError(f"theta_decay must be > 0 (epochs), got {self.theta_decay!r}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {self.gamma!r}")
        if not 0 <= self.snap_tol < 0.5:
            raise ValueError(f"snap_tol must lie in [0, 0.5), got {self.snap_tol!r}")
        for name in ("keep_patience", "zero_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        return self


def _unit_params(net, index) -> int:
    """Parameters a unit gated at ``index`` costs: its incoming weights and bias."""
    from minibern.layers import Conv2D, Dense

    for k in range(index - 1, -1, -1):
        layer = net[k]
        if isinstance(layer, Dense):
            return int(layer.params["W"].shape[0]) + 1
        if isinstance(layer, Conv2D):
            f, c, kh, kw = layer.params["W"].shape
            return int(c * kh * kw) + 1
    for k in range(index + 1, len(net)):  # an input gate: the weights it feeds
        layer = net[k]
        if isinstance(layer, Dense):
            return int(layer.params["W"].shape[1])
    return 1


class GateTrainer(Hook):
    """Estimates Δ, updates θ by projected SGD, applies the snap rules, records θ."""

    def __init__(self, net, config: GateConfig, n_data: int):
        self.net = net
        self.config = config.validate()
        self.n_data = n_data
        self.gates = gate_layers(net)
        if not self.gates:
            raise ValueError("GateTrainer needs a network with gates (build it with gates=True)")
        self.estimator = make_estimator(config.estimator, config.subset)
        bounds = (0.0, 1.0) if config.hyperprior else (1e-6, 1 - 1e-6)
        self.sgd = ProjectedSGD(config.theta_lr, config.theta_decay, bounds=bounds)
        self.kappa = {name: obj.kappa_per_unit(config.kappa, _unit_params(net, index),
                                               config.kappa_per_param)
                      for index, name, _ in self.gates}
        self.high_run = {name: np.zeros(g.n_units, dtype=np.int64) for _, name, g in self.gates}
        self.low_run = {name: np.zeros(g.n_units, dtype=np.int64) for _, name, g in self.gates}
        self.frozen = {name: np.zeros(g.n_units, dtype=bool) for _, name, g in self.gates}

    # -- per step ------------------------------------------------------------------------------
    def _epoch_clock(self, trainer) -> float:
        steps_per_epoch = max(1, -(-trainer.splits["train"].size // trainer.config.batch_size))
        return trainer.epoch + trainer.step / steps_per_epoch

    def before_fit(self, trainer) -> None:
        for _, _, gate in self.gates:
            gate.rng = trainer.gate_rng  # the run's seeded gate stream

    def after_backward(self, trainer) -> None:
        if isinstance(self.estimator, ExactEstimator):
            self.estimator.x = trainer.batch_images
        estimates = self.estimator.estimate(self.net, trainer.batch_labels, rng=trainer.gate_rng)
        clock = self._epoch_clock(trainer)
        for _, name, gate in self.gates:
            delta, visited = estimates[name]
            theta = gate.theta
            if self.config.hyperprior:
                prior_grad = obj.flattened_penalty(theta, self.kappa[name], self.n_data)[1]  # (B15)
            else:
                prior_grad = obj.bernoulli_kl(theta, self.config.gamma, self.n_data, eps=1e-6)[1]  # (B6)
            grad = delta + prior_grad  # (E10)
            scale = gate.n_units / max(int(visited.sum()), 1)
            movable = visited & ~self.frozen[name]
            self.sgd.update(theta, scale * grad, t=clock, mask=movable)  # (B20), (B22)
            self._snap(name, gate, movable, clock)
        every = self.config.snapshot_every
        if every and (trainer.global_step + 1) % every == 0:
            self.record(trainer, trainer.global_step + 1)

    def _snap(self, name, gate, visited, clock) -> None:
        tol = self.config.snap_tol
        if not tol:
            return
        theta = gate.theta
        high, low = self.high_run[name], self.low_run[name]
        high[:] = np.where(theta >= 1 - tol, high + 1, 0)
        low[visited] = np.where(theta[visited] <= tol, low[visited] + 1, 0)
        keep = high >= self.config.keep_patience if clock >= self.config.keep_after else None
        zero = low >= self.config.zero_patience
        for snapped, value in ((keep, 1.0), (zero, 0.0)):
            if snapped is not None and snapped.any():
                theta[snapped] = value
                self.frozen[name] |= snapped

    # -- records -------------------------------------------------------------------------------
    def record(self, trainer, step: int) -> None:
        """Snapshot θ of every gate, concatenated in gate order, into the trainer's history
        (``theta_snapshots`` (S, G) and ``theta_snapshot_steps`` (S,))."""
        trainer.history.setdefault("theta_snapshot_steps", []).append(step)
        trainer.history.setdefault("theta_snapshots", []).append(
            np.concatenate([g.theta for _, _, g in self.gates]).tolist())

    def counts(self) -> list[dict]:
        """metrics.json's ``gates``: per layer total / at_zero / at_one / undecided (1e-3)."""
        return [{"name": name, **gate.counts(DECIDED_TOL)} for _, name, gate in self.gates]

    def decided_fraction(self, tol: float) -> float:
        theta = np.concatenate([g.theta for _, _, g in self.gates])
        return float(np.mean((theta <= tol) | (theta >= 1 - tol)))

    def after_epoch(self, trainer) -> None:
        self.record(trainer, trainer.global_step)
        counts = self.counts()
        for key in ("decided_1e-3", "decided_1e-2"):
            trainer.history.setdefault(key, [])
        trainer.history["decided_1e-3"].append(self.decided_fraction(1e-3))
        trainer.history["decided_1e-2"].append(self.decided_fraction(1e-2))
        for c in counts:
            trainer.history.setdefault(f"kept_{c['name']}", []).append(
                int((self._gate(c["name"]).theta >= 0.5).sum()))
        trainer.log("  gates: " + "  ".join(
            f"{c['name']} {c['at_zero']}/{c['at_one']}/{c['undecided']}" for c in counts)
            + f"  (at 0 / at 1 / undecided; decided within 1e-2: "
              f"{100 * self.decided_fraction(1e-2):.1f}%)")

    def metrics(self) -> dict:
        """What metrics.json gains: ``gates`` per layer, decided fractions, the θ settings."""
        return {"gates": self.counts(), "decided_1e-3": self.decided_fraction(1e-3),
                "decided_1e-2": self.decided_fraction(1e-2), "gate_config": asdict(self.config)}

    def _gate(self, name):
        return next(g for _, n, g in self.gates if n == name)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"config": asdict(self.config)}
        for _, name, gate in self.gates:
            state[f"theta/{name}"] = gate.theta.copy()
            state[f"high/{name}"] = self.high_run[name].copy()
            state[f"low/{name}"] = self.low_run[name].copy()
            state[f"frozen/{name}"] = self.frozen[name].copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        for _, name, gate in self.gates:
            gate.theta[:] = state[f"theta/{name}"]
            self.high_run[name][:] = state[f"high/{name}"]
            self.low_run[name][:] = state[f"low/{name}"]
            self.frozen[name][:] = state[f"frozen/{name}"]
