r"""Learning θ during training: the :class:`GateTrainer` hook, which runs the pieces in order.

After every backward pass (:meth:`GateTrainer.after_backward`):

1. the *estimator* (:mod:`minibern.bernoulli.estimators`, one method ``estimate``) measures
   Δ̂_i/N for the visited gates that can still move (E3)–(E9);
2. the *θ step* (:class:`minibern.bernoulli.theta_step.ThetaStep`) adds κ_i/N (E10), folds the
   estimate into each gate's visit average (C3)–(C5) and takes the projected step with the n/m
   scale (B20)–(B22), (C6) — the only place θ is written;
3. the *decision rule* (:func:`minibern.bernoulli.rules.decide`, ``decide_alpha`` > 0, our
   departure from the paper, measured in docs/RESULTS.md) freezes a gate the projection put on 0
   once a time-uniform sign test of its average agrees (C8)–(C10) (with ``decide_at_one`` also
   at 1, (C10′));
4. the *pruning trigger* (:class:`minibern.bernoulli.prune_trigger.PruningTrigger`) counts the
   visits at θ = 0 (P6), and the *recorder* (:class:`minibern.bernoulli.recording.GateRecorder`)
   sums the estimates for the gradient snapshots.

After every weight step (:meth:`GateTrainer.after_step`) the gates the trigger calls ready are
removed from the arrays by :func:`minibern.bernoulli.pruning.remove_units` (P1)–(P5); with
``prune=False`` :class:`~minibern.bernoulli.prune_trigger.WouldBePruned` only marks them. After
the last epoch :class:`minibern.bernoulli.audit.DecisionAudit` checks the decisions of the units still in the
arrays on the whole training set (C11)–(C12), metrics.json's ``decisions``. The settings:
:class:`minibern.bernoulli.config.GateConfig`.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.audit import DecisionAudit, decisions_report
from minibern.bernoulli.config import GateConfig, gate_settings, recorded_config
from minibern.bernoulli.estimators import make_estimator
from minibern.bernoulli.prune_trigger import PruningTrigger, WouldBePruned
from minibern.bernoulli.pruning import remove_units, restore_structure
from minibern.bernoulli.recording import GateRecorder, decided_fraction, gate_counts
from minibern.bernoulli.rules import decide
from minibern.bernoulli.theta_step import ThetaStep
from minibern.bernoulli.topology import gate_layers, kept_units
from minibern.training.trainer import Hook

np = B.host


class GateTrainer(Hook):
    """Runs the gate pieces at the trainer's calls (see the module docstring).

    Parameters
    ----------
    net : Sequential with gates
    config : GateConfig
    n_data : int
        N, the training examples the per-example cost divides by.
    """

    def __init__(self, net, config: GateConfig, n_data: int):
        self.net, self.config, self.n_data = net, config.validate(), n_data
        self.gates = gate_layers(net)
        if not self.gates:
            raise ValueError("GateTrainer needs a network with gates (build it with gates=True)")
        self.estimator = make_estimator(config.estimator, config.subset, config.first_subset,
                                        config.fused_estimator)
        for _, _, gate in self.gates:  # only the first-order estimator reads ∂ℓ/∂ξ (E3)
            gate.needs_grad_xi = config.estimator == "first-order"
        self.theta_step = ThetaStep(net, config, n_data)
        self.trigger = PruningTrigger(config.prune_patience)
        self.would_be_pruned = None if config.prune else WouldBePruned(self.gates)
        self.recorder = GateRecorder(self.gates, n_data)
        self.audit = DecisionAudit()
        self.removed_certified = {name: 0 for _, name, _ in self.gates}

    @property
    def states(self) -> dict:
        """``{gate name: GateState}`` of the θ step."""
        return self.theta_step.states

    @property
    def kappa(self) -> dict:
        """``{gate name: κ_i}`` (B14), (B14′)."""
        return self.theta_step.prices.kappa

    # -- per step ------------------------------------------------------------------------------
    def before_fit(self, trainer) -> None:
        for _, _, gate in self.gates:
            gate.rng = trainer.hook_rng  # the run's seeded stream for the hooks

    def after_backward(self, trainer) -> None:
        candidates = self.theta_step.candidates()
        estimates = self.estimator.estimate(self.net, trainer.batch_images, trainer.batch_labels,
                                            rng=trainer.hook_rng, candidates=candidates)
        fold = getattr(self.estimator, "fold", None)  # the compensated estimator's (R6)
        before = fold and {name: gate.theta.copy() for _, name, gate in self.gates}
        self.theta_step.step(self.gates, estimates, candidates, _epoch_clock(trainer))
        if fold:
            fold(self.net, before)  # (R6): shares of the units put on 0 into the others
        flat = self.theta_step.flat  # every layer's units side by side: one call each
        grad, movable = self.theta_step.moved
        decide(flat.theta, flat.state, movable, self.config)  # (C8)–(C10)
        self.trigger.count(flat.state, flat.theta, movable)  # (P6)
        self.recorder.add_all(flat, grad, movable)
        every = self.config.snapshot_every
        last_of_epoch = trainer.step + 1 == trainer.steps_per_epoch  # after_epoch records it
        if every and (trainer.global_step + 1) % every == 0 and not last_of_epoch:
            self.recorder.snapshot(trainer.history, trainer.global_step + 1, self.gates)

    def after_step(self, trainer) -> None:
        """Remove (or, with ``prune=False``, mark) the gates the trigger calls ready (P6)."""
        flat = self.theta_step.flat
        if self.would_be_pruned is None and flat.is_bound(self.gates, self.states) \
                and not self.trigger.ready(flat.state).any():  # (P6), every layer at once
            return
        for _, name, gate in list(self.gates):
            ready = self.trigger.ready(self.states[name])  # (P6)
            if self.would_be_pruned is not None:
                self.would_be_pruned.mark(name, ready, gate.theta)
            elif ready.any():
                self._remove(name, ~ready, trainer.optimizer)

    def _remove(self, name, keep, optimizer) -> None:
        remove_units(self.net, name, keep, optimizer)  # (P1)–(P5)
        if hasattr(self.estimator, "keep"):  # the compensated estimator's Gram (R1)
            self.estimator.keep(name, keep)
        self.removed_certified[name] += int((self.states[name].certified & ~keep).sum())
        self.theta_step.keep(name, keep)
        self.recorder.keep(name, keep)
        self.gates = gate_layers(self.net)
        self.theta_step.prices.resize(self.net)

    # -- per epoch and at the end --------------------------------------------------------------
    def after_epoch(self, trainer) -> None:
        if self.config.audit and trainer.epoch == trainer.config.epochs:
            self.audit.run(trainer, self.gates, self.states, self.kappa, self.n_data)
        self.recorder.epoch_end(trainer, self.gates)

    def pruning_report(self) -> dict:
        """Units removed per gate layer; with ``prune=False`` the would-be removals and how many
        of them later left θ = 0 or came back to θ ≥ ½."""
        report = {"prune": self.config.prune, "patience_steps": self.config.prune_patience,
                  "removed": {name: gate.n_removed for _, name, gate in self.gates}}
        if self.would_be_pruned is not None:
            report.update(self.would_be_pruned.report())
        return report

    def decisions(self) -> dict:
        """metrics.json's ``decisions`` (:func:`~minibern.bernoulli.audit.decisions_report`)."""
        return decisions_report(self.gates, self.states, self.removed_certified,
                                self.config.decide_alpha, self.audit.report)

    def metrics(self) -> dict:
        """What metrics.json gains: ``gates`` per layer, decided fractions, pruning, decisions
        and the θ settings."""
        return {"gates": gate_counts(self.gates),
                "decided_1e-3": decided_fraction(self.gates, 1e-3),
                "decided_1e-2": decided_fraction(self.gates, 1e-2),
                "pruning": self.pruning_report(), "decisions": self.decisions(),
                "gate_config": recorded_config(self.config)}

    def kept_units(self) -> dict:
        """Units each gate keeps in the deterministic network, for the trainer's size counts."""
        return kept_units(self.net)

    # -- checkpoints ---------------------------------------------------------------------------
    def settings(self) -> dict:
        return gate_settings(self.config)

    def state_dict(self) -> dict:
        """The settings, and per gate θ, the original indices of its units, the certified
        gates removed and the pieces' arrays, under ``"<field>/<gate name>"``."""
        state = {"config": recorded_config(self.config)}
        for _, name, gate in self.gates:
            per_gate = {"theta": gate.theta.copy(), "unit_index": gate.unit_index.copy(),
                        "removed_certified": np.asarray(self.removed_certified[name]),
                        **self.states[name].state_dict()}
            state.update({f"{key}/{name}": value for key, value in per_gate.items()})
        state.update(self.recorder.state_dict())
        if hasattr(self.estimator, "state_dict"):  # the compensated estimator's Gram (R1)
            state.update(self.estimator.state_dict())
        if self.would_be_pruned is not None:
            state.update(self.would_be_pruned.state_dict())
        return state

    def load_structure(self, state: dict) -> None:
        """Before a checkpoint's arrays are loaded: remove the units the saved run had removed."""
        kept = {name: state[f"unit_index/{name}"] for _, name, _ in self.gates
                if f"unit_index/{name}" in state}
        restore_structure(self.net, kept)
        self.gates = gate_layers(self.net)
        self.theta_step.prices.resize(self.net)
        self.theta_step.reset(self.gates)
        self.recorder.reset(self.gates)
        if self.would_be_pruned is not None:
            self.would_be_pruned.reset(self.gates)

    def load_state_dict(self, state: dict) -> None:
        """θ and every piece's arrays (those of the removed snap rules, ``high``/``low``, and
        with ``prune=True`` the always-zero ``marked``/... of older checkpoints are ignored)."""
        self.theta_step.load(self.gates, state)
        self.recorder.load_state_dict(state)
        if hasattr(self.estimator, "load_state_dict"):
            self.estimator.load_state_dict(state)
        if self.would_be_pruned is not None:
            self.would_be_pruned.load_state_dict(state)
        for _, name, _ in self.gates:
            self.removed_certified[name] = int(state.get(f"removed_certified/{name}", 0))


def _epoch_clock(trainer) -> float:
    """The θ step's clock t: epochs done plus the fraction of this one (so τ is in epochs)."""
    return trainer.epoch + trainer.step / trainer.steps_per_epoch
