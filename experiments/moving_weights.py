"""Is a unit that is cheap at the final weights still cheap while the weights keep training?

docs/FINDINGS.md §3, "What the estimator saw during training": at a wide start's final weights, dozens of the
last hidden layer's kept units cost less than κ alone (``vertex_cost.py``), yet the estimator
(E10) averaged over the last epoch prices every one of them above κ. This script separates the
two by continuing a finished run from its checkpoint for ``--steps`` weight steps (the run's
optimiser and state, at its last learning rate times ``--lr-mult``; θ held where the run left
it, so the masks of the gates still inside are drawn from the final θ). At every step the
removal estimator (E4)–(E8) estimates Δ̂ᵢ + κ (N·ĝᵢ of (E10): Δ̂ᵢ is the change of the summed
training loss when unit i is on rather than off, negative for a useful unit; above 0 the unit
is cheap, worth less than its price κ) of every kept gate of the last gate layer on the same
batch and with the same drawn masks at three sets of weights:

- *moving*: the weights as they train (before this step's update, as the trainer does);
- *final*: the run's final weights, held fixed;
- *average*: an exponential moving average of the moving weights (decay ``--ema-decay``),
  the candidate "weights at rest".

The units that are cheap at the final weights (mean of the *final* estimates > 0) are chosen
on the even steps and reported on the odd ones, so that choosing them on their own noise does
not bias the report. A unit that stays cheap while the weights move would be pushed to 0 by
the θ step; one that is cheap only at one point of the trajectory would not. Where the steps
end, the choice is made again with the weights held there (fresh batches): if being cheap were
a property of the unit, the two choices would pick the same units.

The estimator visits the other gate layers too (a subset per step, as in training), so the
script also audits every layer both ways, (C11)–(C12) with the whole-split sum replaced by the
steps' mean: among the gates on a vertex that the steps visit at least 10 times, how many have
a mean Δ̂ + κ of the wrong sign at the final weights, and how many along the moving ones.

Usage::

    python experiments/moving_weights.py experiments/runs/gradients/default_width2_seed0 \\
        [--steps 1000] [--lr-mult 0 0.1 1] [--ema-decay 0.99]

writes ``moving_weights.json`` into the run directory; ``python experiments/sweep.py results``
tabulates every such file in docs/RESULTS.md. Needs ``checkpoint.npz`` and ``metrics.json`` of
a gated LeNet-300-100 run priced per unit (the default κ); gates the run froze in the last layer
(certified, ``--decide-at-one``) are left out, since the estimator no longer visits them.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.estimators import make_estimator
from minibern.bernoulli.run import build_run
from minibern.bernoulli.topology import gate_layers
from minibern.data import load_mnist
from minibern.losses import softmax_cross_entropy
from minibern.training.trainer import TrainConfig

WEIGHTS = ("moving", "final", "average")


class MovingWeightsError(ValueError):
    """The run directory cannot be analysed; the message says why and what to do."""


def _fields(cls, saved: dict) -> dict:
    """The entries of a saved dataclass (``metrics.json``) that ``cls`` still has."""
    return {key: value for key, value in saved.items() if key in cls.__dataclass_fields__}


def read_run(directory: Path) -> tuple[TrainConfig, GateConfig]:
    """The run's settings, after checking that this script can analyse it (before any data
    is loaded)."""
    try:
        metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MovingWeightsError(f"{directory}: no readable metrics.json ({error}); is it a "
                                 "finished run directory?") from error
    if (not isinstance(metrics, dict) or not isinstance(metrics.get("config"), dict)
            or metrics["config"].get("model") != "lenet300"
            or not isinstance(metrics.get("gate_config"), dict)):
        raise MovingWeightsError(f"{directory}: not a gated LeNet-300-100 run")
    gate_config = metrics["gate_config"]
    if gate_config.get("kappa_per_param") or gate_config.get("kappa_expected_params"):
        raise MovingWeightsError(f"{directory}: its units are not priced per unit; only runs "
                                 "with the default κ per unit are supported")
    if not (directory / "checkpoint.npz").exists():
        raise MovingWeightsError(f"{directory}: no checkpoint.npz; rerun the run to get one")
    return (TrainConfig(**_fields(TrainConfig, metrics["config"])),
            GateConfig(**_fields(GateConfig, gate_config)))


def restore_run(directory: Path, data):
    """``(trainer, hook)`` of a finished gated run, loaded from its checkpoint; the hook's
    estimator is the removal estimator with the run's visits, whichever the run used."""
    config, gate_config = read_run(directory)
    trainer = build_run(config, data, gate_config, log=lambda message: None,
                        progress_stream=io.StringIO())
    hook = trainer.hooks[-1]
    hook.estimator = make_estimator("removal", gate_config.subset, gate_config.first_subset)
    try:
        trainer.load_checkpoint(directory / "checkpoint.npz")
    except ValueError as error:  # a damaged checkpoint, or one of another network
        raise MovingWeightsError(f"{directory}: checkpoint.npz cannot be loaded ({error}); "
                                 "retrain the run to analyse it") from error
    return trainer, hook


