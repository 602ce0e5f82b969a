r"""The fast Conv2D kernel: (L7)–(L12) of :class:`minibern.layers.Conv2D`, arranged for speed.
Derivation: docs/derivations/layers.md, "Channels-last columns", "Per-example blocks of (L7)",
"Cache blocks".

The reference (the layer's own lines) builds one (C·KH·KW, N·OH·OW) column matrix and runs one
GEMM per equation. This kernel computes the same products with four arrangements, each set by
an attribute of the layer:

**Column layout** (``layer.layout``: ``"auto"``, ``"channels_first"``, ``"channels_last"``).
``"channels_first"`` keeps the columns of (L7) per example as (N, C·KH·KW, OH·OW), so that
the GEMMs run one per example and read and write NCHW directly; ``"channels_last"`` is the
transposed (N·OH·OW, KH·KW·C) matrix of (L7b). ``"auto"`` (default) takes channels-last when
KW·C ≥ OW, i.e. when a kernel row over all channels is at least as long as an output row, so
the copies run over the longer contiguous stretch (LeNet-5: conv1 channel-major, conv2
channels-last).

In the channels-last layout the products are taken transposed, with the weight columns in
(ky, kx, c) order (:math:`W_r` = W transposed to (F, KH, KW, C), reshaped to (F, KH·KW·C); a
copy of F·C·KH·KW numbers per call, never cached: pruning may replace W):
:math:`Y_r = X_r W_r^\top` (N·OH·OW, F), :math:`\partial L/\partial W_r = G_2 X_r`,
:math:`\partial L/\partial X_r = G_2^\top W_r`, (L8b)–(L11b). The bias is added to the GEMM
output in place (contiguous rows), which is then copied to NCHW. (A single
``add(..., out=y)`` doing both is slower in NumPy: its iterator walks the broadcast bias.)

In the channel-major layout the columns of example n form the block :math:`X_n`
(C·KH·KW, OH·OW) of :math:`X_c`, and (L8)–(L11) split by example: :math:`Y_n = W_2 X_n`
(written straight into y[n]), :math:`\partial L/\partial W_2 = \sum_n G_n X_n^\top` with
:math:`G_n` = dout[n] as (F, OH·OW) (no transposed copy of dout),
:math:`\partial L/\partial X_n = W_2^\top G_n`. For LeNet-5's conv1 (K = 25, F = 20,
OH·OW = 576) these batched GEMMs are faster than one long-and-thin GEMM.

**Cache blocks** (``layer.block_bytes``, default :data:`DEFAULT_BLOCK_BYTES`): forward fills
the column buffer and runs its GEMM block by block of examples; backward runs (L11)–(L12)
block by block, so a block's column gradients are folded while still in cache.

**Budget chunks** (``layer.max_col_bytes``, default :data:`DEFAULT_MAX_COL_BYTES`): a batch
whose column buffer would exceed it is processed in chunks of examples, and the columns are
recomputed in backward instead of kept; if even one example exceeds it, forward refuses with
a ValueError.

**Threads**: each chunk's examples, and the weight gradient's columns or filters, are split
over the kernel threads (:mod:`minibern.kernels.threads`).
"""
from __future__ import annotations

from typing import NamedTuple

from minibern import backend as B
from minibern.kernels import threads as T
from minibern.kernels.im2col import col2im, col2im_rows, col_bytes, im2col, im2col_rows

#: Default budget for one im2col buffer. Larger batches are processed in chunks.
DEFAULT_MAX_COL_BYTES = 1 << 30

#: Examples are processed in blocks whose im2col columns take about this many bytes, so a
#: block's columns are still in cache when its GEMM (forward) or col2im (backward) reads them.
#: 4 MiB is 32 examples of LeNet-5's conv2 and 72 of conv1: fewer, larger GEMMs than 1 MiB
#: blocks, while a whole-batch pass would make col2im read its 12.8 MB of column gradients from
#: memory. The measured choice is in ``benchmarks/README.md`` (the kernels' history).
DEFAULT_BLOCK_BYTES = 4 << 20

#: Column layouts of ``Conv2D.layout`` (see :mod:`minibern.kernels.im2col`).
LAYOUTS = ("auto", "channels_first", "channels_last")


class Saved(NamedTuple):
    """What :func:`forward` keeps for :func:`backward`."""

    col: object  # the columns of a one-chunk batch, or None: backward unfolds x again
    rows: bool  # True: channels-last columns (L7b); False: per example (N, C·KH·KW, OH·OW)


