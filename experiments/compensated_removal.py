"""Removal priced with the consumer re-fitted: the offline test behind the compensated estimate.

The paper's Δ_i compares keeping unit i with removing it *while every other weight stays where
it is*. After training, the weights have co-adapted to the units that are on, so a unit's
fixed-weight removal cost can overstate what the network loses without it: the other units of
its layer may carry most of what it carries. This script measures that on the exported network
of finished gated LeNet-300-100 runs (``model.npz``: every gate at 1[θ ≥ ½]), one gate layer at
a time, on the training split (N = 55,000), with the run's κ per unit:

- *held* (the paper's Δ): unit i's cost is the rise of the summed training loss L when its
  outgoing weights are zeroed;
- *re-fitted*: unit i's activation a_i is regressed on the layer's other kept units and a
  constant (ridge, from the layer's Gram matrix), a_i ≈ A_{−i} β_i + c_i, and its share is
  folded into the others' outgoing weights, W_j ← W_j + β_ij W_i, b ← b + c_i W_i; its cost is
  the rise of L after that fold.

Greedy: the cheapest unit is removed while its cost stays below κ, and every cost is re-priced
after each removal. The costs are ranked on a fixed sample of the training images (every
``--stride``-th one, scaled to N); the reported losses and errors use every image.

For the regression of every unit on the others at once (the Optimal-Brain-Surgeon identity):
with P = (G + Λ)⁻¹ the inverse of the ridge-regularised Gram matrix of [A, 1] (Λ on the units'
diagonal only), the coefficients of unit i on the others are −P_{ji}/P_{ii} (j ≠ i), so the
change of unit i's contribution when it is replaced by its fit is r_i = [A, 1] C_{:,i} with
C = −P diag(P)⁻¹ (C_ii = −1). Held removal is r_i = −a_i.

Usage::

    python experiments/compensated_removal.py RUN_DIR [RUN_DIR ...] [--out FILE]

writes one JSON report (default ``experiments/runs/compensated_removal.json``); ``python
experiments/sweep.py results`` tabulates it in docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from minibern.data import load_mnist

from gated_run import GatedRunError, exported_network, gated_lenet300_metrics
from vertex_cost import Vertex, _from_layer, cross_entropies

LAYER_NAMES = ("inputs", "h1", "h2")
MODES = ("held", "refit")
RIDGE = 1e-3  # Λ = RIDGE × mean diagonal of the units' Gram block


def residual_directions(a, mode: str):
    """C of the module docstring: (n + 1, n) with column i the change of [A, 1] that removes
    unit i (held: −e_i; refit: −P_{:,i}/P_ii)."""
    n = a.shape[1]
    if mode == "held":
        return -np.eye(n + 1, n)
    ones = np.ones((len(a), 1), dtype=np.float64)
    design = np.hstack([a.astype(np.float64), ones])
    gram = design.T @ design
    ridge = RIDGE * np.trace(gram[:n, :n]) / n
    gram[np.arange(n), np.arange(n)] += ridge
    inverse = np.linalg.inv(gram)
    return -(inverse / np.diag(inverse)[None, :])[:, :n]


def removal_costs(vertex: Vertex, layer: int, directions, rows) -> np.ndarray:
    """Rise of the summed loss, scaled to N, when each unit is replaced along its column of
    ``directions``, on the images ``rows``."""
    weight, bias = vertex.dense[layer]
    a = vertex.inputs[layer][rows]
    labels = vertex.labels[rows]
    pre = a @ weight + bias
    base = cross_entropies(_from_layer(pre, vertex.dense, layer), labels).sum()
    change = np.hstack([a, np.ones((len(a), 1), a.dtype)]) @ directions.astype(a.dtype)
    costs = np.empty(weight.shape[0])
    for i in range(weight.shape[0]):
        moved = pre + np.outer(change[:, i], weight[i])
        costs[i] = cross_entropies(_from_layer(moved, vertex.dense, layer), labels).sum() - base
    return costs * len(vertex.labels) / len(rows)


def remove_unit(vertex: Vertex, layer: int, unit: int, directions) -> None:
    """Fold unit ``unit``'s fitted share into the others' outgoing weights, drop it."""
    weight, bias = vertex.dense[layer]
    column = directions[:, unit].astype(weight.dtype)
    bias = bias + column[-1] * weight[unit]
    weight = weight + np.outer(column[:-1], weight[unit])
    keep = np.arange(weight.shape[0]) != unit
    vertex.dense[layer] = (weight[keep], bias)
    vertex.inputs[layer] = vertex.inputs[layer][:, keep]
    if layer == 0:
        vertex.index = vertex.index[keep] if vertex.index is not None else np.flatnonzero(keep)
    else:
        w_prev, b_prev = vertex.dense[layer - 1]
        vertex.dense[layer - 1] = (w_prev[:, keep], b_prev[keep])


def greedy(vertex: Vertex, layer: int, mode: str, kappa: float, rows) -> int:
    """Remove the cheapest unit of ``layer`` while it costs less than κ; returns the removals."""
    removed = 0
    while vertex.units(layer) > 1:
        directions = residual_directions(vertex.inputs[layer], mode)
        costs = removal_costs(vertex, layer, directions, rows)
        cheapest = int(np.argmin(costs))
        if not costs[cheapest] < kappa:
            break
        remove_unit(vertex, layer, cheapest, directions)
        removed += 1
    return removed


def test_error(vertex: Vertex, images, labels) -> float:
    x = images.reshape(len(images), -1).astype(vertex.dense[0][0].dtype)
    h = x if vertex.index is None else x[:, vertex.index]
    for k, (weight, bias) in enumerate(vertex.dense):
        h = h @ weight + bias
        if k < len(vertex.dense) - 1:
            h = np.maximum(h, 0)
    return float(np.mean(h.argmax(axis=1) != labels))


def widths(vertex: Vertex) -> list[int]:
    return [vertex.units(k) for k in range(len(vertex.dense))]


def analyse(directory: Path, data, stride: int) -> dict:
    """Per mode: the last hidden layer pruned alone, and every gate layer in turn from the last
    hidden one to the inputs."""
    metrics = gated_lenet300_metrics(directory)
    kappa = float(metrics["gate_config"]["kappa"])
    rows = np.arange(0, len(data.train_labels), stride)
    report = {"run": str(directory), "kappa": kappa, "start": metrics["config"]["width_mult"],
              "init_scale": metrics["config"].get("init_scale", 1.0),
              "seed": metrics["config"]["seed"]}
    for mode in MODES:
        vertex = Vertex(exported_network(directory), data.train_images, data.train_labels)
        last = len(LAYER_NAMES) - 1
        greedy(vertex, last, mode, kappa, rows)
        alone = {"kept": vertex.units(last),
                 "test_error": test_error(vertex, data.test_images, data.test_labels),
                 "objective": vertex.loss() + kappa * sum(widths(vertex))}
        vertex = Vertex(exported_network(directory), data.train_images, data.train_labels)
        before = widths(vertex)
        loss_before = vertex.loss()
        for layer in reversed(range(len(LAYER_NAMES))):
            greedy(vertex, layer, mode, kappa, rows)
            vertex = Vertex(_rebuilt(vertex), data.train_images, data.train_labels)
        report[mode] = {
            "h2_alone": alone, "exported": before, "all_layers": widths(vertex),
            "objective_before": loss_before + kappa * sum(before),
            "objective_after": vertex.loss() + kappa * sum(widths(vertex)),
            "test_error_before": float(metrics["export_test_error"]),
            "test_error_after": test_error(vertex, data.test_images, data.test_labels)}
    return report


def _rebuilt(vertex: Vertex):
    """Engine layers of the vertex's current arrays, so its cached inputs are recomputed."""
    from minibern.layers import Dense, ReLU, SelectFeatures
    layers = []
    if vertex.index is not None:
        layers.append(("select", SelectFeatures(vertex.index, 784)))
    for k, (weight, bias) in enumerate(vertex.dense):
        dense = Dense(weight.shape[0], weight.shape[1], dtype=weight.dtype)
        dense.params["W"], dense.params["b"] = weight, bias
        layers.append((f"fc{k + 1}", dense))
        if k < len(vertex.dense) - 1:
            layers.append((f"relu{k + 1}", ReLU()))
    return layers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--stride", type=int, default=10,
                        help="rank the costs on every STRIDE-th training image (default 10)")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "runs" / "compensated_removal.json")
    args = parser.parse_args(argv)
    data = load_mnist(args.data)
    reports = []
    try:
        for directory in args.runs:
            reports.append(analyse(directory, data, args.stride))
            args.out.write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
            print(json.dumps({k: reports[-1][k] for k in ("run",)} | {
                m: reports[-1][m]["all_layers"] for m in MODES}), flush=True)
    except GatedRunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
