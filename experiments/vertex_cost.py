"""What a run's final vertex costs, and what its neighbours cost: (C13) measured.

docs/FINDINGS.md §3 asks whether the width's dependence on the start comes from the many vertices
that satisfy (C13) of docs/derivations/convergence.md. This script measures, at the end of a LeNet-300-100 run, the
objective (B13) at the vertex it reached and at nearby smaller vertices, with the weights as
trained (no retraining), on the whole training split (N = 55,000):

- the summed training loss L of the exported network (``model.npz``: every gate at
  1[θ ≥ ½], the removed units gone; gates still inside the box are rounded, and the table
  says how many of the last hidden layer's kept gates are exactly at 1) and the price
  κ·(kept units), whose sum is N times the objective at the vertex;
- per gate layer, each kept unit's *alone cost*: the rise of L when that unit alone is
  removed (its outgoing weights zeroed) — (C13) keeps it iff the alone cost exceeds κ;
- for one layer, the *group cost*: the rise of L when its k cheapest units (by alone cost) are
  removed together, against the price κ·k they would save;
- for the same layer, the *noise* of a minibatch's estimate of the alone cost (batches of the
  run's size drawn as the trainer draws them, scaled to N, at these weights and with every
  gate at its vertex, so without the noise of the masks of gates still inside): for the units
  that cost less than κ,
  the median gap κ − cost, the median standard deviation of the estimate, and how many visits
  an average needs before the gap is two standard errors, against the visits each gate gets
  per epoch (the last gate layer is visited in full at every step,
  docs/derivations/estimators.md).

Usage::

    python experiments/vertex_cost.py experiments/runs/robustness/width2_scale1_seed0 [...]

writes ``vertex_cost.json`` into each run directory; ``python experiments/sweep.py results``
tabulates every such file in docs/RESULTS.md. Only runs priced per unit (the default κ) of
LeNet-300-100 (three dense layers, gates on inputs, h1 and h2) are supported.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from minibern.data import load_mnist
from minibern.layers import Dense, ReLU, SelectFeatures

from gated_run import GatedRunError, exported_network, gated_lenet300_metrics

GROUP_COUNTS = (5, 10, 20, 40, 80)
PERCENTILES = (10, 50, 90)
NOISE_BATCH = 100  # the trainer's default batch
CHUNK = 11_000


class VertexCostError(ValueError):
    """The run directory cannot be analysed; the message says why and what to do."""


def dense_chain(net):
    """``(select index or None, [(W, b), ...])`` of a select → dense → relu → … → dense net."""
    index, dense = None, []
    for name, layer in net:
        if isinstance(layer, SelectFeatures):
            if dense:
                raise VertexCostError(f"{name}: a feature selection after the first dense layer")
            index = np.asarray(layer.index)
        elif isinstance(layer, Dense):
            dense.append((np.asarray(layer.params["W"]), np.asarray(layer.params["b"])))
        elif not isinstance(layer, ReLU):
            raise VertexCostError(f"{name}: a {type(layer).__name__} layer; only dense networks "
                                  "(LeNet-300-100) are supported")
    return index, dense


def cross_entropies(logits, labels) -> np.ndarray:
    """−log softmax(logits_n)[label_n] per example, (N,) float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(labels)), labels]


def summed_cross_entropy(logits, labels) -> float:
    """Σ_n −log softmax(logits_n)[label_n], in float64."""
    return float(cross_entropies(logits, labels).sum())


def _from_layer(pre, dense, layer: int):
    """Logits from the pre-activation of dense layer ``layer`` onwards (ReLU between layers)."""
    h = pre
    for weight, bias in dense[layer + 1:]:
        h = np.maximum(h, 0) @ weight + bias
    return h


