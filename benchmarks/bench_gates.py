"""What a gated training step costs against an un-gated one, along a real run.

For a finished gated LeNet-300-100 run (its ``history.npz`` holds θ of every gate at every
epoch end), rebuild the network as it stood after epoch e — θ from the snapshot, gates already
at exactly 0 or 1 frozen, units at 0 physically removed — and time training steps with the
default θ estimator against steps of the *full-width* network without gates, alternating the two
in one process. Prints seconds per 100 steps (median and min–max of the rounds) and the paired
ratio gated / un-gated per epoch e (e = 0: the start, every θ = 1, nothing frozen)::

    python benchmarks/bench_gates.py --run runs/tutorial6 --epochs-at 0 1 2 5 10 20

With ``--compare`` instead of ``--run`` it times the full-width start (every θ = 1, nothing
frozen) of every gated setting of ``benchmarks/estimator_table.py`` (the same CLI flags), all
settings and the un-gated step alternated within each round — the cost column of the estimator
table::

    python benchmarks/bench_gates.py --compare --rounds 9

Both modes end with the host↔device transfers of a gated step after the first, as the strict
backend counts them (copies to the device / to the host / scalar pulls, which a GPU waits for;
``minibern.backend.counting_transfers``) — a small constant that does not depend on the widths
or the gates visited. ``--transfers`` prints only those::

    python benchmarks/bench_gates.py --transfers

The run is only read. MNIST is needed (``$MINIBERN_DATA`` or ``--data``). Threads: whatever
NumPy's BLAS uses (set ``OPENBLAS_NUM_THREADS`` to pin it).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from estimator_table import ROWS
from minibern import backend as B
from minibern.bernoulli.hook import GateConfig, GateTrainer
from minibern.cli.train import build_parser, gate_config_from_args
from minibern.data import load_mnist
from minibern.models import lenet300_100
from minibern.training.trainer import TrainConfig, Trainer, device_splits, run_rngs
from minibern.training.transfers import StepTransfers


def gated_trainer(data, theta_full, gate_config, steps):
    """A Trainer over ``steps`` batches for the gated net in the state ``theta_full`` describes
    (None: the start)."""
    config = TrainConfig(model="lenet300", epochs=1, train_subset=100 * steps)
    net = lenet300_100(seed=run_rngs(0)[0], gates=True)
    splits = device_splits(data, net.input_shape, config.train_subset)
    hook = GateTrainer(net, gate_config, 55_000)
    trainer = Trainer(net, splits, config, hooks=[hook], log=lambda *_: None)
    hook.before_fit(trainer)
    if theta_full is not None:
        start = 0
        for _, name, gate in list(hook.gates):
            theta = theta_full[start:start + gate.n_units]
            start += gate.n_units
            gate.theta[:] = theta
            hook.frozen[name][:] = (theta == 0.0) | (theta == 1.0)
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
    target.add_argument("--transfers", action="store_true",
                        help="only count the transfers of a gated step (default settings)")
    parser.add_argument("--epochs-at", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="training steps per timing")
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    if args.compare or args.transfers:
        data = load_mnist(args.data)
        if args.compare:
            compare_settings(data, args.rounds, args.steps)
        print_transfers(data, GateConfig())
        return 0
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    with np.load(run / "history.npz") as history:
        snapshots = history["theta_snapshots"]
    fields = {k: v for k, v in metrics["gate_config"].items() if k in GateConfig.__dataclass_fields__}
    gate_config = GateConfig(**fields)
    data = load_mnist(args.data)
    print(f"run {run}: estimator {gate_config.estimator}, subset {gate_config.subset}; "
          f"{args.rounds} rounds of {args.steps} steps, batch 100, gated and un-gated alternated")
    print("| after epoch | architecture in the arrays | gated s/100 steps | un-gated s/100 steps "
          "| ratio (paired, median, min–max) |")
    print("|---|---|---|---|---|")
    for epoch in args.epochs_at:
        theta = None if epoch == 0 else snapshots[min(epoch, len(snapshots)) - 1]
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
