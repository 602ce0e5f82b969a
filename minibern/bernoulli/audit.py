r"""The audit of θ's decisions on the whole training set (docs/derivations/convergence.md, §5).

After training, with every gate at its deterministic value 1[θ ≥ ½], the removal effect of
every gate still in the network is measured on all training examples,

.. math::
    g_i^{\mathrm{full}} = \frac1N\sum_n\big[\ell_n(\xi_i = 1) - \ell_n(\xi_i = 0)\big]
        + \frac{\kappa_i}{N},                                                        \tag{C11}

and a gate on a vertex is a *false decision* when the vertex disagrees with the sign:
θ = 1 with g > 0, or θ = 0 with g < 0 (C12).
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
            for name, (delta, _) in estimator.estimate(net, labels[start:stop]).items():
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