def chunks(layer, x_shape, itemsize):
    """Example ranges whose im2col buffers each fit ``layer.max_col_bytes``."""
    n, c, _, _ = x_shape
    _, _, oh, ow = layer.output_shape(x_shape)
    kh, kw = layer.kernel_size
    per_example = col_bytes(1, c, kh, kw, oh, ow, itemsize)
    if per_example > layer.max_col_bytes:
        raise ValueError(
            f"Conv2D: one example's im2col buffer needs {per_example} bytes "
            f"(OH·OW·C·KH·KW·itemsize = {oh}·{ow}·{c}·{kh}·{kw}·{itemsize}), more than "
            f"max_col_bytes={layer.max_col_bytes}; raise max_col_bytes or use smaller inputs"
        )
    step = max(1, layer.max_col_bytes // per_example)
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _blocks(layer, start: int, stop: int, per_example: int):
    """Sub-ranges of examples [start, stop) whose columns take about ``layer.block_bytes``."""
    block = layer.block_bytes
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block_bytes must be a positive integer, got {block!r}")
    step = max(1, block // per_example)
    return [(b, min(b + step, stop)) for b in range(start, stop, step)]


def channels_last(layer, channels: int, ow: int) -> bool:
    """Whether ``layer.layout`` asks for the channels-last columns (L7b) here."""
    if layer.layout not in LAYOUTS:
        raise ValueError(f"Conv2D.layout must be one of {', '.join(LAYOUTS)}, "
                         f"got {layer.layout!r}")
    if layer.layout == "auto":
        return channels * layer.kernel_size[1] >= ow
    return layer.layout == "channels_last"


def _weight_matrix(weight, rows: bool):
    """W as (F, C·KH·KW) for the channel-major layout, (F, KH·KW·C) for channels-last."""
    f = weight.shape[0]
    return weight.transpose(0, 2, 3, 1).reshape(f, -1) if rows else weight.reshape(f, -1)


def forward(layer, x):
    """(L7)–(L8), chunk by chunk, cache block by cache block: y (N, F, OH, OW) and what
    backward needs (:class:`Saved`)."""
    xp = B.get_array_module(x, layer.params["W"])
    n, f, oh, ow = layer.output_shape(x.shape)
    c = x.shape[1]
    kh, kw = layer.kernel_size
    p = oh * ow
    rows = channels_last(layer, c, ow)
    w2 = _weight_matrix(layer.params["W"], rows)
    bias = layer.params["b"]
    ranges = chunks(layer, x.shape, x.dtype.itemsize)
    per_example = col_bytes(1, c, kh, kw, oh, ow, x.dtype.itemsize)
    y = xp.empty((n, f, oh, ow), dtype=x.dtype)
    y3 = y.reshape(n, f, p)
    kept = None
    for start, stop in ranges:
        m = stop - start
        if rows:  # (m·OH·OW, KH·KW·C), rows (n, oy, ox)
            col = xp.empty((m * p, kh * kw * c), dtype=x.dtype)
            col6 = col.reshape(m, oh, ow, kh, kw, c)
        else:  # (m, C·KH·KW, OH·OW): example n's block of (L7) is col[n]
            col = xp.empty((m, c * kh * kw, p), dtype=x.dtype)
            col6 = col.reshape(m, c, kh, kw, oh, ow).transpose(1, 2, 3, 0, 4, 5)

        def unfold_and_multiply(s0: int, s1: int) -> None:  # runs before the loop moves on
            """(L7)–(L8) for the chunk's examples s0..s1, cache block by cache block."""
            for b0, b1 in _blocks(layer, start + s0, start + s1, per_example):
                i0, i1 = b0 - start, b1 - start
                if rows:
                    im2col_rows(x[b0:b1], layer.kernel_size, layer.stride, layer.pad,
                                out=col6[i0:i1])  # (L7b)
                    y2 = col[i0 * p:i1 * p] @ w2.T  # (L8b): (block·OH·OW, F)
                    y2 += bias  # along contiguous rows of F numbers
                    y3[b0:b1] = y2.reshape(i1 - i0, p, f).transpose(0, 2, 1)  # to NCHW
                else:
                    im2col(x[b0:b1], layer.kernel_size, layer.stride, layer.pad,
                           out=col6[:, :, :, i0:i1])  # (L7)
                    xp.matmul(w2, col[i0:i1], out=y3[b0:b1])  # (L8), per example: NCHW
                    y3[b0:b1] += bias.reshape(f, 1)

        T.over_blocks(unfold_and_multiply, m, m * (per_example + f * p * x.dtype.itemsize),
                      xp, products=True)
        if len(ranges) == 1:
            kept = col
    return y, Saved(kept, rows)


def backward(layer, x, saved: Saved, dout, input_grad: bool):
    """``(∂L/∂W, ∂L/∂b, ∂L/∂x)`` by (L9)–(L12) from forward's :class:`Saved`; ∂L/∂x is None
    unless ``input_grad``."""
    xp = B.get_array_module(dout, x)
    n, f, oh, ow = layer.output_shape(x.shape)
    c = x.shape[1]
    kh, kw = layer.kernel_size
    p = oh * ow
    rows = saved.rows
    if rows:  # G_2 (F, N·OH·OW): one copy of dout, contiguous along each filter's row
        grads = xp.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(f, n * p)
        db = grads.sum(axis=1)  # (L10)
    else:  # per example, G_2's block is dout[n] as it is: (F, OH·OW)
        grads = dout.reshape(n, f, p)
        db = grads.sum(axis=2).sum(axis=0)  # (L10)
    dw2 = None
    dx = xp.empty_like(x) if input_grad else None
    per_example = col_bytes(1, c, kh, kw, oh, ow, x.dtype.itemsize)
    for start, stop in chunks(layer, x.shape, x.dtype.itemsize):
        col = saved.col if saved.col is not None else _unfold(layer, x[start:stop], rows)
        if rows:
            part = _weight_grad_by_columns(xp, grads[:, start * p:stop * p], col)  # (L9b)
            dw2 = part if dw2 is None else dw2 + part
        else:  # (L9) as a sum over each cache block's examples of G_n X_n^T
            for b0, b1 in _blocks(layer, start, stop, per_example):
                part = _weight_grad_by_filters(xp, grads[b0:b1],
                                               col[b0 - start:b1 - start])  # (L9)
                dw2 = part if dw2 is None else dw2 + part
        if input_grad:
            _input_gradient(layer, grads, rows, (start, stop), x.shape, dx)
    if rows:  # (F, KH·KW·C) back to (F, C, KH, KW)
        dw = xp.ascontiguousarray(dw2.reshape(f, kh, kw, c).transpose(0, 3, 1, 2))
    else:
        dw = dw2.reshape(layer.params["W"].shape)
    return dw, db, dx


def _unfold(layer, x, rows: bool):
    """The columns of a chunk ``x`` again, in forward's layout (a chunked batch keeps none)."""
    if rows:
        return im2col_rows(x, layer.kernel_size, layer.stride, layer.pad)
    xp = B.get_array_module(x)
    _, _, oh, ow = layer.output_shape(x.shape)
    m, c = x.shape[:2]
    kh, kw = layer.kernel_size
    col = xp.empty((m, c * kh * kw, oh * ow), dtype=x.dtype)
    im2col(x, layer.kernel_size, layer.stride, layer.pad,
           out=col.reshape(m, c, kh, kw, oh, ow).transpose(1, 2, 3, 0, 4, 5))
    return col


def _input_gradient(layer, grads, rows: bool, chunk, x_shape, dx) -> None:
    """(L11)–(L12) for the examples of ``chunk``, written into dx: split over the kernel
    threads, cache block by cache block."""
    xp = B.get_array_module(grads, dx)
    start, stop = chunk
    _, f, oh, ow = layer.output_shape(x_shape)
    c = x_shape[1]
    kh, kw = layer.kernel_size
    p = oh * ow
    w2 = _weight_matrix(layer.params["W"], rows)
    per_example = col_bytes(1, c, kh, kw, oh, ow, dx.dtype.itemsize)

    def input_gradient(s0: int, s1: int) -> None:
        """(L11)–(L12) for the chunk's examples s0..s1, cache block by cache block."""
        for b0, b1 in _blocks(layer, start + s0, start + s1, per_example):
            shape = (b1 - b0, c) + tuple(x_shape[2:])
            if rows:
                col2im_rows(grads[:, b0 * p:b1 * p].T @ w2, shape, layer.kernel_size,
                            layer.stride, layer.pad, out=dx[b0:b1])  # (L11b), (L12)
            else:
                dcol = xp.matmul(w2.T, grads[b0:b1])  # (L11), per example: (block, K, P)
                dcol6 = dcol.reshape(b1 - b0, c, kh, kw, oh, ow).transpose(1, 2, 3, 0, 4, 5)
                col2im(dcol6, shape, layer.kernel_size, layer.stride, layer.pad,
                       out=dx[b0:b1])  # (L12)

    m = stop - start
    T.over_blocks(input_gradient, m, m * (2 * per_example + f * p * dx.dtype.itemsize),
                  xp, products=True)


def _weight_grad_by_columns(xp, left, right):
    """G_2 X_r of (L9b), (F, K), from ``left`` = G_2 (F, P) and ``right`` = X_r (P, K), its
    columns split over the kernel threads: each keeps whole sums over the P positions."""
    out = xp.empty((left.shape[0], right.shape[1]), dtype=xp.result_type(left, right))

    def columns(k0: int, k1: int) -> None:
        xp.matmul(left, right[:, k0:k1], out=out[:, k0:k1])  # (L9b)

    T.over_blocks(columns, right.shape[1], (left.size + right.size) * right.itemsize, xp,
                  products=True)
    return out


def _weight_grad_by_filters(xp, grads, cols):
    """Σ_n G_n X_n^T of (L9) over a block of examples, (F, K), from G (block, F, P) and X
    (block, K, P); the filters split over the kernel threads."""
    out = xp.empty((grads.shape[1], cols.shape[1]), dtype=xp.result_type(grads, cols))

    def filters(f0: int, f1: int) -> None:
        xp.matmul(grads[:, f0:f1], cols.transpose(0, 2, 1)).sum(axis=0,
                                                                 out=out[f0:f1])  # (L9)

    T.over_blocks(filters, grads.shape[1], (grads.size + cols.size) * cols.itemsize, xp,
                  products=True)
    return out


__all__ = ["DEFAULT_BLOCK_BYTES", "DEFAULT_MAX_COL_BYTES", "LAYOUTS", "Saved", "backward",
           "channels_last", "chunks", "forward"]
