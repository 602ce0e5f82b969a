r"""The audit of θ's decisions on the whole training set (docs/derivations/convergence.md, §5).

After training, with every gate at its deterministic value 1[θ ≥ ½], the removal effect of
every gate still in the network is measured on all training examples,

.. math::
    g_i^{\mathrm{full}} = \frac1N\sum_n\big[\ell_n(\xi_i = 1) - \ell_n(\xi_i = 0)\big]
        + \frac{\kappa_i}{N},                                                        \tag{C11}

and a gate on a vertex is a *false decision* when the vertex disagrees with the sign:
θ = 1 with g > 0, or θ = 0 with g < 0 (C12). :class:`DecisionAudit` runs it at the end of
training for the gates certified by the decision rule and for those the projection alone put on
a vertex, apart; :func:`decisions_report` is metrics.json's ``decisions``.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.estimators import RemovalEstimator
from minibern.bernoulli.topology import gate_layers

np = B.host


def full_data_gradients(net, images, labels, kappa: dict, n_data: int, batch_size: int = 500):
    """(C11) for every gate of ``net``: ``{gate name: host float64 (n,)}``.

    ``images`` (N, ...) and ``labels`` (N,) on the backend; ``kappa`` the κ_i per gate name
    (scalar or (n,)); ``n_data`` the N of the per-example cost.
    """
    gates = gate_layers(net)
    estimator = RemovalEstimator(subset=None)
    sums = {name: np.zeros(gate.n_units) for _, name, gate in gates}
    size = int(images.shape[0])
    try:
        for start in range(0, size, batch_size):
            stop = min(start + batch_size, size)
            for _, _, gate in gates:
                mask = np.broadcast_to(gate.deterministic_mask(), (stop - start, gate.n_units))
                gate.inject_mask(np.ascontiguousarray(mask, dtype=np.float32))
            net.forward(images[start:stop])
            found = estimator.estimate(net, images[start:stop], labels[start:stop])
            for name, (delta, _) in found.items():
                sums[name] += delta * (stop - start)
    finally:
        for _, _, gate in gates:
            gate.inject_mask(None)
    return {name: sums[name] / size + kappa[name] / n_data for name in sums}  # (C11)


def false_decisions(theta, gradient) -> dict:
    """(C12): gates at 1 and at 0, and how many of each disagree with ``gradient`` (host (n,))."""
    at_one, at_zero = theta == 1.0, theta == 0.0
    return {"at_one": int(at_one.sum()), "at_zero": int(at_zero.sum()),
            "false_at_one": int((at_one & (gradient > 0)).sum()),
            "false_at_zero": int((at_zero & (gradient < 0)).sum())}


class DecisionAudit:
    """(C11)–(C12) on the whole training split, once, after the last epoch.

    :attr:`report` is None until :meth:`run`; then metrics.json's audit entries: per layer and
    kind the (C12) counts (``audit``), the decisions audited and the false rates of the rule
    and of the projection alone.
    """

    def __init__(self):
        self.report = None

    def run(self, trainer, gates, states: dict, kappa: dict, n_data: int) -> None:
        """Audit every gate layer of ``gates`` (``gate_layers(net)``) with its
        :class:`~minibern.bernoulli.state.GateState` (``certified``), κ_i and N."""
        train = trainer.splits["train"]
        gradients = full_data_gradients(trainer.net, train.images, train.labels, kappa, n_data)
        totals = {"rule": [0, 0], "projection": [0, 0]}  # [decisions, false ones]
        layers = []
        for _, name, gate in gates:
            certified = states[name].certified
            for kind, pick in (("rule", certified), ("projection", ~certified)):
                counts = false_decisions(np.where(pick, gate.theta, 0.5), gradients[name])
                totals[kind][0] += counts["at_one"] + counts["at_zero"]
                totals[kind][1] += counts["false_at_one"] + counts["false_at_zero"]
                layers.append({"name": name, "decided_by": kind, **counts})
        self.report = {
            "audit": layers, "audited_rule": totals["rule"][0],
            "audited_projection": totals["projection"][0],
            **{key: (false / decided if decided else None)
               for key, (decided, false) in (("false_rate", totals["rule"]),
                                             ("false_rate_projection", totals["projection"]))}}
        trainer.log(f"  audit on {train.size} images: false decisions "
                    f"{totals['rule'][1]}/{totals['rule'][0]} certified by the rule, "
                    f"{totals['projection'][1]}/{totals['projection'][0]} by the projection "
                    "alone")


def decisions_report(gates, states: dict, removed_certified: dict, alpha: float,
                     audit_report: dict | None) -> dict:
    """metrics.json's ``decisions``: per layer, the gates certified by the rule (in the arrays
    or removed since), their share of all gates and, after the audit, the false decisions
    (C12) of the rule and of the projection alone."""
    layers, total, certified = [], 0, 0
    for _, name, gate in gates:
        count = int(states[name].certified.sum()) + removed_certified[name]
        layers.append({"name": name, "total": gate.n_original, "by_rule": count})
        total, certified = total + gate.n_original, certified + count
    report = {"alpha": alpha, "layers": layers, "share_by_rule": certified / total,
              "false_rate": None}
    if audit_report is not None:
        report.update(audit_report)
    return report