def continue_and_estimate(trainer, hook, steps: int, lr_mult: float, ema_decay: float,
                          seed: int = 0, weights_estimated=WEIGHTS) -> dict:
    """Continue ``steps`` weight steps; per step, Δ̂ + κ (= N·ĝ of (E10)) of the last gate
    layer's n gates at the moving, final and averaged weights (same batch, same masks), or only
    at those named in ``weights_estimated``. With ``lr_mult`` 0 no weight step is taken: the
    three sets of weights stay equal.
    Returns ``{"estimates": {weights: (steps, n) array}, "theta": (n,), "movable": (n,) bool
    (not frozen), "drift": ‖w − w_final‖/‖w_final‖, "layer": name, "layers": {gate layer:
    {"theta", "movable", "visits": (n_l,) counts, "sums": {weights: (n_l,) summed Δ̂ + κ}}}}``
    (the other layers are visited on a subset per step, as in training). The network and the
    optimiser are left where the steps took them."""
    net = trainer.net
    gates = {name: gate for _, name, gate in gate_layers(net)}
    last = list(gates)[-1]
    candidates = {name: ~hook.states[name].frozen for name in gates}
    params = net.named_parameters()
    final = {key: value.copy() for key, value in params.items()}
    average = {key: value.copy() for key, value in params.items()}
    train = trainer.splits["train"]
    n_data, batch = train.size, trainer.config.batch_size
    kappa = {name: np.asarray(hook.kappa[name], dtype=float) for name in gates}  # κ_i (B14)
    trainer.optimizer.lr = trainer.learning_rate(max(trainer.epoch - 1, 0)) * lr_mult
    order = np.random.default_rng(seed).permutation(n_data)
    estimates = {weights: np.zeros((steps, gates[last].n_units))
                 for weights in weights_estimated}
    layers = {name: {"theta": np.asarray(gate.theta, dtype=float),
                     "movable": np.asarray(candidates[name], dtype=bool),
                     "visits": np.zeros(gate.n_units, dtype=int),
                     "sums": {weights: np.zeros(gate.n_units) for weights in weights_estimated}}
              for name, gate in gates.items()}

    def scaled_gradient(images, labels, mask_seed, weights):
        """N·ĝ = Δ̂ + κ of the last layer's gates on this batch, (n,); every layer's visited
        gates are added to ``layers``."""
        rng = np.random.default_rng(mask_seed)  # the same masks and visits at every weights
        for gate in gates.values():
            gate.rng = rng
        net.forward(images)
        found = hook.estimator.estimate(net, images, labels, rng=rng, candidates=candidates)
        for name, (delta, visited) in found.items():  # the estimator gives Δ̂/N per gate
            layer = layers[name]
            scaled = np.asarray(delta) * n_data + kappa[name]
            layer["sums"][weights][visited] += scaled[visited]
            if weights == weights_estimated[0]:  # the same visits at every set of weights
                layer["visits"] += visited
        return np.asarray(found[last][0]) * n_data + kappa[last]

    def load(weights):
        for key in params:
            params[key][...] = weights[key]

    for step in range(steps):
        start = (step * batch) % (n_data - batch + 1)
        index = order[start:start + batch]
        images, labels = train.images[index], train.labels[index]
        moving = {key: value.copy() for key, value in params.items()}
        for weights in weights_estimated:
            load({"moving": moving, "final": final, "average": average}[weights])
            estimates[weights][step] = scaled_gradient(images, labels, (seed, step), weights)
        load(moving)
        if not lr_mult:  # the weights would not move: no step to take
            continue
        for gate in gates.values():
            gate.rng = np.random.default_rng((seed, step, 1))
        _, dlogits = softmax_cross_entropy(net.forward(images), labels, check=False)
        net.backward(dlogits, input_grad=False)
        trainer.optimizer.step(net)
        for key in params:
            average[key] += (1 - ema_decay) * (params[key] - average[key])
    drift = np.sqrt(sum(float(((params[k] - final[k]) ** 2).sum()) for k in params)
                    / sum(float((final[k] ** 2).sum()) for k in params))
    return {"estimates": estimates, "theta": np.asarray(gates[last].theta, dtype=float),
            "movable": np.asarray(candidates[last], dtype=bool), "drift": drift, "layer": last,
            "layers": layers}


