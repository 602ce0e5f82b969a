r"""Estimators of the removal effect Δ_i = E[L | ξ_i = 1] − E[L | ξ_i = 0], per gate.

Derivation, bias, variance and cost of each: docs/derivations/estimators.md, (E3)–(E9).

Every estimator is an object with one method,

    ``estimate(net, images, labels, rng=None, candidates=None) -> {gate name: (delta, visited)}``

called after the batch's forward (and backward) pass through ``net`` (a
:class:`~minibern.layers.Sequential` with gates), with the batch ``images``, ``labels`` on the
backend, the run's host generator ``rng`` for the visits and optionally ``candidates``
(``{gate name: host bool (n,)}``, the gates θ can still move). It returns, per gate layer, a
host float64 array ``delta`` (n,) estimating the *per-example* effect Δ_i / N (the batch mean
of ℓ_n(ξ_i=1) − ℓ_n(ξ_i=0)) and a host bool array ``visited`` (n,) of the gates it measured
this step.

``first-order``  (E3), :class:`FirstOrderEstimator`
    Σ_n ∂ℓ_n/∂ξ_{n,i} / B from the backward pass; biased where ℓ is not linear in ξ_i.
``removal``  (E4)–(E8), :class:`RemovalEstimator`
    Unbiased two-point estimate: for each example and visited gate, the loss with ξ_{n,i}
    flipped, computed by a *batched partial forward*: the flip changes the gate output by
    δ_{n,i} = (1 − 2ξ_{n,i}) a_{n,i}, the next linear layer's pre-activation by δ_{n,i} times
    row/filter i of its weights (E5) — for conv filters one batched product over all pairs,
    (E5a)–(E5b), :mod:`minibern.bernoulli.flip_products` — and only the layers after that are
    re-run, on the (example, gate) pairs whose δ is non-zero. The last gate layer before the
    output layer is visited in full every step; earlier layers on a random subset of
    ``subset`` candidates (unbiased for the gates it visits).
``exact``  (E9), :class:`minibern.bernoulli.exact.ExactEstimator`
    Enumerates all 2^G joint masks (G ≤ 12): the oracle for tests.
``compensated``  (R4), :class:`minibern.bernoulli.compensated.CompensatedEstimator`
    The removal estimate with the consumer re-fitted for the removed unit (a departure from
    the paper: docs/derivations/compensated.md).
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.config import ESTIMATORS, check_visits
from minibern.bernoulli.exact import ExactEstimator
from minibern.bernoulli.flip_products import linear_change, output_layer_logits
from minibern.bernoulli.topology import gate_layers, gate_sites
from minibern.losses import per_example_cross_entropy

np = B.host

__all__ = ["ESTIMATORS", "FirstOrderEstimator", "RemovalEstimator", "ExactEstimator",
           "make_estimator"]


# ---------------------------------------------------------------------------------------------
class FirstOrderEstimator:
    """(E3): the gate's backprop derivative at the sampled mask, averaged over the batch."""

    name = "first-order"

    def estimate(self, net, images, labels, rng=None, candidates=None) -> dict:
        """``{gate name: (Σ_n ∂ℓ_n/∂ξ_{n,i} (n,), all visited)}`` from the last backward pass
        (``images``, ``labels``, ``rng``, ``candidates``: unused, the pass has them all)."""
        out = {}
        for _, name, gate in gate_layers(net):
            if gate.grad_xi is None:
                raise RuntimeError("run backward before the first-order estimator")
            out[name] = (B.to_numpy(gate.grad_xi).astype(np.float64),
                         np.ones(gate.n_units, dtype=bool))
        return out


