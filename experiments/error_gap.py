"""Where the gated test error comes from: the kept architecture, or training while gating.

A gated LeNet-300-100 run ends with a higher test error than the un-gated network (grid
`lenet300` of docs/RESULTS.md). Two causes are possible: the architecture the gates kept cannot
do better with this recipe (fewer input pixels, narrower hidden layers), or the training that
chose it (masks sampled while θ is inside, units removed along the way) leaves its weights worse
than the same architecture trained alone would be. This script separates them for a finished
gated run, on the run's own data split, drawing fresh weights from the run's own weight stream
(the first of :func:`minibern.training.trainer.run_rngs`, as ``python -m minibern train``
draws a network):

- ``retrained``: the kept architecture (the same input pixels, h1 and h2 widths) trained
  un-gated from a fresh He initialisation with the run's recipe (optimiser, learning rate and
  its decay, batch, epochs);
- ``kept_inputs``: the kept input pixels with the full hidden widths (300·m, 100·m), same
  recipe: what the input gates alone cost;
- ``kept_hidden``: all 784 inputs with the kept hidden widths, same recipe: what the hidden
  gates alone cost;
- ``continued``: the run's own exported weights (``model.npz``, every gate at 1[θ ≥ ½]) trained
  on, un-gated, for a few more epochs at the run's last learning rate (a fresh Adam state: the
  export holds none), and the test error of an exponential moving average of those weights over
  the continued steps, like the average the L0 authors' LeNet-300-100 code evaluates. It shows
  what extra training of the found weights gains; it has no un-gated control, so a gain within
  the noise of one test error says nothing about how gating trained them.

A run trained on a subset of the training split (``--train-subset``) is compared on the same
subset.

Each network is scored on the test split after its last epoch (final epoch, as everywhere in
docs/RESULTS.md); the continued one also before it trains, where it is the run's exported
network and must score the run's own ``export_test_error``. Usage::

    python experiments/error_gap.py RUN_DIR [...] [--continue-epochs 5]

writes ``error_gap.json`` into each run directory; ``python experiments/sweep.py results``
tabulates the files it finds (section "error gap"). Only gated LeNet-300-100 runs with their
``model.npz`` are supported (the kept runs under ``experiments/runs`` lack it: retrain the run
with ``sweep.py run GRID --only NAME --root elsewhere`` and point the script there).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from minibern import backend as B
from minibern import layers as L
from minibern.data import load_mnist
from minibern.training.trainer import Hook, TrainConfig, Trainer, device_splits, run_rngs

from gated_run import GatedRunError, exported_network, gated_lenet300_metrics

#: The configurations of a report, in the order of the table's columns.
CONFIGURATIONS = ("retrained", "kept_inputs", "kept_hidden", "continued")
DEFAULT_CONTINUE_EPOCHS = 5
#: Per-step decay d of the continued weights' moving average; it forgets over about
#: 1/(1 − d) = 500 steps (an epoch of the whole training split at batch 100 is 550).
AVERAGE_DECAY = 0.998


class ErrorGapError(ValueError):
    """The run directory cannot be analysed; the message says why and what to do."""


def kept_structure(net) -> tuple[np.ndarray, list[int]]:
    """``(kept input pixels (K,), [h1, h2])`` of an exported gated LeNet-300-100 network."""
    index, widths = None, []
    for name, layer in net:
        if isinstance(layer, L.SelectFeatures):
            index = np.asarray(B.to_numpy(layer.index))
        elif isinstance(layer, L.Dense):
            widths.append(int(layer.params["W"].shape[1]))
        elif not isinstance(layer, L.ReLU):
            raise ErrorGapError(f"{name}: a {type(layer).__name__} layer; only dense networks "
                                "(LeNet-300-100) are supported")
    if len(widths) != 3:
        raise ErrorGapError(f"{len(widths)} dense layers; LeNet-300-100 has 3")
    return (np.arange(784) if index is None else index), widths[:2]


def dense_net(pixels, widths: list[int], seed: int, init: str, init_scale: float):
    """select → Dense → ReLU → Dense → ReLU → Dense(10), input (N, 784), a fresh network.

    ``pixels`` int (K,): the input features kept, in order (no selection when K = 784);
    ``widths`` [h1, h2]. The weights are drawn as ``python -m minibern train --seed seed``
    draws a LeNet-300-100 (:func:`minibern.models.lenet300_100` on the first stream of
    :func:`~minibern.training.trainer.run_rngs`; each Dense draws W then b, in order)."""
    rng = B.make_rng(run_rngs(seed)[0])
    kw = dict(rng=rng, init=init, init_scale=init_scale)
    h1, h2 = widths
    layers = [] if len(pixels) == 784 else [("select", L.SelectFeatures(pixels, 784))]
    net = L.Sequential(*layers, ("fc1", L.Dense(len(pixels), h1, **kw)), ("relu1", L.ReLU()),
                       ("fc2", L.Dense(h1, h2, **kw)), ("relu2", L.ReLU()),
                       ("fc3", L.Dense(h2, 10, **kw)))
    net.input_shape = (784,)
    return net


def last_learning_rate(config: TrainConfig) -> float:
    """η of the run's last epoch E − 1 by :meth:`Trainer.learning_rate`'s schedule,
    η_{E−1} = η / (1 + (E − 1)/τ) (η itself without a decay τ)."""
    decay = config.lr_decay
    return config.lr if decay is None else config.lr / (1.0 + (config.epochs - 1) / decay)


class WeightAverage(Hook):
    """An exponential moving average of the weights over the steps,
    w̄ ← d·w̄ + (1 − d)·w, started at the first step's weights (like, not the same as, the
    bias-corrected average of the L0 authors' LeNet-300-100 code)."""

    def __init__(self, decay: float):
        self.decay, self.average = decay, None

    def after_step(self, trainer) -> None:
        weights = trainer.net.named_parameters()
        if self.average is None:
            self.average = {name: value.copy() for name, value in weights.items()}
            return
        for name, value in weights.items():
            self.average[name] = self.decay * self.average[name] + (1.0 - self.decay) * value


