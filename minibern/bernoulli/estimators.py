r"""Estimators of the removal effect Δ_i = E[L | ξ_i = 1] − E[L | ξ_i = 0], per gate.

Derivation, bias, variance and cost of each: docs/derivations/estimators.md, (E3)–(E9).

All estimators return, for every gate layer of a :class:`~minibern.layers.Sequential`, a host
float64 array ``delta`` (n,) estimating the *per-example* effect Δ_i / N (the batch mean of
ℓ_n(ξ_i=1) − ℓ_n(ξ_i=0)) and a host bool array ``visited`` (n,) of the gates it measured this
step (all of them, except for subsampled layers of the removal estimator).

``first-order``  (E3)
    Σ_n ∂ℓ_n/∂ξ_{n,i} / B from the backward pass; biased where ℓ is not linear in ξ_i.
``removal``  (E4)–(E8)
    Unbiased two-point estimate: for each example and visited gate, the loss with ξ_{n,i}
    flipped, computed by a *batched partial forward*: the flip changes the gate output by
    δ_{n,i} = (1 − 2ξ_{n,i}) a_{n,i}, the next linear layer's pre-activation by δ_{n,i} times
    row/filter i of its weights (E5), and only the layers after that are re-run, on the
    (example, gate) pairs whose δ is non-zero. The last gate layer before the output layer is
    visited in full every step; earlier layers on a random subset of ``subset`` gates (unbiased
    for the gates it visits).
``exact``  (E9)
    Enumerates all 2^G joint masks (G ≤ :data:`MAX_EXACT_GATES`): the oracle for tests.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.topology import gate_layers, gate_sites
from minibern.layers import Dense, Flatten, ReLU
from minibern.layers.im2col import im2col
from minibern.losses import per_example_cross_entropy

np = B.host

ESTIMATORS = ("first-order", "removal", "exact")
MAX_EXACT_GATES = 12


# ---------------------------------------------------------------------------------------------
class FirstOrderEstimator:
    """(E3): the gate's backprop derivative at the sampled mask, averaged over the batch."""

    name = "first-order"

    def estimate(self, net, labels, rng=None, candidates=None) -> dict:
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

    def __init__(self, subset: int | None = 16, first_subset: int | None = None):
        for name, value in (("subset", subset), ("first_subset", first_subset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.subset = subset
        self.first_subset = subset if first_subset is None else first_subset

    def estimate(self, net, labels, rng=None, candidates=None) -> dict:
        """Needs the batch's forward pass (``net.outputs``, gate caches) and its labels.

        ``candidates`` (optional ``{gate name: host bool (n,)}``) restricts the visits to the
        gates whose θ can still move (frozen ones are skipped: they cost nothing); a subsampled
        layer then draws its ``subset`` among the candidates.
        """
        if not net.outputs:
            raise RuntimeError("run net.forward on the batch before the removal estimator")
        base_loss = per_example_cross_entropy(net.outputs[-1], labels)
        sites = gate_sites(net)
        out = {}
        for position, found in enumerate(sites):
            name, gate = found.name, found.gate
            n = gate.n_units
            pool = np.arange(n) if candidates is None else np.flatnonzero(candidates[name])
            last = position == len(sites) - 1
            size = self.first_subset if position == 0 else self.subset
            if last or size is None or size >= pool.size:
                visit = pool
            else:
                if rng is None:
                    raise RuntimeError("the subsampled removal estimator needs a host rng")
                visit = np.sort(rng.choice(pool, size=size, replace=False))
            delta = np.zeros(n)
            if visit.size:
                delta[visit] = self._layer_deltas(net, found, visit, labels, base_loss)
            visited = np.zeros(n, dtype=bool)
            visited[visit] = True
            out[name] = (delta, visited)
        return out

    def _layer_deltas(self, net, found, visit, labels, base_loss):
        gate = found.gate
        a, mask = gate.last_input, gate.mask
        xp = B.get_array_module(a)
        batch = a.shape[0]
        visit_dev = B.asarray(visit)
        if len(visit) == gate.n_units:  # the whole layer: no gather needed
            a_sub, xi_sub = a, mask
        else:
            a_sub, xi_sub = a[:, visit_dev], mask[:, visit_dev]
        sign = 1 - 2 * xi_sub  # +1: the flip turns the gate on; −1: off            (E4)
        change = a_sub * (sign.reshape(sign.shape + (1,) * (a.ndim - 2)) if a.ndim > 2 else sign)
        linear = self._next_linear(net, found)
        active = change != 0 if a.ndim == 2 else (change != 0).any(axis=(2, 3))
        # (example, visited gate) pairs that change anything, example-major (flatnonzero:
        # NumPy's 2-D nonzero is several times slower)
        pairs = xp.flatnonzero(active)
        rows, cols = xp.divmod(pairs, active.shape[1])
        if int(rows.shape[0]) == 0:
            return np.zeros(len(visit))
        if linear == len(net) - 1 and isinstance(net[linear], Dense) and a.ndim == 2:
            flipped = self._output_layer_losses(net[linear], net.outputs[linear], change, pairs,
                                                rows, cols, visit_dev, labels)  # (E5′)
        else:
            flipped = self._partial_forward_losses(net, linear, change, rows, cols, visit,
                                                   visit_dev, labels)  # (E5)–(E6)
        pair_delta = sign.ravel()[pairs] * (flipped - base_loss[rows])  # (E7)
        sums = xp.bincount(cols, weights=pair_delta, minlength=len(visit))
        return B.to_numpy(sums).astype(np.float64) / batch  # (E8)

    def _partial_forward_losses(self, net, linear, change, rows, cols, visit, visit_dev, labels):
        """ℓ_n with gate i flipped, per pair: (E5) into the next linear layer, then (E6)."""
        xp = B.get_array_module(change)
        h = xp.take(net.outputs[linear], rows, axis=0)  # a fresh (P, ...) array
        h += self._linear_change(net[linear], change, rows, cols, visit, visit_dev)  # (E5)
        # (E6): the rest of the network on the pairs. h is always a temporary of this loop
        # (a gather or a layer's fresh output), so ReLU and the gates work on it in place.
        for k in range(linear + 1, len(net)):
            layer = net[k]
            if isinstance(layer, BernoulliGate):
                if layer.is_identity:  # an all-on gate is the identity
                    continue
                if layer.mask.ndim == 2 and h.ndim == 2:
                    h *= xp.take(layer.mask, rows, axis=0)  # (E1)
                else:
                    h = layer.apply(h, layer.mask[rows] if layer.mask.ndim == 2 else layer.mask)
            elif isinstance(layer, ReLU):  # values only: no backward cache needed
                xp.maximum(h, B.shared_zeros_like(h), out=h)  # (L5)
            else:
                h = layer.forward(h)
        return per_example_cross_entropy(h, labels[rows])

    @staticmethod
    def _output_layer_losses(layer, logits, change, pairs, rows, cols, visit_dev, labels):
        """(E5′): a gate right before the output layer: the flipped logits of every pair are
        z_n + δ_{n,i} W[i, :], built classes-first, (C, P), so nothing but the loss is re-run."""
        xp = B.get_array_module(logits)
        logits_t = xp.ascontiguousarray(logits.T)  # (C, B)
        weight_t = xp.ascontiguousarray(layer.params["W"][visit_dev].T)  # (C, m)
        flipped = xp.take(weight_t, cols, axis=1)  # W[i, :] of every pair's gate, (C, P)
        flipped *= change.ravel()[pairs]
        flipped += xp.take(logits_t, rows, axis=1)  # (E5′)
        return per_example_cross_entropy(flipped, labels[rows], classes_first=True)

    @staticmethod
    def _next_linear(net, found):
        """Index of the gate's consumer, the first Dense/Conv2D after it: the partial forward
        (E5) starts there, so only Flatten may stand between."""
        for k in found.downstream:
            if not isinstance(net[k], Flatten):
                raise NotImplementedError(
                    f"removal estimator: gate {found.name!r} is followed by "
                    f"{type(net[k]).__name__} before a linear layer; place gates right before a "
                    "Dense/Conv2D (optionally through Flatten)")
        if found.consumer is None:
            raise ValueError(f"gate {found.name!r} has no linear layer after it; the output "
                             "layer is never gated")
        return found.consumer

    @staticmethod
    def _linear_change(layer, change, rows, cols, visit, visit_dev):
        """Change of the next linear layer's pre-activation for each pair, (E5)."""
        xp = B.get_array_module(change)
        weight = layer.params["W"]
        if isinstance(layer, Dense) and change.ndim == 2:
            rows_of_w = xp.take(weight[visit_dev], cols, axis=0)  # W[i, :] of every pair's gate
            rows_of_w *= change[rows, cols][:, None]
            return rows_of_w  # (E5) dense
        if isinstance(layer, Dense):  # gate on conv filters, through Flatten: a block of H·W rows
            height, width = change.shape[2:]
            blocks = weight.reshape(-1, height * width, weight.shape[1])  # (n, H·W, M)
            result = xp.empty((rows.shape[0], weight.shape[1]), dtype=weight.dtype)
            cols_host = B.to_numpy(cols)
            for s in np.unique(cols_host):
                pick = B.asarray(np.flatnonzero(cols_host == s))
                patch = change[rows[pick], int(s)].reshape(pick.shape[0], height * width)
                result[pick] = patch @ blocks[int(visit[s])]  # (E5) flatten
            return result
        # Conv2D: the flipped channel convolved with its slice of every filter
        f, _, kh, kw = weight.shape
        _, _, oh, ow = layer.output_shape(change.shape)
        result = xp.empty((rows.shape[0], f, oh, ow), dtype=weight.dtype)
        cols_host = B.to_numpy(cols)
        for s in np.unique(cols_host):
            pick = B.asarray(np.flatnonzero(cols_host == s))
            images = change[rows[pick], int(s)][:, None]  # (P_s, 1, H, W)
            col = im2col(images, (kh, kw), layer.stride, layer.pad)
            w_slice = weight[:, int(visit[s])].reshape(f, kh * kw)
            result[pick] = (w_slice @ col).reshape(f, pick.shape[0], oh, ow).transpose(1, 0, 2, 3)  # (E5) conv
        return result


# ---------------------------------------------------------------------------------------------
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
    """(E9): Δ_i/N by enumerating every joint mask (tiny networks only)."""

    name = "exact"

    def __init__(self):
        self.x = None

    def estimate(self, net, labels, rng=None, x=None, candidates=None) -> dict:
        x = self.x if x is None else x
        if x is None:
            raise RuntimeError("the exact estimator needs the batch input (estimator.x)")
        losses, masks, gates = exact_losses(net, x, labels)
        mean_loss = losses.mean(axis=1)
        theta = np.concatenate([gate.theta for _, _, gate in gates])
        out, start = {}, 0
        for _, name, gate in gates:
            delta = np.empty(gate.n_units)
            for j in range(gate.n_units):
                g = start + j
                others = np.prod(np.where(masks == 1, theta, 1 - theta)[:, np.arange(len(theta)) != g], axis=1)
                signed = np.where(masks[:, g] == 1, 1.0, -1.0) * others
                delta[j] = signed @ mean_loss  # (E9)
            out[name] = (delta, np.ones(gate.n_units, dtype=bool))
            start += gate.n_units
        return out


def make_estimator(name: str, subset: int | None = 16, first_subset: int | None = None):
    """An estimator by name: ``"first-order"``, ``"removal"`` or ``"exact"``."""
    if name == "first-order":
        return FirstOrderEstimator()
    if name == "removal":
        return RemovalEstimator(subset, first_subset)
    if name == "exact":
        return ExactEstimator()
    raise ValueError(f"unknown estimator {name!r}; expected one of {', '.join(ESTIMATORS)}")
