r"""The removal estimator's products of a flipped gate into its consumer, (E5)–(E5b), (E5′).

Derivation: docs/derivations/estimators.md, (E4)–(E8). A flip of gate i in example n changes the
gate's output by δ_{n,i} (E4); these functions turn the δ of every (example, gate) pair into the
change of the next linear layer's pre-activation (E5), or, for a gate right before the output
layer, straight into the flipped logits (E5′). :class:`~minibern.bernoulli.estimators.
RemovalEstimator` calls them.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.kernels.im2col import im2col
from minibern.losses import per_example_cross_entropy

#: Scratch per block of (example, gate) pairs in the batched products (E5a)–(E5b), bytes.
PAIR_BLOCK_BYTES = 4 * 2 ** 20


def output_layer_logits(layer, logits, change, pairs, rows, cols, visit_dev):
    """(E5′): a gate right before the output layer: the flipped logits of every pair,
    z_n + δ_{n,i} W[i, :], built classes-first, (C, P), so nothing but the loss is re-run."""
    xp = B.get_array_module(logits)
    logits_t = xp.ascontiguousarray(logits.T)  # (C, B)
    weight_t = xp.ascontiguousarray(layer.params["W"][visit_dev].T)  # (C, m)
    flipped = xp.take(weight_t, cols, axis=1)  # W[i, :] of every pair's gate, (C, P)
    flipped *= change.ravel()[pairs]
    flipped += xp.take(logits_t, rows, axis=1)  # (E5′)
    return flipped


def output_layer_losses(layer, logits, change, pairs, rows, cols, visit_dev, labels):
    """The per-pair losses of :func:`output_layer_logits`'s flipped logits, (P,)."""
    flipped = output_layer_logits(layer, logits, change, pairs, rows, cols, visit_dev)
    return per_example_cross_entropy(flipped, labels[rows], classes_first=True)


def linear_change(layer, change, rows, cols, visit_dev):
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
    if layer.op_kind == "dense" and change.ndim == 2:
        rows_of_w = xp.take(weight[visit_dev], cols, axis=0)  # W[i, :] of every pair's gate
        rows_of_w *= change[rows, cols][:, None]
        return rows_of_w  # (E5) dense
    n_pairs, itemsize = int(rows.shape[0]), weight.dtype.itemsize
    planes = change[rows, cols]  # δ_{n,i} of every pair, (P, H, W)
    units = xp.take(visit_dev, cols)  # the gate of every pair, its index in the layer
    if layer.op_kind == "dense":  # gate on conv filters, through Flatten
        size, width = planes.shape[1] * planes.shape[2], weight.shape[1]
        blocks = weight.reshape(-1, size, width)  # (n, H·W, M): unit i's rows
        planes = planes.reshape(n_pairs, 1, size)
        result = xp.empty((n_pairs, 1, width), dtype=weight.dtype)
        for start, stop in pair_blocks(n_pairs, size * width * itemsize):
            gathered = xp.take(blocks, units[start:stop], axis=0)  # (p, H·W, M)
            xp.matmul(planes[start:stop], gathered, out=result[start:stop])  # (E5a)
        return result.reshape(n_pairs, width)
    f, _, kh, kw = weight.shape  # Conv2D: each flipped plane against its filter slice
    _, _, oh, ow = layer.output_shape(change.shape)
    by_unit = xp.ascontiguousarray(weight.transpose(1, 0, 2, 3)).reshape(-1, f, kh * kw)
    result = xp.empty((n_pairs, f, oh * ow), dtype=weight.dtype)
    ranges = pair_blocks(n_pairs, kh * kw * (oh * ow + f) * itemsize)
    scratch = xp.empty((ranges[0][1], kh, kw, oh, ow), dtype=planes.dtype)
    for start, stop in ranges:
        col = scratch[:stop - start]  # (p, KH, KW, OH, OW); im2col fills its transpose
        im2col(planes[start:stop, None], (kh, kw), layer.stride, layer.pad,
               out=col.transpose(1, 2, 0, 3, 4)[None])
        gathered = xp.take(by_unit, units[start:stop], axis=0)  # (p, F, KH·KW)
        xp.matmul(gathered, col.reshape(stop - start, kh * kw, oh * ow),
                  out=result[start:stop])  # (E5b)
    return result.reshape(n_pairs, f, oh, ow)


def pair_blocks(n_pairs: int, bytes_per_pair: int) -> list:
    """(start, stop) ranges covering ``n_pairs`` pairs, each of at most
    :data:`PAIR_BLOCK_BYTES` of scratch (and at least one pair)."""
    step = max(1, PAIR_BLOCK_BYTES // max(bytes_per_pair, 1))
    return [(start, min(start + step, n_pairs)) for start in range(0, n_pairs, step)]
