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
    row/filter i of its weights (E5) — for conv filters one batched product over all pairs,
    (E5a)–(E5b) — and only the layers after that are re-run, on the (example, gate) pairs whose
    δ is non-zero. The last gate layer before the output layer is
    visited in full every step; earlier layers on a random subset of ``subset`` gates (unbiased
    for the gates it visits).
``exact``  (E9)
    Enumerates all 2^G joint masks (G ≤ :data:`MAX_EXACT_GATES`): the oracle for tests.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.topology import gate_layers, gate_sites
from minibern.kernels.im2col import im2col
from minibern.layers import Dense, Flatten, ReLU
from minibern.losses import per_example_cross_entropy

np = B.host

ESTIMATORS = ("first-order", "removal", "exact")
MAX_EXACT_GATES = 12
#: Scratch per block of (example, gate) pairs in the removal estimator's batched products
#: (E5a)–(E5b), bytes.
PAIR_BLOCK_BYTES = 4 * 2 ** 20


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
        # One copy of every layer's visited gates to the device and one of their sums back:
        # the transfers of a step do not grow with the layers' widths or the visits.
        bounds = np.cumsum([0] + [visit.size for visit in visits])
        sums = []
        if bounds[-1]:
            visits_dev = B.asarray(np.concatenate(visits))
            for found, start, stop in zip(sites, bounds[:-1], bounds[1:]):
                if stop > start:
                    sums.append(self._layer_sums(net, found, visits_dev[start:stop], labels,
                                                 base_loss))
            xp = B.get_array_module(sums[0])
            sums = B.to_numpy(xp.concatenate(sums)) / labels.shape[0]  # (E8)
        out = {}
        for found, visit, start, stop in zip(sites, visits, bounds[:-1], bounds[1:]):
            delta = np.zeros(found.gate.n_units)
            delta[visit] = sums[start:stop] if stop > start else 0.0
            visited = np.zeros(found.gate.n_units, dtype=bool)
            visited[visit] = True
            out[found.name] = (delta, visited)
        return out

    def _layer_sums(self, net, found, visit_dev, labels, base_loss):
        """Σ_n d_{n,i} over the batch for the visited gates ``visit_dev`` (device ints (m,)) of
        one gate layer: a device float64 array (m,), (E4)–(E8) without the 1/B."""
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
        rows, cols = xp.divmod(pairs, active.shape[1])
        per_pair = xp.zeros(active.shape, dtype=xp.float64)  # d_{n,i}, 0 where δ_{n,i} = 0
        if int(rows.shape[0]) == 0:
            return per_pair.sum(axis=0)
        if linear == len(net) - 1 and isinstance(net[linear], Dense) and a.ndim == 2:
            flipped = self._output_layer_losses(net[linear], net.outputs[linear], change, pairs,
                                                rows, cols, visit_dev, labels)  # (E5′)
        else:
            flipped = self._partial_forward_losses(net, linear, change, rows, cols, visit_dev,
                                                   labels)  # (E5)–(E6)
        per_pair.reshape(-1)[pairs] = sign.ravel()[pairs] * (flipped - base_loss[rows])  # (E7)
        return per_pair.sum(axis=0)  # Σ_n of (E8); a scatter, not bincount, whose output size
        # a GPU would read back first

    def _partial_forward_losses(self, net, linear, change, rows, cols, visit_dev, labels):
        """ℓ_n with gate i flipped, per pair: (E5) into the next linear layer, then (E6)."""
        xp = B.get_array_module(change)
        h = xp.take(net.outputs[linear], rows, axis=0)  # a fresh (P, ...) array
        h += self._linear_change(net[linear], change, rows, cols, visit_dev)  # (E5)
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
    def _linear_change(layer, change, rows, cols, visit_dev):
        """Change of the next linear layer's pre-activation for every pair, (E5), (E5a), (E5b).

        Parameters
        ----------
        layer : Dense or Conv2D
            The gate's consumer.
        change : array (N, m) or (N, m, H, W)
            δ of (E4) for the m visited gates.
        rows, cols : int arrays (P,)
            Pair p is example ``rows[p]`` and visited gate ``cols[p]`` (an index into
            ``visit_dev``, the visited gates' indices in the layer, (m,)).

        Returns
        -------
        array (P, M) for a Dense consumer (M outputs), (P, F, OH, OW) for a Conv2D (F filters).

        Notes
        -----
        All pairs at once, no loop over the visited gates. Through Flatten every pair's H·W
        block of consumer rows is gathered, (p, H·W, M), and multiplied by its flattened δ in
        one batched matrix product (E5a); for a Conv2D the flipped planes of all pairs are one
        one-channel batch, (p, 1, H, W), unfolded by im2col, and multiplied by each pair's
        filter slice gathered by gate, (p, F, KH·KW), (E5b). The scratch of a block of p pairs
        is p·H·W·M·itemsize bytes (Flatten) or p·KH·KW·(OH·OW + F)·itemsize bytes (Conv2D);
        blocks hold at most :data:`PAIR_BLOCK_BYTES` (one pair at least), e.g. 131 pairs of
        LeNet-5's conv2 gates into fc1 (16·500 floats each). The result itself is
        P·M·itemsize or P·F·OH·OW·itemsize bytes, the partial forward's input.
        """
        xp = B.get_array_module(change)
        weight = layer.params["W"]
        if isinstance(layer, Dense) and change.ndim == 2:
            rows_of_w = xp.take(weight[visit_dev], cols, axis=0)  # W[i, :] of every pair's gate
            rows_of_w *= change[rows, cols][:, None]
            return rows_of_w  # (E5) dense
        n_pairs, itemsize = int(rows.shape[0]), weight.dtype.itemsize
        planes = change[rows, cols]  # δ_{n,i} of every pair, (P, H, W)
        units = xp.take(visit_dev, cols)  # the gate of every pair, its index in the layer
        if isinstance(layer, Dense):  # gate on conv filters, through Flatten
            size, width = planes.shape[1] * planes.shape[2], weight.shape[1]
            blocks = weight.reshape(-1, size, width)  # (n, H·W, M): unit i's rows
            planes = planes.reshape(n_pairs, 1, size)
            result = xp.empty((n_pairs, 1, width), dtype=weight.dtype)
            for start, stop in _pair_blocks(n_pairs, size * width * itemsize):
                gathered = xp.take(blocks, units[start:stop], axis=0)  # (p, H·W, M)
                xp.matmul(planes[start:stop], gathered, out=result[start:stop])  # (E5a)
            return result.reshape(n_pairs, width)
        f, _, kh, kw = weight.shape  # Conv2D: each flipped plane against its filter slice
        _, _, oh, ow = layer.output_shape(change.shape)
        by_unit = xp.ascontiguousarray(weight.transpose(1, 0, 2, 3)).reshape(-1, f, kh * kw)
        result = xp.empty((n_pairs, f, oh * ow), dtype=weight.dtype)
        ranges = _pair_blocks(n_pairs, kh * kw * (oh * ow + f) * itemsize)
        scratch = xp.empty((ranges[0][1], kh, kw, oh, ow), dtype=planes.dtype)
        for start, stop in ranges:
            col = scratch[:stop - start]  # (p, KH, KW, OH, OW); im2col fills its transpose
            im2col(planes[start:stop, None], (kh, kw), layer.stride, layer.pad,
                   out=col.transpose(1, 2, 0, 3, 4)[None])
            gathered = xp.take(by_unit, units[start:stop], axis=0)  # (p, F, KH·KW)
            xp.matmul(gathered, col.reshape(stop - start, kh * kw, oh * ow),
                      out=result[start:stop])  # (E5b)
        return result.reshape(n_pairs, f, oh, ow)


def _pair_blocks(n_pairs: int, bytes_per_pair: int) -> list:
    """(start, stop) ranges covering ``n_pairs`` pairs, each of at most
    :data:`PAIR_BLOCK_BYTES` of scratch (and at least one pair)."""
    step = max(1, PAIR_BLOCK_BYTES // max(bytes_per_pair, 1))
    return [(start, min(start + step, n_pairs)) for start in range(0, n_pairs, step)]


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