class Vertex:
    """The exported network on the training images, with its dense layers' inputs cached.

    ``units(k)`` are the inputs of dense layer k: layer 0's are the kept pixels, layer k's the
    units of hidden layer k. Removing unit j of layer k zeroes row j of its W.
    """

    def __init__(self, net, images, labels):
        self.index, self.dense = dense_chain(net)
        x = images.reshape(len(images), -1).astype(self.dense[0][0].dtype)
        self.inputs = [x if self.index is None else x[:, self.index]]
        for weight, bias in self.dense[:-1]:
            self.inputs.append(np.maximum(self.inputs[-1] @ weight + bias, 0))
        self.labels = labels

    def units(self, layer: int) -> int:
        return self.dense[layer][0].shape[0]

    def loss(self, layer: int | None = None, removed=()) -> float:
        """Summed cross-entropy with the units ``removed`` of dense layer ``layer`` gone."""
        removed = np.asarray(removed, dtype=np.int64)
        total = 0.0
        for start in range(0, len(self.labels), CHUNK):
            stop = min(start + CHUNK, len(self.labels))
            k = 0 if layer is None else layer
            weight, bias = self.dense[k]
            if removed.size:
                weight = weight.copy()
                weight[removed] = 0
            pre = self.inputs[k][start:stop] @ weight + bias
            total += summed_cross_entropy(_from_layer(pre, self.dense, k), self.labels[start:stop])
        return total

    def per_example_rises(self, layer: int) -> np.ndarray:
        """ℓ_n(without unit j) − ℓ_n for every example n and unit j of ``layer``: (N, units)."""
        weight, bias = self.dense[layer]
        rises = np.empty((len(self.labels), self.units(layer)))
        for start in range(0, len(self.labels), CHUNK):
            stop = min(start + CHUNK, len(self.labels))
            a, labels = self.inputs[layer][start:stop], self.labels[start:stop]
            pre = a @ weight + bias
            base = cross_entropies(_from_layer(pre, self.dense, layer), labels)
            for j in range(self.units(layer)):
                without = pre - np.outer(a[:, j], weight[j])
                rises[start:stop, j] = (cross_entropies(_from_layer(without, self.dense, layer),
                                                        labels) - base)
        return rises

    def alone_costs(self, layer: int, rises=None) -> np.ndarray:
        """Rise of the summed loss when each unit of ``layer`` alone is removed, (units,): the
        column sums of :meth:`per_example_rises` (pass them if already computed)."""
        return (self.per_example_rises(layer) if rises is None else rises).sum(axis=0)

    def batch_alone_costs(self, layer: int, batch: int, seed: int = 0, rises=None) -> np.ndarray:
        """The alone costs as one minibatch of ``batch`` examples estimates them, scaled to the
        whole split: (batches, units), row b = (N/batch)·Σ_{n∈b}[ℓ_n(without j) − ℓ_n]. The
        batches are consecutive runs of a seeded permutation of the examples, as the trainer
        draws them; the last ``N mod batch`` examples of the permutation are left out."""
        rises = self.per_example_rises(layer) if rises is None else rises
        order = np.random.default_rng(seed).permutation(len(self.labels))
        used = len(order) // batch * batch
        sums = rises[order[:used]].reshape(-1, batch, rises.shape[1]).sum(axis=1)
        return sums * (len(self.labels) / batch)


def training_estimates(theta_last, estimates_last, alone, kappa: float) -> dict | None:
    """What the estimator saw in the last recorded period for the units that the vertex prices
    below κ: ``theta_last`` and ``estimates_last`` are the last rows of ``theta_snapshots`` and
    ``gradient_snapshots`` over the layer's original gates (N·(Δ̂ + κ), the period's mean);
    ``alone`` the alone costs of the kept units in the exported order (original order). None if
    the kept sets do not match."""
    kept = np.flatnonzero(np.asarray(theta_last) >= 0.5)
    if kept.size != len(alone):
        return None
    below = np.asarray(alone) < kappa
    seen = np.asarray(estimates_last)[kept][below]
    return {"units": int(below.sum()),
            "median": float(np.median(seen)) if below.any() else None,
            "positive": int((seen > 0).sum()),
            "vertex_median": float(np.median(kappa - np.asarray(alone)[below]))
            if below.any() else None}


def visits_per_epoch(n_train: int, batch_size: int, subset: int, units: int,
                     last: bool) -> float:
    """Removal-estimator visits per gate per epoch: the last gate layer is visited in full at
    every step, another layer's ``units`` gates share ``subset`` visits per step
    (docs/derivations/estimators.md, "Which gates each step")."""
    steps = n_train / batch_size
    return steps if last else steps * min(1.0, subset / units)