# ---------------------------------------------------------------------------------------------
class RemovalEstimator:
    """(E4)–(E8): unbiased flip-one-gate differences by batched partial forwards.

    Parameters
    ----------
    subset : int or None
        Gates visited per step in every gate layer but the last (None: all).
    first_subset : int or None
        The same for the first gate layer (the input gates, whose partial forwards are the
        dearest); None: ``subset``.
    """

    name = "removal"
    _linear_change = staticmethod(linear_change)  # (E5)–(E5b)

    def __init__(self, subset: int | None = 16, first_subset: int | None = None):
        self.subset = check_visits(subset, "subset")
        first_subset = check_visits(first_subset, "first_subset")
        self.first_subset = subset if first_subset is None else first_subset

    def estimate(self, net, images, labels, rng=None, candidates=None) -> dict:
        """Needs the batch's forward pass (``net.outputs``, gate caches) and its labels
        (``images`` are not re-read: the partial forwards start from the stored outputs).

        ``candidates`` restricts the visits to the gates whose θ can still move (frozen ones
        are skipped: they cost nothing); a subsampled layer draws its ``subset`` among them.
        """
        if not net.outputs:
            raise RuntimeError("run net.forward on the batch before the removal estimator")
        sites = gate_sites(net)
        visits = self._visits(sites, rng, candidates)
        # One copy of every layer's visited gates to the device and one of their sums back:
        # the transfers of a step do not grow with the layers' widths or the visits.
        bounds = np.cumsum([0] + [visit.size for visit in visits])
        sums = np.zeros(bounds[-1])
        if bounds[-1]:
            visits_dev = B.asarray(np.concatenate(visits))
            flips = [(self._layer_flips(net, found, visits_dev[start:stop]), stop - start)
                     for found, start, stop in zip(sites, bounds[:-1], bounds[1:])
                     if stop > start]
            sums = B.to_numpy(pair_sums(net, flips, bounds[-1], labels))
            sums /= labels.shape[0]  # (E8)
        return per_layer_estimates(sites, visits, bounds, sums)

    def _visits(self, sites, rng, candidates) -> list:
        """Per gate layer, the sorted host indices of the gates to visit this step: every
        candidate of the last layer, ``subset`` (``first_subset``) drawn from the others'."""
        visits = []
        for position, found in enumerate(sites):
            n = found.gate.n_units
            pool = np.arange(n) if candidates is None else np.flatnonzero(candidates[found.name])
            last = position == len(sites) - 1
            size = self.first_subset if position == 0 else self.subset
            if last or size is None or size >= pool.size:
                visits.append(pool)
            else:
                if rng is None:
                    raise RuntimeError("the subsampled removal estimator needs a host rng")
                visits.append(np.sort(rng.choice(pool, size=size, replace=False)))
        return visits

    def _layer_flips(self, net, found, visit_dev):
        """The flips of one gate layer's visited gates ``visit_dev`` (device ints (m,)):
        ``(flipped logits (C, P) classes-first, rows (P,), cols (P,), signs (P,))`` for the
        P (example, visited gate) pairs whose δ is non-zero, (E4)–(E6); None where no pair is."""
        gate = found.gate
        a, mask = gate.last_input, gate.mask
        xp = B.get_array_module(a)
        if visit_dev.shape[0] == gate.n_units:  # the whole layer: no gather needed
            a_sub, xi_sub = a, mask
        else:
            a_sub, xi_sub = a[:, visit_dev], mask[:, visit_dev]
        sign = 1 - 2 * xi_sub  # +1: the flip turns the gate on; −1: off            (E4)
        change = a_sub * (sign.reshape(sign.shape + (1,) * (a.ndim - 2)) if a.ndim > 2 else sign)
        linear = self._next_linear(net, found)
        active = change != 0 if a.ndim == 2 else (change != 0).any(axis=(2, 3))
        # (example, visited gate) pairs that change anything, example-major (flatnonzero:
        # NumPy's 2-D nonzero is several times slower; on a GPU it reads the count back)
        pairs = xp.flatnonzero(active)
        if int(pairs.shape[0]) == 0:
            return None
        rows, cols = xp.divmod(pairs, active.shape[1])
        if linear == len(net) - 1 and net[linear].op_kind == "dense" and a.ndim == 2:
            flipped = output_layer_logits(net[linear], net.outputs[linear], change, pairs, rows,
                                          cols, visit_dev)  # (E5′)
        else:
            flipped = self._partial_forward_logits(net, linear, change, rows, cols,
                                                   visit_dev).T  # (E5)–(E6)
        return flipped, rows, cols, sign.ravel()[pairs]

    def _partial_forward_logits(self, net, linear, change, rows, cols, visit_dev):
        """The logits with gate i flipped, per pair, (P, C): (E5) into the next linear layer,
        then the rest of the network (E6)."""
        xp = B.get_array_module(change)
        h = xp.take(net.outputs[linear], rows, axis=0)  # a fresh (P, ...) array
        h += self._linear_change(net[linear], change, rows, cols, visit_dev)  # (E5)
        # (E6): the rest of the network on the pairs. h is always a temporary of this loop
        # (a gather or a layer's fresh output), so ReLU and the gates work on it in place.
        for k in range(linear + 1, len(net)):
            layer = net[k]
            if layer.is_gate:
                if layer.is_identity:  # an all-on gate is the identity
                    continue
                if layer.mask.ndim == 2 and h.ndim == 2:
                    h *= xp.take(layer.mask, rows, axis=0)  # (E1)
                else:
                    h = layer.apply(h, layer.mask[rows] if layer.mask.ndim == 2 else layer.mask)
            elif layer.op_kind == "relu":  # values only: no backward cache needed
                xp.maximum(h, B.shared_zeros_like(h), out=h)  # (L5)
            else:
                h = layer.forward(h)
        return h

    @staticmethod
    def _next_linear(net, found):
        """Index of the gate's consumer, the first Dense/Conv2D after it: the partial forward
        (E5) starts there, so only Flatten may stand between."""
        for k in found.downstream:
            if not net[k].flattens:
                raise NotImplementedError(
                    f"removal estimator: gate {found.name!r} is followed by "
                    f"{type(net[k]).__name__} before a linear layer; place gates right before a "
                    "Dense/Conv2D (optionally through Flatten)")
        if found.consumer is None:
            raise ValueError(f"gate {found.name!r} has no linear layer after it; the output "
                             "layer is never gated")
        return found.consumer


