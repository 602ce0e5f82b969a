"""What a gated training step costs against an un-gated one, along a real run.

For a finished gated LeNet-300-100 run (its ``history.npz`` holds θ of every gate at every
epoch end), rebuild the network as it stood after epoch e — θ from the snapshot, gates at
exactly 0 frozen (and at exactly 1 where the run's settings freeze them there,
``--decide-at-one``; otherwise a gate at 1 is still estimated, as in
training), units at 0 physically removed — and time training steps with the
default θ estimator against steps of the *full-width* network without gates, alternating the two
in one process. Prints seconds per 100 steps (median and min–max of the rounds) and the paired
ratio gated / un-gated per epoch e (e = 0: the start, every θ = 1, nothing frozen)::

    python benchmarks/bench_gates.py --run runs/tutorial6 --epochs-at 0 1 2 5 10 20

With ``--run-breakdown`` as well, it splits the gated step at each of those states into its
parts (as ``--breakdown`` below) against the un-gated step of the *same* arrays (every remaining
gate at θ = 1, no gate hook)::

    python benchmarks/bench_gates.py --run RUN --run-breakdown --epochs-at 20 --rounds 5 --steps 100

With ``--compare`` instead of ``--run`` it times the full-width start (every θ = 1, nothing
frozen) of every gated setting of ``benchmarks/estimator_table.py`` (the same CLI flags), all
settings and the un-gated step alternated within each round — the cost column of the estimator
table::

    python benchmarks/bench_gates.py --compare --rounds 9

With ``--breakdown`` it splits the full-width gated step of LeNet-300-100 and LeNet-5-Caffe into
its parts (the gates' forward and backward with the mask sampling, the removal estimator per gate
layer, the θ step with the averages and the decision rule, and what is not timed apart: the
layers, the loss, the optimiser and the hooks' plumbing) by timing each part's calls inside the
same steps, next to the un-gated step of the same network, in milliseconds per step
(``--first-subset``/``--subset`` change the visits per step)::

    python benchmarks/bench_gates.py --breakdown --rounds 5

``--first-epoch`` times a whole first epoch (55,000 images) of both LeNets, gated against
un-gated, alternated::

    python benchmarks/bench_gates.py --first-epoch --rounds 3

``--ops`` counts the device operations of a gated step by part (the same parts; what a GPU
would launch, each a kernel: ``minibern.backend.counting_ops``) and of the un-gated step, for
both LeNets at full width and, with ``--ops-run RUN``, at a run's states after ``--epochs-at``::

    python benchmarks/bench_gates.py --ops --ops-run experiments/runs/lenet300/gated_seed0 --epochs-at 3 20

All modes end with the host↔device transfers of a gated step after the first, as the strict
backend counts them (copies to the device / to the host / scalar pulls, which a GPU waits for;
``minibern.backend.counting_transfers``) — a small constant that does not depend on the widths
or the gates visited. ``--transfers`` prints only those::

    python benchmarks/bench_gates.py --transfers

The run is only read. MNIST is needed (``$MINIBERN_DATA`` or ``--data``). Threads: whatever
NumPy's BLAS uses (set ``OPENBLAS_NUM_THREADS`` to pin it).
"""
import argparse
import dataclasses
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from estimator_table import ROWS
from minibern import backend as B
from minibern.bernoulli.config import FUSED_MODELS, GateConfig, gate_config_for
from minibern.bernoulli.gated_models import build_model, lenet300_100
from minibern.bernoulli.hook import GateTrainer
from minibern.cli.train import build_parser, gate_config_from_args
from minibern.data import load_mnist
from minibern.data.mnist import N_TRAIN
from minibern.training.trainer import Hook, TrainConfig, Trainer, device_splits, run_rngs
from minibern.training.transfers import StepTransfers