def analyse(net, images, labels, kappa: float, layer_names: list[str], group_layer: str,
            counts=GROUP_COUNTS, noise_batch: int = NOISE_BATCH) -> dict:
    """The numbers of ``vertex_cost.json`` for an exported dense ``net`` (see module doc)."""
    vertex = Vertex(net, images, labels)
    if len(layer_names) != len(vertex.dense):
        raise VertexCostError(f"{len(layer_names)} gate layers for {len(vertex.dense)} dense "
                              "layers; expected one gate in front of each dense layer")
    base = vertex.loss()
    kept = [vertex.units(k) for k in range(len(layer_names))]
    report = {"n": int(len(labels)), "kappa": kappa, "loss": base, "kept": kept,
              "price": kappa * sum(kept), "objective": base + kappa * sum(kept), "layers": {}}
    costs = {}
    for k, name in enumerate(layer_names):
        rises = vertex.per_example_rises(k)  # one pass per layer; the group layer's is reused
        costs[name] = vertex.alone_costs(k, rises)
        if name == group_layer:
            group_rises = rises
        report["layers"][name] = {
            "kept": kept[k],
            "alone_cost_percentiles": {str(q): float(np.percentile(costs[name], q))
                                       for q in PERCENTILES},
            "below_kappa": int((costs[name] < kappa).sum()),
        }
    k = layer_names.index(group_layer)
    order = np.argsort(costs[group_layer], kind="stable")
    group = {"layer": group_layer, "k": [], "loss_rise": [], "alone_sum": [], "price_saved": []}
    for count in counts:
        if count >= kept[k]:
            break
        group["k"].append(count)
        group["loss_rise"].append(vertex.loss(k, order[:count]) - base)
        group["alone_sum"].append(float(costs[group_layer][order[:count]].sum()))
        group["price_saved"].append(kappa * count)
    report["group"] = group
    report["alone_costs_last"] = costs[group_layer].tolist()
    if len(labels) // noise_batch < 2:
        report["noise"] = None
        return report
    estimates = vertex.batch_alone_costs(k, noise_batch, rises=group_rises)
    below = costs[group_layer] < kappa
    spread = estimates.std(axis=0, ddof=1)
    gap = kappa - costs[group_layer][below]
    report["noise"] = {
        "layer": group_layer, "batch": noise_batch, "units_below_kappa": int(below.sum()),
        "gap_median": float(np.median(gap)) if below.any() else None,
        "std_median": float(np.median(spread[below])) if below.any() else None,
        "visits_for_2_sigma_median": (float(np.median((2 * spread[below] / gap) ** 2))
                                      if below.any() else None)}
    return report


def run_report(directory: Path, data_dir=None) -> dict:
    """:func:`analyse` for a finished run directory of ``python -m minibern train --gates``."""
    try:
        metrics = gated_lenet300_metrics(directory)
    except GatedRunError as error:
        raise VertexCostError(str(error)) from error
    gate_config = metrics["gate_config"]
    if gate_config.get("kappa_per_param") or gate_config.get("kappa_expected_params"):
        raise VertexCostError(f"{directory}: its units are not priced per unit; only runs with "
                              "the default κ per unit are supported")
    config = metrics["config"]
    if config.get("weight_decay") or config.get("train_subset"):
        raise VertexCostError(f"{directory}: trained with a weight prior or on a subset; L + "
                              "κ·kept is N times the objective only without either")
    try:
        net = exported_network(directory)
    except GatedRunError as error:
        raise VertexCostError(str(error)) from error
    mnist = load_mnist(data_dir)
    layer_names = [gate["name"] for gate in metrics["gates"]]
    report = analyse(net, mnist.train_images, mnist.train_labels, float(gate_config["kappa"]),
                     layer_names, layer_names[-1], noise_batch=metrics["config"]["batch_size"])
    if report["noise"] is not None:  # the group layer is the last gate layer
        report["noise"]["visits_per_epoch"] = visits_per_epoch(
            len(mnist.train_labels), metrics["config"]["batch_size"], gate_config["subset"],
            report["kept"][-1], last=True)
    history = directory / "history.npz"
    if history.exists():
        with np.load(history) as recorded:
            if "gradient_snapshots" in recorded.files:
                start = sum(gate["total"] for gate in metrics["gates"][:-1])
                report["training"] = training_estimates(
                    recorded["theta_snapshots"][-1, start:],
                    recorded["gradient_snapshots"][-1, start:], report["alone_costs_last"],
                    float(gate_config["kappa"]))
    report["run"] = f"{directory.parent.name}/{directory.name}"
    report["test_error_%"] = 100 * metrics["test_error"]
    return report


def _median(layer: dict) -> float:
    return layer["alone_cost_percentiles"]["50"]


