r"""The exact estimator (E9): every joint mask enumerated, for networks of a few gates.

Derivation: docs/derivations/estimators.md, (E9). With G gates the 2^G masks ξ are evaluated
once each; then :math:`\Delta_i/N = \sum_\xi (\pm 1) \prod_{g \ne i} P(\xi_g)\,\bar\ell(\xi)`
with + where ξ_i = 1. The oracle the tests compare the other estimators with.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.topology import gate_layers
from minibern.losses import per_example_cross_entropy

np = B.host

MAX_EXACT_GATES = 12


def _all_masks(n_gates: int):
    """Host (2^G, G) array of every 0/1 mask, row r = the bits of r."""
    return ((np.arange(2 ** n_gates)[:, None] >> np.arange(n_gates)) & 1).astype(np.float64)


def exact_losses(net, x, labels):
    """ℓ_n for every joint mask: host (2^G, N), with the masks (2^G, G) and the gates."""
    gates = gate_layers(net)
    sizes = [gate.n_units for _, _, gate in gates]
    total = sum(sizes)
    if total > MAX_EXACT_GATES:
        raise ValueError(f"the exact estimator enumerates 2^G masks and is limited to "
                         f"G ≤ {MAX_EXACT_GATES} gates; this network has {total} — use "
                         "'removal' (or 'first-order')")
    masks = _all_masks(total)
    n = x.shape[0]
    losses = np.empty((len(masks), n))
    try:
        for r, mask in enumerate(masks):
            start = 0
            for (_, _, gate), size in zip(gates, sizes):
                gate.inject_mask(np.broadcast_to(mask[start:start + size], (n, size)).copy())
                start += size
            losses[r] = B.to_numpy(per_example_cross_entropy(net.forward(x), labels))
    finally:
        for _, _, gate in gates:
            gate.inject_mask(None)
    return losses, masks, gates


def exact_expected_loss(net, x, labels) -> float:
    """(E9): the batch mean of E_ξ[ℓ_n] with ξ ~ Bern(θ), by enumeration."""
    losses, masks, gates = exact_losses(net, x, labels)
    theta = np.concatenate([gate.theta for _, _, gate in gates])
    prob = np.prod(np.where(masks == 1, theta, 1 - theta), axis=1)
    return float(prob @ losses.mean(axis=1))


class ExactEstimator:
    """(E9): Δ_i/N by enumerating every joint mask (tiny networks only); the oracle for tests.
    Same interface as the other estimators (:mod:`minibern.bernoulli.estimators`)."""

    name = "exact"

    def estimate(self, net, images, labels, rng=None, candidates=None) -> dict:
        """``{gate name: (Δ_i/N (n,), all visited)}`` on the batch ``images``, ``labels``
        (``rng`` and ``candidates`` are not needed: every gate is measured exactly)."""
        losses, masks, gates = exact_losses(net, images, labels)
        mean_loss = losses.mean(axis=1)
        theta = np.concatenate([gate.theta for _, _, gate in gates])
        probs = np.where(masks == 1, theta, 1 - theta)  # P(ξ_g = mask_g), (2^G, G)
        out, start = {}, 0
        for _, name, gate in gates:
            delta = np.empty(gate.n_units)
            for j in range(gate.n_units):
                g = start + j
                others = np.prod(probs[:, np.arange(len(theta)) != g], axis=1)
                signed = np.where(masks[:, g] == 1, 1.0, -1.0) * others
                delta[j] = signed @ mean_loss  # (E9)
            out[name] = (delta, np.ones(gate.n_units, dtype=bool))
            start += gate.n_units
        return out