def gated_trainer(data, theta_full, gate_config, steps):
    """A Trainer over ``steps`` batches for the gated net in the state ``theta_full`` describes
    (None: the start)."""
    config = TrainConfig(model="lenet300", epochs=1, train_subset=100 * steps)
    net = lenet300_100(seed=run_rngs(0)[0], gates=True)
    splits = device_splits(data, net.input_shape, config.train_subset)
    hook = GateTrainer(net, gate_config, N_TRAIN)
    trainer = Trainer(net, splits, config, hooks=[hook], log=lambda *_: None)
    hook.before_fit(trainer)
    if theta_full is not None:
        start = 0
        at_one_frozen = gate_config.decide_at_one
        for _, name, gate in list(hook.gates):
            theta = theta_full[start:start + gate.n_units]
            start += gate.n_units
            gate.theta[:] = theta
            hook.states[name].frozen[:] = (theta == 0.0) | (at_one_frozen & (theta == 1.0))
            if (theta == 0.0).any():
                hook._remove(name, theta > 0.0, trainer.optimizer)  # as pruning would have
    return trainer


def plain_trainer(data, steps):
    config = TrainConfig(model="lenet300", epochs=1, train_subset=100 * steps)
    net = lenet300_100(seed=run_rngs(0)[0])
    return Trainer(net, device_splits(data, net.input_shape, config.train_subset), config,
                   log=lambda *_: None)


def seconds_per_100(trainer, steps) -> float:
    start = time.perf_counter()
    trainer.train_epoch()
    return (time.perf_counter() - start) * 100 / steps


