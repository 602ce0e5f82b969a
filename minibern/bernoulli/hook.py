r"""Learning θ during training: the :class:`GateTrainer` hook.

Derivations: docs/derivations/bernoulli_objective.md (B14)–(B22) and
docs/derivations/estimators.md (E3)–(E10).

After every backward pass, for every gate layer l and visited gate i, the gradient of the
per-example cost (B15) is estimated as

.. math::
    \hat g_i = \hat\Delta_i / N + \kappa_{l,i} / N                      \tag{E10}

(``--no-hyperprior``: the fixed-γ KL gradient (B6) in place of κ). θ steps on the gate's *visit
average* ḡ of these estimates (C3)–(C5), not on the last one alone: a projected Robbins–Monro
step (B20)–(B22), (C6), :math:`\theta_i \leftarrow \mathrm{clip}(\theta_i - \eta_t
\tfrac{n}{m}\bar g_i, 0, 1)`, where a layer visited on a subset of m of its n movable (not
frozen) gates scales the step by n/m so every movable gate moves by η ḡ in expectation. A gate
stays on a vertex exactly while ḡ points at it (C7): the averaging is what lets the projected
step itself decide θ (docs/derivations/convergence.md). The clock t counts epochs (fractional),
so ``--theta-decay`` is in epochs.

*Decision rule* (``decide_alpha`` > 0, our departure from the paper, measured in
docs/RESULTS.md): a gate the projection has put on 0 is *certified* and frozen there when a
time-uniform level-α sign test of ḡ agrees (C8)–(C10), and is then removed after the pruning
patience; with ``decide_at_one`` gates at 1 are certified the same way (C10′, off by default:
usefulness measured early need not last, and the audit finds such certificates often false in
wide layers). Frozen gates are not visited, so the estimator's cost falls as gates are decided. Every decision is audited at the
end of training against the sign of the gradient on the whole training set (C11)–(C12,
:mod:`minibern.bernoulli.audit`), in ``metrics.json``'s ``decisions``.

*Legacy snap rules* (off unless ``snap_tol`` > 0, kept to reproduce earlier measurements; pure
functions in :mod:`minibern.bernoulli.rules`): *keep* — θ ≥ 1 − ``snap_tol`` for
``keep_patience`` consecutive updates snaps θ to exactly 1, only from epoch ``keep_after``;
*zero* — θ ≤ ``snap_tol`` for ``zero_patience`` consecutive visits snaps θ to exactly 0.

*Physical pruning* (docs/derivations/pruning.md, (P1)–(P6)): after every weight step, a gate
whose θ has been exactly 0 for ``prune_patience`` consecutive visits (a frozen gate counts one
every step) is removed from the arrays by :func:`minibern.bernoulli.pruning.remove_units` (its
unit, the consumer's inputs, the optimiser state, θ and this hook's per-gate state,
:class:`minibern.bernoulli.state.GateState`). With ``prune=False`` nothing is removed; the hook
instead marks the gates that would have been and counts how many of them later leave 0
(``pruning`` in :meth:`metrics`), the measurement behind the default patience.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from minibern import backend as B
from minibern.bernoulli import objective as obj
from minibern.bernoulli.audit import false_decisions, full_data_gradients
from minibern.bernoulli.averaging import check_window, standard_error, update_average
from minibern.bernoulli.estimators import ESTIMATORS, ExactEstimator, make_estimator
from minibern.bernoulli.gate import DECIDED_TOL
from minibern.bernoulli.pruning import remove_units, restore_structure
from minibern.bernoulli.rules import certify_rule, keep_rule, prune_rule, streak, zero_rule
from minibern.bernoulli.state import FIELDS, GateState
from minibern.bernoulli.theta_sgd import ProjectedSGD
from minibern.bernoulli.topology import (gate_layers, gate_sites, kept_units, unit_params,
                                         weight_blocks)
from minibern.training.trainer import Hook

np = B.host


@dataclass
class GateConfig:
    """The θ-learning settings (the CLI's ``--kappa``, ``--theta-lr``, ...).

    Visits per step (``subset``, ``first_subset``) are the cheapest setting of the estimator
    table (docs/derivations/estimators.md, "Measured: the estimator table"); a model may visit
    fewer (:data:`MODEL_VISITS`, :func:`gate_config_for`, which the CLI uses). ``average_visits``
    is W of (C3); ``decide_alpha`` the level α of the decision rule (C9), 0 to turn it off;
    ``audit`` the end-of-run check (C11)–(C12). What these defaults give on MNIST, with and
    without the rule: docs/RESULTS.md.
    """

    estimator: str = "removal"
    kappa: float = 5.5
    kappa_per_param: bool = False
    kappa_expected_params: bool = False
    theta_lr: float = 50.0
    theta_decay: float | None = 5.0
    theta_warmup: float = 0.0
    theta_init: float = 1.0
    hyperprior: bool = True
    gamma: float = 0.5
    subset: int | None = 16
    first_subset: int | None = 16
    snap_tol: float = 0.0
    keep_patience: int = 50
    keep_after: float = 5.0
    zero_patience: int = 30
    prune: bool = True
    prune_patience: int = 30
    snapshot_every: int = 0
    average_visits: int = 20
    decide_alpha: float = 0.05
    decide_min_visits: int = 10
    decide_at_one: bool = False
    audit: bool = True

    def validate(self) -> "GateConfig":
        """Raise ValueError naming the first bad field, its value and the fix (NaN and infinity
        are refused everywhere)."""
        for name in ("kappa", "theta_lr", "theta_init", "gamma", "snap_tol", "keep_after",
                     "theta_decay", "theta_warmup", "decide_alpha"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float))
                                          and not isinstance(value, bool) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.keep_after < 0:
            raise ValueError(f"keep_after must be >= 0 (epochs), got {self.keep_after!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; expected one of "
                             f"{', '.join(ESTIMATORS)}")
        make_estimator(self.estimator, self.subset, self.first_subset)  # checks the subsets
        obj.check_theta(np.asarray(self.theta_init), "theta_init")
        if not self.kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa!r}; use e.g. --kappa 5.5")
        if self.kappa_per_param and self.kappa_expected_params:
            raise ValueError("kappa_per_param and kappa_expected_params are two ways to price a "
                             "unit; choose one (--kappa-per-param or --kappa-expected-params)")
        if not self.theta_lr > 0:
            raise ValueError(f"theta_lr must be > 0, got {self.theta_lr!r}")
        if not self.theta_warmup >= 0:
            raise ValueError(f"theta_warmup must be >= 0 (epochs; 0: no ramp), got "
                             f"{self.theta_warmup!r}")
        if self.theta_decay is not None and not self.theta_decay > 0:
            raise ValueError(f"theta_decay must be > 0 (epochs), got {self.theta_decay!r}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {self.gamma!r}")
        if not 0 <= self.snap_tol < 0.5:
            raise ValueError(f"snap_tol must lie in [0, 0.5), got {self.snap_tol!r}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0 (0: at epoch ends only), got "
                             f"{self.snapshot_every!r}")
        check_window(self.average_visits)
        if not 0 <= self.decide_alpha < 1:
            raise ValueError(f"decide_alpha must lie in [0, 1) (0: no decision rule), got "
                             f"{self.decide_alpha!r}; use e.g. --decide-alpha 0.05")
        for name in ("keep_patience", "zero_patience", "prune_patience", "decide_min_visits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        return self


#: Gates visited per step where a model's costs call for other values than GateConfig's: the
#: fields of GateConfig to override, by model name (docs/derivations/estimators.md, "Visits per
#: step by model"). LeNet-5-Caffe's first two gate layers have 20 and 50 filters, and a visit to
#: one of them re-runs the network from its consumer on (conv2 or fc1, then the rest) for every
#: example that the flip changes.
MODEL_VISITS = {"lenet5": {"first_subset": 2, "subset": 4}}


def gate_config_for(model: str, **settings) -> GateConfig:
    """:class:`GateConfig` with ``model``'s visits per step (:data:`MODEL_VISITS`), then
    ``settings`` (which win)."""
    return GateConfig(**{**MODEL_VISITS.get(model, {}), **settings})


def gate_settings(config: GateConfig) -> dict:
    """The gate settings a resumed run must share with its checkpoint (``Hook.settings``)."""
    return {"gates": asdict(config)}


class GateTrainer(Hook):
    """Estimates Δ, averages it over visits, steps θ by projected SGD, certifies decided gates,
    removes units at 0, records θ and audits the decisions."""

    def __init__(self, net, config: GateConfig, n_data: int):
        self.net = net
        self.config = config.validate()
        self.n_data = n_data
        self.gates = gate_layers(net)
        if not self.gates:
            raise ValueError("GateTrainer needs a network with gates (build it with gates=True)")
        self.estimator = make_estimator(config.estimator, config.subset, config.first_subset)
        for _, _, gate in self.gates:  # only the first-order estimator reads ∂ℓ/∂ξ (E3)
            gate.needs_grad_xi = config.estimator == "first-order"
        bounds = (0.0, 1.0) if config.hyperprior else (1e-6, 1 - 1e-6)
        self.sgd = ProjectedSGD(config.theta_lr, config.theta_decay, bounds=bounds,
                                warmup=config.theta_warmup)
        for _, _, gate in self.gates:  # θ starts inside the box the step projects onto (B20)
            np.clip(gate.theta, *bounds, out=gate.theta)
        self.blocks = weight_blocks(net) if config.kappa_expected_params else None
        self.kappa = {found.name: obj.kappa_per_unit(config.kappa, unit_params(net, found),
                                                     config.kappa_per_param)
                      for found in gate_sites(net)}
        self._price_units()
        self.states = {name: GateState(g.n_units) for _, name, g in self.gates}
        self.removed_certified = {name: 0 for _, name, _ in self.gates}
        self.audit_report = None
        self._penalty_grads = {}

    # -- per step ------------------------------------------------------------------------------
    def _epoch_clock(self, trainer) -> float:
        steps_per_epoch = max(1, -(-trainer.splits["train"].size // trainer.config.batch_size))
        return trainer.epoch + trainer.step / steps_per_epoch

    def before_fit(self, trainer) -> None:
        for _, _, gate in self.gates:
            gate.rng = trainer.hook_rng  # the run's seeded stream for the hooks

    def after_backward(self, trainer) -> None:
        if isinstance(self.estimator, ExactEstimator):
            self.estimator.x = trainer.batch_images
        candidates = {name: ~self.states[name].frozen for _, name, _ in self.gates}
        estimates = self.estimator.estimate(self.net, trainer.batch_labels, rng=trainer.hook_rng,
                                            candidates=candidates)
        clock = self._epoch_clock(trainer)
        self._price_units()
        for _, name, gate in self.gates:
            delta, visited = estimates[name]
            theta = gate.theta
            if self.config.hyperprior:
                prior_grad = self._penalty_grad(name, theta)  # (B15)
            else:
                prior_grad = obj.bernoulli_kl(theta, self.config.gamma, self.n_data, eps=1e-6)[1]  # (B6)
            grad = delta + prior_grad  # (E10)
            movable = visited & candidates[name]
            scale = int(candidates[name].sum()) / max(int(movable.sum()), 1)  # n/m over movable
            state = self.states[name]
            update_average(state, grad, movable, self.config.average_visits)  # (C3)
            state.grad_sum[movable] += grad[movable]
            state.grad_count[movable] += 1
            self.sgd.update(theta, scale * state.mean, t=clock, mask=movable)  # (B20), (C6)
            if self.config.decide_alpha:
                certified = movable & certify_rule(
                    theta, state.mean, standard_error(state, self.config.average_visits),
                    state.visits, self.config.decide_alpha, self.config.decide_min_visits,
                    self.config.decide_at_one)  # (C10), (C10′)
                state.frozen |= certified
                state.certified |= certified
            self._snap(name, gate, movable, clock)
            counted = movable | state.frozen  # a visit, for the pruning patience (P6)
            state.zero_run[counted] = streak(theta[counted] == 0.0, state.zero_run[counted])
        every = self.config.snapshot_every
        if every and (trainer.global_step + 1) % every == 0:
            self.record(trainer, trainer.global_step + 1)

    def _price_units(self) -> None:
        """With ``kappa_expected_params``, κ_i of (B14′) from the current expected widths."""
        if self.blocks is None:
            return
        self.kappa = obj.expected_parameters(
            self.blocks, {name: gate.theta for _, name, gate in self.gates}, self.config.kappa)[1]
        self._penalty_grads = {}

    def _reprice_after_removal(self) -> None:
        """With (B14′), the weight blocks and every κ_i for the network's new widths (the audit
        may run before the next step reprices)."""
        if self.blocks is not None:
            self.blocks = weight_blocks(self.net)
            self._price_units()

    def _penalty_grad(self, name, theta):
        """(B15)'s gradient κ_i/N, which does not depend on θ_i: computed once per layer width
        (per step with (B14′), whose κ_i follow the other layers' expected widths)."""
        cached = self._penalty_grads.get(name)
        if cached is None or cached.shape != theta.shape:
            cached = self._penalty_grads[name] = obj.flattened_penalty(
                theta, self.kappa[name], self.n_data)[1]
        return cached

    def _snap(self, name, gate, visited, clock) -> None:
        tol = self.config.snap_tol
        if not tol:
            return
        theta, state = gate.theta, self.states[name]
        state.high[:] = streak(theta >= 1 - tol, state.high)
        state.low[visited] = streak(theta[visited] <= tol, state.low[visited])
        keep = keep_rule(state.high, self.config.keep_patience, clock, self.config.keep_after)
        zero = zero_rule(state.low, self.config.zero_patience)
        for snapped, value in ((keep, 1.0), (zero, 0.0)):
            if snapped is not None and snapped.any():
                theta[snapped] = value
                state.frozen |= snapped

    # -- physical pruning ----------------------------------------------------------------------
    def after_step(self, trainer) -> None:
        """Remove (or, with ``prune=False``, mark) the gates whose θ has been 0 for the patience
        in visits (P6), counted in :meth:`after_backward`."""
        for _, name, gate in list(self.gates):
            ready = prune_rule(self.states[name].zero_run, self.config.prune_patience)  # (P6)
            if not self.config.prune:
                self.states[name].mark(ready, gate.theta)
            elif ready.any():
                self._remove(name, ~ready, trainer.optimizer)

    def _remove(self, name, keep, optimizer) -> None:
        remove_units(self.net, name, keep, optimizer)  # (P1)–(P5)
        self.removed_certified[name] += int((self.states[name].certified & ~keep).sum())
        self.states[name].keep(keep)
        self.gates = gate_layers(self.net)
        self._reprice_after_removal()

    def load_structure(self, state: dict) -> None:
        """Before a checkpoint's arrays are loaded: remove the units the saved run had removed."""
        kept = {name: state[f"unit_index/{name}"] for _, name, _ in self.gates
                if f"unit_index/{name}" in state}
        restore_structure(self.net, kept)
        self.gates = gate_layers(self.net)
        self._reprice_after_removal()
        self.states = {name: GateState(gate.n_units) for _, name, gate in self.gates}

    def pruning_report(self) -> dict:
        """Units removed per gate layer; with ``prune=False`` the would-be removals and how many
        of them later left θ = 0 or came back to θ ≥ ½."""
        report = {"prune": self.config.prune, "patience_steps": self.config.prune_patience,
                  "removed": {name: gate.n_removed for _, name, gate in self.gates}}
        if not self.config.prune:
            for key in ("marked", "left_zero", "came_back"):
                report[key] = {name: int(getattr(self.states[name], key).sum())
                               for _, name, _ in self.gates}
        return report

    # -- records -------------------------------------------------------------------------------
    def record(self, trainer, step: int) -> None:
        """Snapshot θ of every original gate (0 for removed ones), concatenated in gate order,
        into the trainer's history (``theta_snapshots`` (S, G) and ``theta_snapshot_steps``),
        and beside it N times the mean of each gate's θ-gradient estimates since the previous
        record, i.e. the estimated Δ_i + κ_i over that period (``gradient_snapshots`` (S, G);
        0 for removed gates and for gates not visited in the period): where it is positive,
        the estimator pushed θ_i towards 0 over the period."""
        trainer.history.setdefault("theta_snapshot_steps", []).append(step)
        trainer.history.setdefault("theta_snapshots", []).append(
            np.concatenate([g.full_theta() for _, _, g in self.gates]).tolist())
        averages = []
        for _, name, gate in self.gates:
            state = self.states[name]
            full = np.zeros(gate.n_original)
            full[gate.unit_index] = state.grad_sum / np.maximum(state.grad_count, 1) * self.n_data
            state.grad_sum[:] = 0.0
            state.grad_count[:] = 0
            averages.append(full)
        trainer.history.setdefault("gradient_snapshots", []).append(
            np.concatenate(averages).tolist())

    def counts(self) -> list[dict]:
        """metrics.json's ``gates``: per layer total / at_zero / at_one / undecided (1e-3)."""
        return [{"name": name, **gate.counts(DECIDED_TOL)} for _, name, gate in self.gates]

    def decided_fraction(self, tol: float) -> float:
        """Share of all original gates within ``tol`` of 0 or 1 (removed ones count as 0)."""
        theta = np.concatenate([g.full_theta() for _, _, g in self.gates])
        return float(np.mean((theta <= tol) | (theta >= 1 - tol)))

    def decisions(self) -> dict:
        """metrics.json's ``decisions``: per layer, the gates certified by the rule (in the
        arrays or removed since), their share of all gates and, after the audit, the false
        decisions (C12) of the rule and of the projection alone."""
        layers, total, certified = [], 0, 0
        for _, name, gate in self.gates:
            count = int(self.states[name].certified.sum()) + self.removed_certified[name]
            layers.append({"name": name, "total": gate.n_original, "by_rule": count})
            total, certified = total + gate.n_original, certified + count
        report = {"alpha": self.config.decide_alpha, "layers": layers,
                  "share_by_rule": certified / total, "false_rate": None}
        if self.audit_report is not None:
            report.update(self.audit_report)
        return report

    def audit(self, trainer) -> None:
        """(C11)–(C12) on the whole training split: the vertices that disagree with the sign of
        the full-data gradient, for rule-certified and projection-only decisions apart."""
        train = trainer.splits["train"]
        gradients = full_data_gradients(self.net, train.images, train.labels, self.kappa,
                                        self.n_data)
        totals = {"rule": [0, 0], "projection": [0, 0]}  # [decisions, false ones]
        layers = []
        for _, name, gate in self.gates:
            certified = self.states[name].certified
            for kind, pick in (("rule", certified), ("projection", ~certified)):
                counts = false_decisions(np.where(pick, gate.theta, 0.5), gradients[name])
                totals[kind][0] += counts["at_one"] + counts["at_zero"]
                totals[kind][1] += counts["false_at_one"] + counts["false_at_zero"]
                layers.append({"name": name, "decided_by": kind, **counts})
        self.audit_report = {
            "audit": layers, "audited_rule": totals["rule"][0],
            "audited_projection": totals["projection"][0],
            **{key: (false / decided if decided else None)
               for key, (decided, false) in (("false_rate", totals["rule"]),
                                             ("false_rate_projection", totals["projection"]))}}
        trainer.log(f"  audit on {train.size} images: false decisions "
                    f"{totals['rule'][1]}/{totals['rule'][0]} certified by the rule, "
                    f"{totals['projection'][1]}/{totals['projection'][0]} by the projection "
                    "alone")

    def after_epoch(self, trainer) -> None:
        if self.config.audit and trainer.epoch == trainer.config.epochs:
            self.audit(trainer)
        self.record(trainer, trainer.global_step)
        counts = self.counts()
        for key in ("decided_1e-3", "decided_1e-2"):
            trainer.history.setdefault(key, [])
        trainer.history["decided_1e-3"].append(self.decided_fraction(1e-3))
        trainer.history["decided_1e-2"].append(self.decided_fraction(1e-2))
        for c in counts:
            gate = self._gate(c["name"])
            trainer.history.setdefault(f"kept_{c['name']}", []).append(int((gate.theta >= 0.5).sum()))
            trainer.history.setdefault(f"units_{c['name']}", []).append(gate.n_units)
        trainer.log("  gates: " + "  ".join(
            f"{c['name']} {c['at_zero']}/{c['at_one']}/{c['undecided']}" for c in counts)
            + f"  (at 0 / at 1 / undecided; decided within 1e-2: "
              f"{100 * self.decided_fraction(1e-2):.1f}%)")

    def metrics(self) -> dict:
        """What metrics.json gains: ``gates`` per layer, decided fractions, the θ settings."""
        return {"gates": self.counts(), "decided_1e-3": self.decided_fraction(1e-3),
                "decided_1e-2": self.decided_fraction(1e-2), "pruning": self.pruning_report(),
                "decisions": self.decisions(), "gate_config": asdict(self.config)}

    def kept_units(self) -> dict:
        """Units each gate keeps in the deterministic network, for the trainer's size counts."""
        return kept_units(self.net)

    def _gate(self, name):
        return next(g for _, n, g in self.gates if n == name)

    # -- checkpoints ---------------------------------------------------------------------------
    def settings(self) -> dict:
        return gate_settings(self.config)

    def state_dict(self) -> dict:
        """The config, and per gate θ, the original indices of its units and its
        :class:`~minibern.bernoulli.state.GateState`, under ``"<field>/<gate name>"``."""
        state = {"config": asdict(self.config)}
        for _, name, gate in self.gates:
            per_gate = {"theta": gate.theta.copy(), "unit_index": gate.unit_index.copy(),
                        "removed_certified": np.asarray(self.removed_certified[name]),
                        **self.states[name].state_dict()}
            state.update({f"{key}/{name}": value for key, value in per_gate.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        for _, name, gate in self.gates:
            gate.theta[:] = state[f"theta/{name}"]
            self.states[name].load_state_dict({key: state[f"{key}/{name}"] for key in FIELDS
                                               if f"{key}/{name}" in state})
            self.removed_certified[name] = int(state.get(f"removed_certified/{name}", 0))