def train_and_test(net, splits, config: TrainConfig, label: str,
                   average_decay: float | None = None) -> dict:
    """Train ``net`` un-gated with ``config``; its test error before training, its
    final-epoch test and validation errors, and with ``average_decay`` the test error of
    :class:`WeightAverage`'s weights, which ``net`` then holds. Progress goes to stderr, each
    line prefixed with ``label``."""
    net.train()
    hooks = [WeightAverage(average_decay)] if average_decay is not None else []
    trainer = Trainer(net, splits, config, hooks=hooks,
                      log=lambda line: print(f"{label}: {line}", file=sys.stderr))
    start_test_error = trainer.error_rate(splits["test"])
    metrics = trainer.fit()
    result = {"test_error": metrics["test_error"], "val_error": metrics["val_error"],
              "params": metrics["params"], "epochs": config.epochs, "lr": config.lr,
              "lr_decay": config.lr_decay, "train_examples": splits["train"].size,
              "start_test_error": start_test_error}
    if hooks:
        weights = net.named_parameters()
        for name, value in hooks[0].average.items():
            weights[name][...] = value
        result.update(average_decay=average_decay,
                      average_test_error=trainer.error_rate(splits["test"]))
    return result


def run_report(directory: Path, data_dir=None,
               continue_epochs: int = DEFAULT_CONTINUE_EPOCHS) -> dict:
    """The four trainings of the module docstring for one finished gated run."""
    try:
        metrics = gated_lenet300_metrics(directory)
        exported = exported_network(directory)
    except GatedRunError as error:
        raise ErrorGapError(str(error)) from error
    config = metrics["config"]
    pixels, widths = kept_structure(exported)
    full = [int(round(300 * config["width_mult"])), int(round(100 * config["width_mult"]))]
    recipe = {key: config[key] for key in ("epochs", "batch_size", "seed", "optimizer", "lr",
                                           "lr_decay", "momentum", "weight_decay", "train_subset")}
    splits = device_splits(load_mnist(data_dir, flatten=True), (784,), config.get("train_subset"))
    architectures = {"retrained": (pixels, widths), "kept_inputs": (pixels, full),
                     "kept_hidden": (np.arange(784), widths)}
    report = {"run": str(directory), "kept": [len(pixels), *widths],
              "gated_test_error": metrics["test_error"], "gated_val_error": metrics["val_error"]}
    for name, (kept_pixels, kept_widths) in architectures.items():
        net = dense_net(kept_pixels, kept_widths, config["seed"], config["init"],
                        config["init_scale"])
        report[name] = train_and_test(net, splits, TrainConfig(model="lenet300", **recipe),
                                      f"{directory} {name}")
    last_lr = last_learning_rate(TrainConfig(**recipe))
    continued = TrainConfig(model="lenet300", **{**recipe, "epochs": continue_epochs,
                                                 "lr": last_lr, "lr_decay": None})
    report["continued"] = train_and_test(exported, splits, continued, f"{directory} continued",
                                         average_decay=AVERAGE_DECAY)
    return report