def compare_settings(data, rounds: int, steps: int) -> None:
    """Full-width gated step of every estimator-table setting against the un-gated step."""
    parser = build_parser()
    settings = {row: gate_config_from_args(parser.parse_args(
                    ["--model", "lenet300", "--out", "unused", *flags]))
                for row, flags in ROWS.items() if "--gates" in flags}
    print(f"full-width start, {rounds} rounds of {steps} steps, batch 100, all settings and the "
          "un-gated step alternated in each round")
    print("| setting | gated s/100 steps | gated / un-gated (paired, median, min–max) |")
    print("|---|---|---|")
    gated = {row: [] for row in settings}
    plain = []
    for r in range(rounds):
        order = list(settings) if r % 2 == 0 else list(reversed(settings))
        plain.append(seconds_per_100(plain_trainer(data, steps), steps))
        for row in order:
            gated[row].append(seconds_per_100(gated_trainer(data, None, settings[row], steps), steps))
    for row, times in gated.items():
        ratios = [t / p for t, p in zip(times, plain)]
        print(f"| {row} | {statistics.median(times):.3f} ({min(times):.3f}–{max(times):.3f}) | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
    print(f"| no gates | {statistics.median(plain):.3f} ({min(plain):.3f}–{max(plain):.3f}) | 1 |")


def model_trainer(data, model: str, gates: bool, train_subset=None, **settings):
    """A fresh one-epoch Trainer of ``model`` over the first ``train_subset`` training images
    (all if None): un-gated, or gated with the model's GateConfig (:func:`gate_config_for`,
    ``settings`` overriding its fields: visits per step, ``fused_estimator``) at the κ/N of a
    full MNIST run."""
    config = TrainConfig(model=model, epochs=1, train_subset=train_subset)
    net = build_model(model, seed=run_rngs(0)[0], gates=gates)
    trainer = Trainer(net, device_splits(data, net.input_shape, train_subset), config,
                      log=lambda *_: None)
    if gates:
        hook = GateTrainer(net, gate_config_for(model, **settings), N_TRAIN)
        trainer.hooks = [hook]
        hook.before_fit(trainer)
    return trainer


class PartTimer:
    """Accumulates the wall time of chosen methods, by part name, while installed."""

    def __init__(self):
        self.seconds = {}
        self._saved = []

    def wrap(self, owner, attribute, part):
        original = getattr(owner, attribute)
        seconds = self.seconds

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                name = part(*args) if callable(part) else part
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        self._saved.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def remove(self):
        for owner, attribute, original in reversed(self._saved):
            setattr(owner, attribute, original)
        self._saved = []


def pruned_plain_trainer(data, theta_full, gate_config, steps):
    """The un-gated twin of :func:`gated_trainer`: the same arrays (the units ``theta_full``
    leaves), every remaining gate at θ = 1 (the identity) and no gate hook."""
    trainer = gated_trainer(data, theta_full, gate_config, steps)
    for _, _, gate in trainer.hooks[0].gates:
        gate.theta[:] = 1.0
    trainer.hooks = []
    return trainer


def breakdown(data, model: str, rounds: int, steps: int, **visits) -> None:
    """ms per step of each part of the full-width gated step of ``model``, and the un-gated step
    of the same network, medians over ``rounds`` (alternated). ``visits``: ``first_subset`` /
    ``subset`` instead of the model's (:func:`gate_config_for`)."""
    print_breakdown(lambda gates: model_trainer(data, model, gates, 100 * steps, **visits),
                    f"{model}, full width, every gate movable", rounds, steps)


def run_breakdown(data, run: Path, epoch: int, rounds: int, steps: int) -> None:
    """The same split of the gated step of a LeNet-300-100 run as it stood after ``epoch``
    (its widths, θ and frozen gates; see :func:`gated_trainer`), against the un-gated step of
    the same arrays (:func:`pruned_plain_trainer`)."""
    theta, gate_config = run_state(run, epoch)
    trainers = {True: gated_trainer, False: pruned_plain_trainer}
    trainer = gated_trainer(data, theta, gate_config, steps)
    widths = "-".join(str(trainer.net[name].n_units) for name in ("gate_in", "gate1", "gate2"))
    print_breakdown(lambda gates: trainers[gates](data, theta, gate_config, steps),
                    f"{run} after epoch {epoch}, arrays {widths}", rounds, steps)


def run_state(run: Path, epoch: int):
    """(θ of every gate after ``epoch``, None for the start; the run's GateConfig)."""
    metrics = json.loads((run / "metrics.json").read_text())
    with np.load(run / "history.npz") as history:
        snapshots, steps = history["theta_snapshots"], history["theta_snapshot_steps"]
        epochs = len(history["train_loss"])
    fields = {k: v for k, v in metrics["gate_config"].items()
              if k in GateConfig.__dataclass_fields__}
    # the last snapshot at or before the epoch's last step (the run's last snapshot ends its
    # last epoch; runs record θ once or several times an epoch)
    end = min(epoch, epochs) * steps[-1] / epochs
    index = max(int(np.searchsorted(steps, end, side="right")) - 1, 0)
    theta = None if epoch == 0 else snapshots[index]
    return theta, GateConfig(**fields)


def print_breakdown(make_trainer, title: str, rounds: int, steps: int) -> None:
    """Time the parts of the steps of ``make_trainer(True)`` (gated) and the whole steps of
    ``make_trainer(False)`` (un-gated), alternated over ``rounds``; print the medians."""
    from minibern.bernoulli.estimators import RemovalEstimator
    from minibern.bernoulli.gate import BernoulliGate

    parts, plain = {}, []
    for r in range(rounds):
        for gates in ((True, False) if r % 2 == 0 else (False, True)):
            trainer = make_trainer(gates)
            if not gates:
                plain.append(seconds_per_100(trainer, steps) * 10)  # ms per step
                continue
            timer = PartTimer()
            timer.wrap(BernoulliGate, "forward", "gates: forward and mask sampling")
            timer.wrap(BernoulliGate, "backward", "gates: backward")
            timer.wrap(RemovalEstimator, "estimate", "estimator: total")
            timer.wrap(RemovalEstimator, "_layer_flips",
                       lambda self, net, found, *rest: f"estimator: {found.name}")
            timer.wrap(GateTrainer, "after_backward", "θ step, averages, rule (+ estimator)")
            timer.wrap(GateTrainer, "after_step", "pruning check")
            try:
                total = seconds_per_100(trainer, steps) * 10
            finally:
                timer.remove()
            seconds = dict(timer.seconds)
            seconds["θ step, averages, rule (+ estimator)"] -= seconds["estimator: total"]
            seconds["estimator: total"] -= sum(v for k, v in seconds.items()
                                               if k.startswith("estimator: ") and k != "estimator: total")
            named = {("θ step, averages, rule" if k.startswith("θ step") else
                      "estimator: sampling, gathers, sums" if k == "estimator: total" else k):
                     1000 * v / steps for k, v in seconds.items()}
            named["not timed above: layers, loss, optimiser, hooks"] = total - sum(named.values())
            named["gated step, total"] = total
            for key, value in named.items():
                parts.setdefault(key, []).append(value)
    base = statistics.median(plain)
    print(f"\n{title}; ms per step, median of {rounds} rounds of {steps} steps; share of the "
          f"un-gated step of the same arrays ({base:.2f} ms) in the last column\n")
    print("| part | ms per step | / un-gated step |")
    print("|---|---|---|")
    order = sorted((k for k in parts if k != "gated step, total"),
                   key=lambda k: (not k.startswith("not timed"), k))
    for key in [*order, "gated step, total"]:
        value = statistics.median(parts[key])
        print(f"| {key} | {value:.2f} | {value / base:.2f} |")
    print(f"| un-gated step | {base:.2f} | 1 |")


class PartOps:
    """Counts the strict backend's device operations (``B.counting_ops``) of chosen methods, by
    part name, while installed; a part's count excludes the parts called inside it."""

    def __init__(self):
        self.ops = {}
        self._inner = []
        self._saved = []

    def wrap(self, owner, attribute, part):
        raw = inspect.getattr_static(owner, attribute)
        original = getattr(owner, attribute)
        ops, inner = self.ops, self._inner

        def counted(*args, **kwargs):
            inner.append(0)
            with B.counting_ops() as counts:
                try:
                    return original(*args, **kwargs)
                finally:
                    nested = inner.pop()
                    name = part(*args) if callable(part) else part
                    ops[name] = ops.get(name, 0) + counts.total - nested
                    if inner:
                        inner[-1] += counts.total
        self._saved.append((owner, attribute, raw))
        setattr(owner, attribute, staticmethod(counted) if isinstance(raw, staticmethod)
                else counted)

    def remove(self):
        for owner, attribute, raw in reversed(self._saved):
            setattr(owner, attribute, raw)
        self._saved = []


#: The parts of a gated step whose device operations :func:`step_ops` counts apart:
#: (module of minibern.bernoulli, owner, method, part name). ``after_backward`` counts what the
#: estimator and the θ step inside it do not: the decision rule, the trigger's count, recording.
OP_PARTS = (("gate", "BernoulliGate", "forward", "masks: draws, uploads, ξ ⊙ a"),
            ("gate", "BernoulliGate", "backward", "gates: backward"),
            ("estimators", "RemovalEstimator", "estimate", "estimator"),
            ("removal_fused", "FusedRemovalEstimator", "estimate", "estimator"),
            ("theta_step", "ThetaStep", "step", "θ step and visit averages"),
            ("hook", "GateTrainer", "after_backward", "decision rule, trigger count, recording"),
            ("hook", "GateTrainer", "after_step", "pruning trigger: ready / remove"))


class _StepOps(Hook):
    """A last hook: the device operations counted at the end of every step, whole and by part."""

    def __init__(self, counts, parts: PartOps):
        self.counts, self.parts, self.marks = counts, parts, []

    def after_step(self, trainer) -> None:
        self.marks.append((self.counts.total, dict(self.parts.ops)))

    def per_step(self) -> dict:
        """Mean operations per step after the first: ``{part: ops, "step, total": ops}``."""
        (first, first_parts), (last, last_parts) = self.marks[0], self.marks[-1]
        steps = len(self.marks) - 1
        result = {key: (value - first_parts.get(key, 0)) / steps
                  for key, value in last_parts.items()}
        result["step, total"] = (last - first) / steps
        return result


def step_ops(make_trainer) -> tuple[dict, float]:
    """Device operations per step (strict backend; steps after the first, mean) of the gated
    ``make_trainer(True)`` by part (:data:`OP_PARTS`), and of the un-gated
    ``make_trainer(False)``: ``(gated parts, un-gated total)``."""
    import importlib
    result = []
    for gates in (True, False):
        counter = PartOps()
        with B.use_backend("strict"), B.counting_ops() as counts:
            trainer = make_trainer(gates)
            if gates:
                for module, owner, method, part in OP_PARTS:
                    owner = getattr(importlib.import_module(f"minibern.bernoulli.{module}"), owner)
                    counter.wrap(owner, method, part)
            probe = _StepOps(counts, counter)
            trainer.hooks.append(probe)
            try:
                trainer.train_epoch()
            finally:
                counter.remove()
        result.append(probe.per_step())
    gated, plain = result
    named = sum(value for key, value in gated.items() if key != "step, total")
    gated["layers, loss, optimiser (not above)"] = gated["step, total"] - named
    return gated, plain["step, total"]


def print_step_ops(make_trainer, title: str, make_fused=None) -> None:
    """One table: the device operations per step of each gated part and of the un-gated step;
    with ``make_fused`` (the same trainers with ``--fused-estimator``) a second column."""
    columns = [step_ops(make_trainer)]
    if make_fused is not None:
        columns.append(step_ops(make_fused))
    print(f"\n{title}; device operations per step (strict backend, `B.counting_ops`; mean of "
          "the steps after the first)\n")
    print("| part | ops per gated step |" + (" with --fused-estimator |" if make_fused else ""))
    print("|---|---|" + ("---|" if make_fused else ""))

    def row(label, values):
        print(f"| {label} | " + " | ".join(f"{value:.1f}" for value in values) + " |")
    gated = columns[0][0]
    order = sorted((k for k in gated if k != "step, total"),
                   key=lambda k: (k.startswith("layers"), k))
    for key in order:
        row(key, [parts[key] for parts, _ in columns])
    row("gated step, total", [parts["step, total"] for parts, _ in columns])
    row("un-gated step, total", [plain for _, plain in columns])
    row("gates' own (gated − un-gated)", [parts["step, total"] - plain for parts, plain in columns])


def model_ops(data, model: str, steps: int = 10) -> None:
    """:func:`print_step_ops` of the full-width gated step of ``model`` (every θ = 1 at the
    start, so the first steps' masks are the identity until θ moves)."""
    def fused(gates):
        return model_trainer(data, model, gates, 100 * steps, fused_estimator=True)
    print_step_ops(lambda gates: model_trainer(data, model, gates, 100 * steps),
                   f"{model}, full width, {steps} steps from the start",
                   fused if model in FUSED_MODELS else None)


def run_ops(data, run: Path, epoch: int, steps: int = 10) -> None:
    """:func:`print_step_ops` of a LeNet-300-100 run's state after ``epoch`` against the
    un-gated step of the same arrays."""
    theta, gate_config = run_state(run, epoch)
    trainers = {True: gated_trainer, False: pruned_plain_trainer}
    fused_config = dataclasses.replace(gate_config, fused_estimator=True)
    print_step_ops(lambda gates: trainers[gates](data, theta, gate_config, steps),
                   f"{run} after epoch {epoch}",
                   lambda gates: trainers[gates](data, theta, fused_config, steps))


def print_fused_times(data, states, rounds: int, steps: int) -> None:
    """The gated LeNet-300-100 step with the reference removal estimator and with
    ``--fused-estimator``, alternated in every round, at each state of ``states``
    (``[(label, θ or None, GateConfig)]``); ms per step, medians and the paired ratio."""
    print(f"\nThe gated LeNet-300-100 step with the reference removal estimator and with "
          f"`--fused-estimator` (one pass for every gate layer); ms per step, median of {rounds} "
          f"rounds of {steps} steps, the two alternated in every round\n")
    print("| state | reference | --fused-estimator | fused / reference (paired, median, "
          "min–max) |")
    print("|---|---|---|---|")
    for label, theta, config in states:
        times = {False: [], True: []}
        fused_config = dataclasses.replace(config, fused_estimator=True)
        for r in range(rounds):
            for fused in ((False, True) if r % 2 == 0 else (True, False)):
                trainer = gated_trainer(data, theta, fused_config if fused else config, steps)
                times[fused].append(seconds_per_100(trainer, steps) * 10)
        ratios = [f / t for f, t in zip(times[True], times[False])]
        print(f"| {label} | {statistics.median(times[False]):.2f} | "
              f"{statistics.median(times[True]):.2f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) |", flush=True)


def fused_states(runs) -> list:
    """:func:`print_fused_times`'s states: the start, then each ``(run, epoch)``."""
    states = [("full width, every gate movable", None, gate_config_for("lenet300"))]
    for run, epoch in runs:
        theta, config = run_state(run, epoch)
        states.append((f"{run} after epoch {epoch}", theta, config))
    return states


def first_epoch(data, model: str, rounds: int) -> None:
    """A whole first epoch (55,000 images, evaluation excluded) gated against un-gated, the
    two alternated in each round: seconds and the paired ratio, medians and min–max."""
    def seconds(gates):
        trainer = model_trainer(data, model, gates)
        start = time.perf_counter()
        trainer.train_epoch()
        return time.perf_counter() - start

    gated, plain = [], []
    for r in range(rounds):
        for gates in ((True, False) if r % 2 == 0 else (False, True)):
            (gated if gates else plain).append(seconds(gates))
    ratios = [g / p for g, p in zip(gated, plain)]
    print(f"| {model} | {statistics.median(gated):.1f} ({min(gated):.1f}–{max(gated):.1f}) | "
          f"{statistics.median(plain):.1f} ({min(plain):.1f}–{max(plain):.1f}) | "
          f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |")


def print_first_epochs(data, models, rounds: int) -> None:
    print("\nA whole first epoch, gated (units leave the arrays as it goes) against un-gated, "
          f"Adam, seconds, medians of {rounds} alternated rounds with min–max\n")
    print("| network | gated epoch 1 s | un-gated epoch 1 s | gated / un-gated |")
    print("|---|---|---|---|")
    for model in models:
        first_epoch(data, model, rounds)


def print_transfers(data, gate_config, theta_full=None, steps: int = 4) -> None:
    """The strict backend's transfer counts of the gated steps after the first (full width
    unless ``theta_full`` describes a later state), one line."""
    with B.use_backend("strict"):
        trainer = gated_trainer(data, theta_full, gate_config, steps)
        probe = StepTransfers()
        trainer.hooks.append(probe)
        trainer.train_epoch()
    counts = probe.per_step()
    spread = {kind: f"{min(c[kind] for c in counts)}–{max(c[kind] for c in counts)}"
              if len({c[kind] for c in counts}) > 1 else str(counts[0][kind]) for kind in counts[0]}
    print(f"transfers per gated step (strict backend, steps 2–{steps}): {spread['to_device']} to "
          f"the device, {spread['to_host']} to the host, {spread['scalars']} scalar pulls")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", help="a gated LeNet-300-100 run directory")
    target.add_argument("--compare", action="store_true",
                        help="compare the estimator table's settings at full width")
    target.add_argument("--breakdown", action="store_true",
                        help="split the full-width gated step of both LeNets into its parts")
    target.add_argument("--first-epoch", action="store_true",
                        help="a whole first epoch of both LeNets, gated against un-gated")
    target.add_argument("--transfers", action="store_true",
                        help="only count the transfers of a gated step (default settings)")
    target.add_argument("--fused", action="store_true",
                        help="time the gated LeNet-300-100 step with and without "
                             "--fused-estimator (with --ops-run: at --epochs-at too)")
    target.add_argument("--ops", action="store_true",
                        help="count the device operations of a gated step by part, and of the "
                             "un-gated step, for both LeNets (with --run: at --epochs-at too)")
    parser.add_argument("--epochs-at", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20])
    parser.add_argument("--ops-run", default=None,
                        help="with --ops: also count a gated LeNet-300-100 run's states after "
                             "each --epochs-at")
    parser.add_argument("--run-breakdown", action="store_true",
                        help="with --run: split the gated step at the run's widths after each "
                             "--epochs-at into its parts, against the un-gated step of the same "
                             "arrays")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="training steps per timing")
    parser.add_argument("--data", default=None)
    parser.add_argument("--first-subset", type=int, default=None,
                        help="with --breakdown: gates visited per step in the first gate layer")
    parser.add_argument("--subset", type=int, default=None,
                        help="with --breakdown: gates visited per step in the other layers")
    args = parser.parse_args(argv)
    if args.fused:
        runs = [(Path(args.ops_run), epoch) for epoch in args.epochs_at] if args.ops_run else []
        print_fused_times(load_mnist(args.data), fused_states(runs), args.rounds, args.steps)
        return 0
    if args.compare or args.transfers or args.breakdown or args.first_epoch or args.ops:
        data = load_mnist(args.data)
        if args.ops:
            for model in ("lenet300", "lenet5"):
                model_ops(data, model)
            for epoch in (args.epochs_at if args.ops_run else []):
                run_ops(data, Path(args.ops_run), epoch)
        if args.first_epoch:
            print_first_epochs(data, ("lenet300", "lenet5"), args.rounds)
        if args.breakdown:
            for model in ("lenet300", "lenet5"):
                visits = {name: getattr(args, name) for name in ("first_subset", "subset")
                          if getattr(args, name) is not None}
                breakdown(data, model, args.rounds, args.steps, **visits)
        if args.compare:
            compare_settings(data, args.rounds, args.steps)
        print_transfers(data, GateConfig())
        return 0
    run = Path(args.run)
    data = load_mnist(args.data)
    if args.run_breakdown:
        for epoch in args.epochs_at:
            run_breakdown(data, run, epoch, args.rounds, args.steps)
        return 0
    gate_config = run_state(run, 0)[1]
    print(f"run {run}: estimator {gate_config.estimator}, subset {gate_config.subset}; "
          f"{args.rounds} rounds of {args.steps} steps, batch 100, gated and un-gated alternated")
    print("| after epoch | architecture in the arrays | gated s/100 steps | un-gated s/100 steps "
          "| ratio (paired, median, min–max) |")
    print("|---|---|---|---|---|")
    for epoch in args.epochs_at:
        theta = run_state(run, epoch)[0]
        gated, plain, ratios = [], [], []
        for _ in range(args.rounds):
            trainer = gated_trainer(data, theta, gate_config, args.steps)
            gated.append(seconds_per_100(trainer, args.steps))
            plain.append(seconds_per_100(plain_trainer(data, args.steps), args.steps))
            ratios.append(gated[-1] / plain[-1])
        widths = [trainer.net[name].n_units for name in ("gate_in", "gate1", "gate2")]
        print(f"| {epoch} | {'-'.join(map(str, widths))} | {statistics.median(gated):.3f} "
              f"({min(gated):.3f}–{max(gated):.3f}) | {statistics.median(plain):.3f} "
              f"({min(plain):.3f}–{max(plain):.3f}) | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) |", flush=True)
    print_transfers(data, gate_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