def at_one(directory: Path, layer: str) -> int | None:
    """Gates of ``layer`` exactly at θ = 1 at the end of the run (its audit), or None."""
    try:
        metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    audit = (metrics.get("decisions") or {}).get("audit") or []
    counts = [entry["at_one"] for entry in audit if entry.get("name") == layer]
    return sum(counts) if counts else None


def markdown(root: Path) -> str:
    """The results page's section: one row per ``vertex_cost.json`` under ``root``."""
    paths = sorted(root.glob("*/*/vertex_cost.json"))
    reports = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    if not reports:
        return ""
    lines = ["## vertex costs: the objective at the final vertex and at smaller ones "
             "(`experiments/vertex_cost.py`)\n",
             "Summed training loss L (N = 55,000, the exported network) and the price κ·(kept "
             "units); their sum is N times the objective (B13) at the vertex (gates still "
             "inside the box rounded at ½: the column 'at θ = 1' counts the last hidden "
             "layer's kept gates that are exactly at 1). Alone cost: the rise of L when one "
             "kept unit alone is removed (median, and how many of the layer's kept units cost "
             "less than κ alone). Group: the rise of L when the k cheapest units of the last "
             "hidden layer are removed together, against the alone costs' sum and the price "
             "κ·k saved. Noise: for that layer's units below κ, the median gap κ − alone cost, "
             "the median standard deviation of one minibatch's estimate of the alone cost "
             "(a batch of the run's size, scaled to N; at the vertex, so without the masks' "
             "noise), the median over those units of the visits an average needs to resolve "
             "its gap at two standard errors, (2σ/gap)², and the visits per epoch each of "
             "the layer's gates gets (all of them, every step). Below κ: for the same units, "
             "the median of N·(Δ̂ + κ) as the estimator saw it over the run's last epoch "
             "(`gradient_snapshots`, where recorded; how many of them above 0) against the "
             "median Δ + κ at the vertex. Weights as trained, no retraining.\n"]
    names = list(reports[0]["layers"])
    head = (["run", "kept", f"{names[-1]} at θ = 1", "test error %", "L", "κ·kept",
             "N·objective"]
            + [f"{name} median alone cost (< κ)" for name in names]
            + ["group k: L rise / alone sum / price saved",
               "noise: gap / std / visits to resolve (visits per epoch)",
               "below κ: Δ̂ + κ in training (> 0) / at the vertex"])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path, report in zip(paths, reports):
        group = report["group"]
        ones = at_one(path.parent, names[-1])
        cells = [report["run"], "-".join(str(k) for k in report["kept"]),
                 "—" if ones is None else str(ones),
                 f"{report['test_error_%']:.2f}", f"{report['loss']:.0f}",
                 f"{report['price']:.0f}", f"{report['objective']:.0f}"]
        cells += [f"{_median(report['layers'][name]):.1f} ({report['layers'][name]['below_kappa']})"
                  for name in names]
        cells.append("; ".join(f"{k}: {rise:.0f} / {alone:.0f} / {price:.0f}" for k, rise, alone,
                               price in zip(group["k"], group["loss_rise"], group["alone_sum"],
                                            group["price_saved"])))
        noise = report.get("noise") or {}
        cells.append("—" if noise.get("gap_median") is None else
                     f"{noise['gap_median']:.1f} / {noise['std_median']:.0f} / "
                     f"{noise['visits_for_2_sigma_median']:.0f}"
                     + (f" ({noise['visits_per_epoch']:.0f})" if "visits_per_epoch" in noise
                        else ""))
        seen = report.get("training") or {}
        cells.append("—" if seen.get("median") is None else
                     f"{seen['median']:.1f} ({seen['positive']} > 0) / {seen['vertex_median']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished gated LeNet-300-100 runs")
    parser.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    args = parser.parse_args(argv)
    for directory in args.runs:
        try:
            report = run_report(directory, args.data)
        except (VertexCostError, OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        (directory / "vertex_cost.json").write_text(json.dumps(report, indent=1) + "\n",
                                                    encoding="utf-8")
        group = report["group"]
        print(f"{report['run']}: kept {report['kept']}, L {report['loss']:.0f}, "
              f"κ·kept {report['price']:.0f}, N·objective {report['objective']:.0f}; "
              + ", ".join(f"{name} median alone cost {_median(layer):.1f} "
                          f"({layer['below_kappa']} < κ)"
                          for name, layer in report["layers"].items())
              + f"; {group['layer']} groups k={group['k']}: L rise "
              + ", ".join(f"{v:.0f}" for v in group["loss_rise"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