def per_layer_estimates(sites, visits, bounds, sums) -> dict:
    """``{gate name: (delta (n,), visited (n,))}`` from the host ``sums`` of every layer's
    visited gates side by side (layer k's in ``sums[bounds[k]:bounds[k + 1]]``); 0 where a gate
    was not visited."""
    out = {}
    for found, visit, start, stop in zip(sites, visits, bounds[:-1], bounds[1:]):
        delta = np.zeros(found.gate.n_units)
        delta[visit] = sums[start:stop]
        visited = np.zeros(found.gate.n_units, dtype=bool)
        visited[visit] = True
        out[found.name] = (delta, visited)
    return out


def pair_sums(net, flips, n_visited: int, labels):
    """Σ_n d_{n,i} over the batch of every visited gate, the layers' ``flips`` in order: a
    device float64 array (n_visited,), (E7)–(E8) without the 1/B.

    ``flips``: per layer with visits, (:meth:`RemovalEstimator._layer_flips`'s tuple or None,
    its visits m). The losses of the batch and of every layer's flipped pairs are one
    cross-entropy over their logits side by side (its reductions run over the classes of
    each column, so side by side changes no bit), and the d_{n,i} one scatter (a scatter,
    not bincount, whose output size a GPU would read back first)."""
    logits = net.outputs[-1]  # (N, C)
    xp = B.get_array_module(logits)
    n = logits.shape[0]
    per_pair = xp.zeros((n, n_visited), dtype=xp.float64)  # d_{n,i}, 0 where δ_{n,i} = 0
    found = [flip for flip, _ in flips if flip is not None]
    if not found:
        return per_pair.sum(axis=0)
    rows = xp.concatenate([xp.arange(n)] + [flip[1] for flip in found])
    losses = per_example_cross_entropy(
        xp.concatenate([logits.T] + [flip[0] for flip in found], axis=1), labels[rows],
        classes_first=True)  # ℓ_n, then ℓ_n with gate i flipped per pair (E6)
    signs = xp.concatenate([flip[3] for flip in found])
    pair_rows = rows[n:]
    signed = signs * (losses[n:] - losses[pair_rows])  # (E7)
    start = column = 0
    for flip, width in flips:  # each layer's pairs into its columns
        if flip is not None:
            block = slice(start, start + int(flip[2].shape[0]))
            per_pair[:, column:column + width][pair_rows[block], flip[2]] = signed[block]
            start = block.stop
        column += width
    return per_pair.sum(axis=0)  # Σ_n of (E8)


#: Estimators that build on these in modules of their own, by name: each module adds its class
#: here (importing it from this module would be a cycle), and the package imports them all.
REGISTERED = {}

#: The speed path of an estimator, by its name (``--fused-estimator``): the same estimate in
#: fewer array operations, registered by its module (:mod:`minibern.bernoulli.removal_fused`).
FUSED = {}


def make_estimator(name: str, subset: int | None = 16, first_subset: int | None = None,
                   fused: bool = False):
    """An estimator by name: ``"first-order"``, ``"removal"``, ``"exact"`` or ``"compensated"``;
    ``fused``: its speed path (:data:`FUSED`)."""
    if fused:
        if name not in FUSED:
            raise ValueError(f"--fused-estimator computes the removal estimator, not {name!r}; "
                             "use it with --estimator removal")
        return FUSED[name](subset, first_subset)
    if name == "first-order":
        return FirstOrderEstimator()
    if name == "removal":
        return RemovalEstimator(subset, first_subset)
    if name == "exact":
        return ExactEstimator()
    if name in REGISTERED:
        return REGISTERED[name](subset, first_subset)
    raise ValueError(f"unknown estimator {name!r}; expected one of {', '.join(ESTIMATORS)}")