def trajectory_audit(result: dict, min_visits: int = 10) -> dict:
    """(C12) per gate layer, once at the final weights and once along the moving ones: among
    the movable gates on a vertex (θ ∈ {0, 1}) with at least ``min_visits`` visits, how many
    have a mean Δ̂ + κ of the wrong sign (> 0 at θ = 1, < 0 at θ = 0)."""
    audit = {}
    for name, layer in result["layers"].items():
        theta, visits = layer["theta"], layer["visits"]
        judged = layer["movable"] & ((theta == 0) | (theta == 1)) & (visits >= min_visits)
        counts = {"judged": int(judged.sum())}
        for weights in ("final", "moving"):
            mean = layer["sums"][weights] / np.maximum(visits, 1)
            wrong = ((theta == 1) & (mean > 0)) | ((theta == 0) & (mean < 0))
            counts[f"false_{weights}"] = int((judged & wrong).sum())
        audit[name] = counts
    return audit


def kept_movable(result: dict):
    """Kept (θ ≥ ½) gates that the estimator still visits (not frozen by a rule)."""
    return (result["theta"] >= 0.5) & result["movable"]


def cheap_units(result: dict):
    """Kept movable units whose mean estimate at the held weights is above 0 on the even
    steps."""
    return kept_movable(result) & (result["estimates"]["final"][0::2].mean(axis=0) > 0)


def summarise(result: dict, reached: dict | None = None) -> dict:
    """Choose the units cheap at the final weights on the even steps; report the odd ones.
    ``reached``: a second :func:`continue_and_estimate` without steps from where ``result``'s
    steps ended; how many units are cheap there, and how many of them were cheap at the final
    weights too."""
    kept = kept_movable(result)
    report = {w: e[1::2].mean(axis=0) for w, e in result["estimates"].items()}
    cheap = cheap_units(result)
    row = {"layer": result["layer"], "kept": int(kept.sum()), "cheap_at_final": int(cheap.sum()),
           "frozen_kept_left_out": int(((result["theta"] >= 0.5) & ~result["movable"]).sum()),
           "drift": result["drift"]}
    if "layers" in result:
        row["audit"] = trajectory_audit(result)
    if reached is not None:
        there = cheap_units(reached)
        row["cheap_at_reached"], row["cheap_at_both"] = int(there.sum()), int((there & cheap).sum())
    for weights in WEIGHTS:
        row[weights] = {
            "median_kept": float(np.median(report[weights][kept])) if kept.any() else None,
            "median_cheap": float(np.median(report[weights][cheap])) if cheap.any() else None,
            "cheap_above_0": int((report[weights][cheap] > 0).sum())}
    return row


def run_report(directory: Path, steps: int, lr_mults, ema_decay: float, data_dir=None) -> dict:
    """The contents of ``moving_weights.json``: one :func:`summarise` row per learning-rate
    multiplier, each continued from the run's checkpoint."""
    read_run(directory)  # refuse an unsuitable run before MNIST is loaded
    data = load_mnist(data_dir)
    rows = []
    for lr_mult in lr_mults:
        trainer, hook = restore_run(directory, data)  # every multiplier from the same start
        result = continue_and_estimate(trainer, hook, steps, lr_mult, ema_decay)
        lr = trainer.optimizer.lr
        reached = (continue_and_estimate(trainer, hook, steps, 0.0, ema_decay, seed=1,
                                         weights_estimated=("final",))
                   if lr_mult > 0 else None)  # cheap_units reads only the held weights
        row = summarise(result, reached)
        rows.append({"lr_mult": lr_mult, "lr": lr, **row})
    return {"run": f"{directory.parent.name}/{directory.name}", "steps": steps,
            "ema_decay": ema_decay, "rows": rows}


