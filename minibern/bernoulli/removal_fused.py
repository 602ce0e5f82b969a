r"""The removal estimator (E4)–(E8) of every gate layer in one pass: fewer array calls.

The same estimate as :class:`~minibern.bernoulli.estimators.RemovalEstimator` — the same gates
visited (the same draws of the run's generator), the same flips, the same (E5)–(E8) — arranged
so that the bookkeeping (δ, the pairs, the loss, the scatter-sum) is one call each for all gate
layers; the partial forward still costs a few calls per layer.
Read the reference first; this module is its speed path (docs/derivations/estimators.md,
"All gate layers in one pass").

1. The visited gates of *every* layer are one gate-major table: row j holds one visited gate's
   inputs a_{n,j} (and its ξ_{n,j}) over the batch, the layers' blocks stacked. δ of (E4), the
   non-zero pairs, their examples and gates are then one operation each for all layers.
2. The flipped activations travel as one stream through the network: at each Dense the pairs
   already in the stream are carried through it, and the pairs of the gate feeding it join,
   z_n + δ_{n,i} W[i, :] (E5), (E5′). ReLU, the later gates' masks (E1) and every Dense after
   that run once on the whole stream (E6).
3. One cross-entropy over the batch's and the stream's logits, one signed difference (E7) and
   one scatter-sum (E8), as in :func:`~minibern.bernoulli.estimators.pair_sums`.

Only the rounding differs from the reference: a matrix product over more rows (the pairs of
several layers together) may round a row differently in the last bit (BLAS picks its kernel by
the number of rows). So a run with this path is not the bit-for-bit twin of the reference run,
and the reference stays the default; tests hold the two to float64 agreement.

Networks: chains of Dense layers, ReLU and gates on dense activations (LeNet-300-100). A gate
on conv filters or one feeding a Conv2D raises NotImplementedError naming the fix.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.estimators import FUSED, RemovalEstimator, per_layer_estimates
from minibern.bernoulli.topology import gate_sites
from minibern.losses import per_example_cross_entropy

np = B.host


class FusedRemovalEstimator(RemovalEstimator):
    """(E4)–(E8) of :class:`RemovalEstimator`, all gate layers at once (this module's notes)."""

    def estimate(self, net, images, labels, rng=None, candidates=None) -> dict:
        """As :meth:`RemovalEstimator.estimate`: ``{gate name: (Δ/N (n,), visited (n,))}``."""
        if not net.outputs:
            raise RuntimeError("run net.forward on the batch before the removal estimator")
        sites = gate_sites(net)
        check_chain(net, sites)
        visits = self._visits(sites, rng, candidates)
        bounds = np.cumsum([0] + [visit.size for visit in visits])
        sums = np.zeros(bounds[-1])
        if bounds[-1]:
            sums = B.to_numpy(stream_sums(net, sites, visits, bounds, labels))
            sums /= labels.shape[0]  # (E8)
        return per_layer_estimates(sites, visits, bounds, sums)


FUSED["removal"] = FusedRemovalEstimator  # --fused-estimator


def stream_sums(net, sites, visits, bounds, labels):
    """Σ_n d_{n,i} of every visited gate, layer after layer: device float64 (bounds[-1],).

    ``visits``: per gate layer, host ints (m_k,), the visited gates' indices in the layer;
    ``bounds``: host ints (L + 1,), layer k's visited gates are columns bounds[k]:bounds[k + 1]
    of the per-pair grid (rows of the gate-major table); ``labels``: device ints (N,).
    """
    n = labels.shape[0]
    xp = B.get_array_module(labels)
    # one copy to the device: the visited gates (their index in the layer), then the
    # layers' first columns in the table, in the units of the gate-major pair index
    table = B.asarray(np.concatenate(visits + [bounds * n]))
    units_in_layer, first_pair = table[:bounds[-1]], table[bounds[-1]:]
    kept = [k for k, visit in enumerate(visits) if visit.size]
    inputs = xp.concatenate([_visited(sites[k].gate.last_input, visits[k], table, bounds[k]).T
                             for k in kept])  # a_{n,j}, (Σm, N)
    masks = xp.concatenate([_visited(sites[k].gate.mask, visits[k], table, bounds[k]).T
                            for k in kept])  # ξ_{n,j}, (Σm, N)
    sign = 1 - 2 * masks  # +1: the flip turns the gate on; −1: off                    (E4)
    change = inputs * sign  # δ_{n,j}                                                   (E4)
    pairs = xp.flatnonzero(change)  # gate-major: layer by layer, each gate's examples in order
    cols, rows = xp.divmod(pairs, n)  # the pair's gate (a table row, a per_pair column), example
    delta, signs = change.ravel()[pairs], sign.ravel()[pairs]
    units = xp.take(units_in_layer, cols)
    # where each layer's pairs start and end (one copy of len(sites) + 1 numbers to the host)
    splits = B.to_numpy(xp.searchsorted(pairs, first_pair)).tolist()
    if splits[-1] == 0:
        return xp.zeros(bounds[-1], dtype=xp.float64)
    logits = _stream_logits(net, sites, splits, rows, delta, units)  # (N + P, C)
    losses = per_example_cross_entropy(
        logits, xp.concatenate([labels, xp.take(labels, rows)]))  # ℓ_n, then per pair (E6)
    signed = signs * (losses[n:] - xp.take(losses, rows))  # (E7)
    per_pair = xp.zeros((n, int(bounds[-1])), dtype=xp.float64)
    per_pair[rows, cols] = signed  # d_{n,i}, 0 where δ_{n,i} = 0
    return per_pair.sum(axis=0)  # Σ_n of (E8)


def _visited(values, visit, table, start):
    """The visited columns of a gate layer's (N, n) ``values``: all of them when every gate
    is visited (no gather), else one gather by the device copy of the visits."""
    if visit.size == values.shape[1]:
        return values
    return B.get_array_module(values).take(values, table[start:start + visit.size], axis=1)


def _stream_logits(net, sites, splits, rows, delta, units):
    """The batch's logits, then every pair's flipped logits, (N + P, C): (E5), (E5′), (E6).

    ``splits``: host ints (L + 1,), layer k's pairs are splits[k]:splits[k + 1]; ``rows``,
    ``units``: device ints (P,), each pair's example and gate (its index in the layer);
    ``delta``: device (P,), each pair's δ of (E4).

    Pairs are gate-major and layers in order, so after the pairs of gate layers 0..k have
    joined, the stream holds pairs[0 : splits[k + 1]] in order and its examples are
    rows[: splits[k + 1]].
    """
    xp = B.get_array_module(rows)
    joining = {found.consumer: k for k, found in enumerate(sites)}
    stream, joined, last = None, 0, len(net) - 1
    for index in range(min(joining), len(net)):
        layer = net[index]
        if layer.is_linear:
            parts = [] if stream is None else [_dense(layer, stream)]
            if index in joining:
                k = joining[index]
                block = slice(splits[k], splits[k + 1])
                flipped = xp.take(layer.params["W"], units[block], axis=0)  # W[i, :] per pair
                flipped *= delta[block, None]
                flipped += xp.take(net.outputs[index], rows[block], axis=0)  # (E5), (E5′)
                parts.append(flipped)
                joined = splits[k + 1]
            if index == last:
                parts.insert(0, net.outputs[index])  # the batch's own logits first
            stream = xp.concatenate(parts) if len(parts) > 1 else parts[0]
        elif stream is None:
            continue
        elif layer.is_gate:
            if not layer.is_identity:
                stream *= xp.take(layer.mask, rows[:joined], axis=0)  # (E1)
        else:  # ReLU (check_chain allows nothing else): values only, in place
            xp.maximum(stream, B.shared_zeros_like(stream), out=stream)  # (L5)
    return stream


def _dense(layer, h):
    """(L1) on the stream, values only: h W + b."""
    xp = B.get_array_module(h)
    out = xp.matmul(h, layer.params["W"])
    out += layer.params["b"]
    return out


def check_chain(net, sites) -> None:
    """The one-pass estimate needs every gate on dense activations right before a Dense, and
    only Dense, ReLU and gates from the first such Dense on; NotImplementedError otherwise."""
    if not sites:
        return
    for found in sites:
        consumer = None if found.consumer is None else net[found.consumer]
        if consumer is None or consumer.op_kind != "dense" or found.downstream \
                or found.gate.last_input.ndim != 2:
            raise NotImplementedError(
                f"the fused removal estimator runs chains of Dense layers; gate {found.name!r} "
                "is on conv filters or not right before a Dense. Leave --fused-estimator off "
                "for this model (e.g. LeNet-5): the reference removal estimator handles it")
    start = min(found.consumer for found in sites)
    for index in range(start, len(net)):
        layer = net[index]
        if not (layer.is_gate or layer.op_kind in ("dense", "relu")):
            raise NotImplementedError(
                f"the fused removal estimator runs Dense, ReLU and gates after the first gate's "
                f"consumer, not {type(layer).__name__}; leave --fused-estimator off")