def plain_error(root: Path, run: str) -> float | None:
    """Final test error of the un-gated run beside gated run ``run`` (``<grid>/gated_seedK`` →
    ``<grid>/plain_seedK``), if the grid has one."""
    grid, name = run.rsplit("/", 2)[-2:]
    seed = name.rsplit("_seed", 1)[-1]
    path = root / grid / f"plain_seed{seed}" / "metrics.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["test_error"]


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _mean(values: list) -> float | None:
    """The mean, or None when any value is missing (a mean over fewer runs would mislead)."""
    if any(value is None for value in values):
        return None
    return sum(values) / len(values)


def markdown(root: Path) -> str:
    """The results page's section: one row per ``error_gap.json`` under ``root``, and after
    the runs of a configuration (``<grid>/<configuration>_seed<k>``), their means (a column
    some of them lack has none)."""
    paths = sorted(root.glob("*/*/error_gap.json"))
    if not paths:
        return ""
    reports = {path: json.loads(path.read_text(encoding="utf-8")) for path in paths}
    decays = sorted({str(report["continued"].get("average_decay", "—"))
                     for report in reports.values()})
    lines = ["## error gap: the gated test error, by architecture and by training "
             "(`experiments/error_gap.py`)\n",
             "Final-epoch test error in %. *gated*: the run as trained. The kept architecture's "
             "parts trained un-gated from a fresh initialisation (drawn from the run's seed as "
             "the CLI draws a network) with the run's own recipe and epochs: *retrained* (its input pixels and hidden widths), *kept inputs* (its "
             "input pixels, full hidden widths), *kept hidden* (all 784 inputs, its hidden "
             "widths). *continued*: the run's exported weights trained on un-gated for the "
             "epochs shown at the run's last learning rate, and (*average*) an exponential "
             f"moving average of them over those steps (decay per step: {', '.join(decays)}). "
             "*plain*: the grid's un-gated run of the same seed.\n"]
    head = ["run", "kept", "gated", "retrained", "kept inputs", "kept hidden", "continued",
            "plain"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[str, list] = {}
    for path in paths:
        run = path.parent.relative_to(root).as_posix()
        groups.setdefault(run.rsplit("_seed", 1)[0], []).append((run, reports[path]))
    for configuration, runs in groups.items():
        values = []
        for run, report in runs:
            continued = report["continued"]
            values.append([report["gated_test_error"],
                           *(report[name]["test_error"] for name in CONFIGURATIONS[:-1]),
                           continued["test_error"], continued.get("average_test_error"),
                           plain_error(root, run)])
            row = [run, "-".join(str(k) for k in report["kept"])]
            lines.append("| " + " | ".join(row + _cells(values[-1], continued["epochs"])) + " |")
        if len(runs) > 1:
            means = [_mean(list(column)) for column in zip(*values)]
            lines.append(f"| mean of {configuration} | | "
                         + " | ".join(_cells(means, runs[0][1]["continued"]["epochs"])) + " |")
    return "\n".join(lines) + "\n"


def _cells(values: list, continued_epochs: int) -> list[str]:
    """gated, retrained, kept inputs, kept hidden, continued (with its average), plain."""
    gated, retrained, kept_inputs, kept_hidden, continued, average, plain = values
    continued_cell = (f"{_percent(continued)} ("
                      + ("" if average is None else f"average {_percent(average)}; ")
                      + f"{continued_epochs} epochs)")
    return [_percent(value) for value in (gated, retrained, kept_inputs, kept_hidden)] + [
        continued_cell, _percent(plain)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished gated LeNet-300-100 runs")
    parser.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    parser.add_argument("--continue-epochs", type=int, default=DEFAULT_CONTINUE_EPOCHS,
                        help="epochs the exported weights train on (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.continue_epochs < 1:
        parser.error(f"--continue-epochs must be at least 1, got {args.continue_epochs}")
    for directory in args.runs:
        try:
            report = run_report(directory, args.data, args.continue_epochs)
        except (ErrorGapError, OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        (directory / "error_gap.json").write_text(json.dumps(report, indent=1) + "\n",
                                                  encoding="utf-8")
        print(f"{report['run']}: kept {report['kept']}, "
              f"gated {100 * report['gated_test_error']:.2f} %; "
              + ", ".join(f"{name} {100 * report[name]['test_error']:.2f} %"
                          for name in CONFIGURATIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