def _audit_cell(audit: dict | None) -> str:
    if not audit:
        return "—"
    return "; ".join(f"{name} {layer['false_final']} → {layer['false_moving']} / {layer['judged']}"
                     for name, layer in audit.items())


def markdown(root: Path) -> str:
    """The results page's section: one row per multiplier of every ``moving_weights.json``."""
    paths = sorted(root.glob("*/*/moving_weights.json"))
    if not paths:
        return ""
    lines = ["## moving weights: are the units cheap at the final weights cheap while training "
             "goes on? (`experiments/moving_weights.py`)\n",
             "From the run's checkpoint, the weights train on for the given steps (θ held) at "
             "the run's last learning rate times the multiplier. At every step the removal "
             "estimator gives Δ̂ + κ (N·ĝ of (E10)) for the last gate layer's kept gates "
             "(those a rule froze left out) at the moving weights, at the final weights held "
             "fixed and at an average of the moving weights, "
             "on the same batch with the same masks. Cheap: kept units whose mean at the final "
             "weights is above 0 (chosen on the even steps); the columns give, over the odd "
             "steps, their median at each set of weights and how many are above 0, then the "
             "median over all kept units. Drift: ‖w − w_final‖/‖w_final‖ after the steps. "
             "Cheap at the reached weights: the same choice, made again (fresh batches, "
             "weights held) where the steps ended, and how many of those were cheap at the "
             "final weights too. Audit: (C12) per gate layer on the vertex gates the steps "
             "visited at least 10 times (all of the last layer, a subset per step of the "
             "others), false decisions by the mean Δ̂ + κ at the final weights → along the "
             "moving ones, out of the gates judged.\n"]
    head = ["run", "steps", "lr (× the last)", "drift", "kept", "cheap at final",
            "cheap: final (> 0)", "cheap: moving (> 0)", "cheap: average (> 0)",
            "all kept: final / moving / average", "cheap at the reached weights (also at final)",
            "audit: false at final → moving / judged"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        report = json.loads(path.read_text(encoding="utf-8"))
        for row in report["rows"]:
            def cheap(weights):
                value = row[weights]["median_cheap"]
                return "—" if value is None else f"{value:.1f} ({row[weights]['cheap_above_0']})"
            lines.append("| " + " | ".join([
                report["run"], str(report["steps"]), f"{row['lr']:.2g} (× {row['lr_mult']:g})",
                f"{row['drift']:.4f}",
                str(row["kept"]), str(row["cheap_at_final"]), cheap("final"), cheap("moving"),
                f"{cheap('average')}, decay {report['ema_decay']}",
                " / ".join(f"{row[w]['median_kept']:.1f}" for w in ("final", "moving",
                                                                      "average")),
                f"{row['cheap_at_reached']} ({row['cheap_at_both']})" if "cheap_at_reached" in row
                else "—", _audit_cell(row.get("audit"))]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished gated LeNet-300-100 runs")
    parser.add_argument("--steps", type=int, default=1000, help="weight steps (default 1000)")
    parser.add_argument("--lr-mult", type=float, nargs="+", default=[0.0, 0.1, 1.0],
                        help="multipliers of the run's last learning rate (default 0 0.1 1)")
    parser.add_argument("--ema-decay", type=float, default=0.99,
                        help="decay of the weights' moving average (default 0.99)")
    parser.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (even steps choose, odd ones report), got "
                     f"{args.steps}")
    if not 0 <= args.ema_decay < 1:
        parser.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if any(not np.isfinite(m) or m < 0 for m in args.lr_mult):
        parser.error(f"--lr-mult must be finite and >= 0, got {args.lr_mult}")
    for directory in args.runs:
        try:
            report = run_report(directory, args.steps, args.lr_mult, args.ema_decay, args.data)
            (directory / "moving_weights.json").write_text(json.dumps(report, indent=1) + "\n",
                                                           encoding="utf-8")
        except (MovingWeightsError, OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        for row in report["rows"]:
            print(f"{report['run']} lr×{row['lr_mult']}: {row['cheap_at_final']} of {row['kept']} "
                  f"cheap at the final weights; their median " + ", ".join(
                      f"{w} {row[w]['median_cheap']}" for w in WEIGHTS)
                  + f"; drift {row['drift']:.4f}"
                  + (f"; {row['cheap_at_reached']} cheap where the steps ended, "
                     f"{row['cheap_at_both']} of them also at the final weights"
                     if "cheap_at_reached" in row else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
