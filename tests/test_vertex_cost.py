"""experiments/vertex_cost.py: a vertex's loss and its neighbours', checked by deleting units.

Zeroing a unit's outgoing weights (what the script does) must give the loss of the network with
that unit deleted from the arrays (what pruning does), for every unit of every layer; a group of
one is its unit alone; the objective is the loss plus the price.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern import backend as B
from minibern import layers as L
from minibern.losses import softmax_cross_entropy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import vertex_cost as V  # noqa: E402


def _net(rng, index, widths):
    """select(index) → dense → relu → dense → relu → dense, float64, random weights."""
    layers = [("select", L.SelectFeatures(index, 12))] if index is not None else []
    for k, (d, m) in enumerate(zip(widths[:-1], widths[1:])):
        dense = L.Dense(d, m, rng=rng, dtype="float64")
        dense.params["b"] = B.asarray(rng.standard_normal(m))
        layers.append((f"fc{k}", dense))
        if k < len(widths) - 2:
            layers.append((f"relu{k}", L.ReLU()))
    return L.Sequential(*layers)


def _host(net):
    return {name: {key: B.to_numpy(value) for key, value in layer.params.items()}
            for name, layer in net if layer.params}


def _deleted(index, params, layer, j):
    """The same network with unit j of dense layer ``layer`` deleted from the arrays."""
    params = {name: dict(p) for name, p in params.items()}
    names = sorted(params)
    params[names[layer]]["W"] = np.delete(params[names[layer]]["W"], j, axis=0)
    if layer == 0:
        index = np.delete(index, j)
    else:
        producer = params[names[layer - 1]]
        producer["W"] = np.delete(producer["W"], j, axis=1)
        producer["b"] = np.delete(producer["b"], j)
    widths = [params[names[0]]["W"].shape[0]] + [params[n]["W"].shape[1] for n in names]
    net = _net(np.random.default_rng(0), index, widths)
    for name, layer_ in net:
        if name in params:
            layer_.params = {key: B.asarray(value) for key, value in params[name].items()}
    return net


def _summed_loss(net, images, labels):
    loss = softmax_cross_entropy(net.forward(B.asarray(images)), B.asarray(labels))[0]
    return float(loss) * len(labels)


@pytest.mark.host_only
def test_zeroing_a_unit_costs_what_deleting_it_does():
    rng = np.random.default_rng(3)
    index = np.array([0, 2, 3, 5, 7, 8, 11])
    net = _net(rng, index, [7, 6, 5, 4])
    images = rng.standard_normal((40, 12))
    labels = rng.integers(0, 4, 40)
    vertex = V.Vertex(net, images, labels)
    base = vertex.loss()
    assert base == pytest.approx(_summed_loss(net, images, labels), rel=1e-12)
    params = _host(net)
    for layer in range(3):
        costs = vertex.alone_costs(layer)
        assert costs.shape == (vertex.units(layer),)
        for j in range(vertex.units(layer)):
            deleted = _summed_loss(_deleted(index, params, layer, j), images, labels)
            assert costs[j] == pytest.approx(deleted - base, rel=1e-9, abs=1e-9)
            assert vertex.loss(layer, [j]) - base == pytest.approx(costs[j], rel=1e-9, abs=1e-9)
    assert len(set(np.round(vertex.alone_costs(1), 6))) > 1  # the units differ
    for layer in range(3):  # the minibatch estimates average to the alone cost
        estimates = vertex.batch_alone_costs(layer, 8)
        assert estimates.shape == (5, vertex.units(layer))
        np.testing.assert_allclose(estimates.mean(axis=0), vertex.alone_costs(layer),
                                   rtol=1e-9, atol=1e-9)
        assert estimates.std(axis=0).max() > 0
        batch = np.random.default_rng(0).permutation(40)[:8]  # drawn as the trainer draws
        first = (_summed_loss(_deleted(index, params, layer, 0), images[batch], labels[batch])
                 - _summed_loss(net, images[batch], labels[batch]))
        assert estimates[0, 0] == pytest.approx(first * 40 / 8, rel=1e-9, abs=1e-9)
    assert vertex.batch_alone_costs(2, 16).shape == (2, 5)  # 8 of the 40 left out


@pytest.mark.host_only
def test_the_report_prices_the_vertex_and_groups_the_cheapest_units(tmp_path):
    rng = np.random.default_rng(4)
    net = _net(rng, None, [12, 9, 8, 3])
    images = rng.standard_normal((30, 12))
    labels = rng.integers(0, 3, 30)
    report = V.analyse(net, images, labels, 0.5, ["inputs", "h1", "h2"], "h2", counts=(1, 3, 8),
                        noise_batch=5)
    assert report["kept"] == [12, 9, 8]
    assert report["objective"] == pytest.approx(report["loss"] + 0.5 * 29)
    vertex = V.Vertex(net, images, labels)
    alone = vertex.alone_costs(2)
    group = report["group"]
    assert group["k"] == [1, 3]  # a group of all 8 would empty the layer
    assert group["loss_rise"][0] == pytest.approx(alone.min(), rel=1e-9, abs=1e-12)
    cheapest = np.argsort(alone, kind="stable")[:3]
    assert group["loss_rise"][1] == pytest.approx(vertex.loss(2, cheapest) - report["loss"])
    assert group["alone_sum"][1] == pytest.approx(alone[cheapest].sum())
    assert report["layers"]["h2"]["below_kappa"] == int((alone < 0.5).sum())
    noise = report["noise"]
    below = alone < 0.5
    assert noise["units_below_kappa"] == int(below.sum()) > 0
    assert noise["gap_median"] == pytest.approx(np.median(0.5 - alone[below]))
    spread = vertex.batch_alone_costs(2, 5).std(axis=0, ddof=1)[below]
    assert noise["std_median"] == pytest.approx(np.median(spread))
    needed = (2 * spread / (0.5 - alone[below])) ** 2
    assert noise["visits_for_2_sigma_median"] == pytest.approx(np.median(needed))
    assert V.analyse(net, images, labels, 0.5, ["inputs", "h1", "h2"], "h2",
                     noise_batch=20)["noise"] is None  # fewer than two batches
    run = tmp_path / "grid" / "run_seed0"
    run.mkdir(parents=True)
    report.update(run="grid/run_seed0", **{"test_error_%": 2.5})
    (run / "vertex_cost.json").write_text(json.dumps(report))
    page = V.markdown(tmp_path)
    assert "| grid/run_seed0 | 12-9-8 | — | 2.50 |" in page  # no metrics.json: no audit
    audit = [{"name": "h2", "decided_by": "rule", "at_one": 2},
             {"name": "h2", "decided_by": "projection", "at_one": 5},
             {"name": "h1", "decided_by": "projection", "at_one": 9}]
    (run / "metrics.json").write_text(json.dumps({"decisions": {"audit": audit}}))
    assert "| grid/run_seed0 | 12-9-8 | 7 | 2.50 |" in V.markdown(tmp_path)
    assert f"{report['objective']:.0f}" in page


@pytest.mark.host_only
def test_the_last_gate_layer_is_visited_every_step_the_others_share_the_subset():
    assert V.visits_per_epoch(55_000, 100, 16, 158, last=True) == 550
    assert V.visits_per_epoch(55_000, 100, 16, 160, last=False) == pytest.approx(55)
    assert V.visits_per_epoch(55_000, 100, 16, 8, last=False) == 550  # fewer gates than visits


@pytest.mark.host_only
def test_training_estimates_are_matched_to_the_kept_units_in_original_order():
    theta = np.array([1.0, 0.0, 0.7, 0.2, 1.0])  # kept: original units 0, 2, 4
    seen = np.array([-9.0, 50.0, 2.0, 40.0, -1.0])
    alone = [9.0, 1.0, 4.0]  # alone costs of units 0, 2, 4; κ = 5: units 2 and 4 below
    report = V.training_estimates(theta, seen, alone, 5.0)
    assert report == {"units": 2, "median": 0.5, "positive": 1, "vertex_median": 2.5}
    assert V.training_estimates(theta, seen, alone[:2], 5.0) is None  # kept sets differ
