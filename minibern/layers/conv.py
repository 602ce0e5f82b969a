"""2-D convolution by im2col + one GEMM. Derivation: docs/derivations/layers.md, (L7)–(L14)."""
from __future__ import annotations

from minibern import backend as B
from minibern import threads as T
from minibern.layers.base import Layer, check_dout, check_input, pair, positive_int
from minibern.layers.im2col import (col2im, col2im_rows, col_bytes, conv_output_size, im2col,
                                    im2col_rows)
from minibern.layers.init import init_weight

#: Default budget for one im2col buffer. Larger batches are processed in chunks.
DEFAULT_MAX_COL_BYTES = 1 << 30

#: Examples are processed in blocks whose im2col columns take about this many bytes, so a
#: block's columns are still in cache when its GEMM (forward) or col2im (backward) reads them.
#: 4 MiB is 32 examples of LeNet-5's conv2 and 72 of conv1: fewer, larger GEMMs than 1 MiB
#: blocks, while a whole-batch pass would make col2im read its 12.8 MB of column gradients from
#: memory. The measured choice is in ``benchmarks/README.md`` (the kernels' history).
DEFAULT_BLOCK_BYTES = 4 << 20

#: Column layouts of :attr:`Conv2D.layout` (see :mod:`minibern.layers.im2col`).
LAYOUTS = ("auto", "channels_first", "channels_last")


class Conv2D(Layer):
    r"""Cross-correlation of NCHW inputs with F filters of shape (C, KH, KW).

    Parameters
    ----------
    in_channels, out_channels : int
        C and F.
    kernel_size : int or (KH, KW)
    stride, pad : int
        Stride s ≥ 1 and zero padding p ≥ 0 on both spatial axes.
    rng, init, init_scale, dtype
        As for :class:`~minibern.layers.Dense` (fan-in C·KH·KW).
    max_col_bytes : int
        Budget for the im2col buffer (default 1 GiB). A batch whose buffer would exceed it is
        processed in chunks of examples, and the columns are recomputed in backward instead of
        kept; if even one example exceeds it, forward refuses with a ValueError.

    Attributes
    ----------
    layout : {"auto", "channels_first", "channels_last"}
        Memory layout of the im2col matrix (the arithmetic is the same): ``"channels_first"``
        (L7), kept per example as (N, C·KH·KW, OH·OW) so that the GEMMs run one per example
        and read and write NCHW directly; ``"channels_last"`` (N·OH·OW, KH·KW·C), (L7b).
        ``"auto"``
        (default) takes channels-last when KW·C ≥ OW, i.e. when a kernel row over all channels
        is at least as long as an output row, so the copies run over the longer contiguous
        stretch (LeNet-5: conv1 channel-major, conv2 channels-last).
    block_bytes : int
        Cache block (default :data:`DEFAULT_BLOCK_BYTES`): forward fills the column buffer and
        runs its GEMM block by block of examples; backward runs (L11)–(L12) block by block.

    Notes
    -----
    Shapes: x (N, C, H, W), W (F, C, KH, KW), b (F,), y (N, F, OH, OW) with (L14).
    With :math:`W_2` = W reshaped to (F, C·KH·KW), :math:`X_c` = im2col(x) (L7) and
    :math:`G_2` = dout as (F, N·OH·OW):

    .. math::
        Y_2 = W_2 X_c + b\,\mathbf 1^\top                           \tag{L8}

        \frac{\partial L}{\partial W_2} = G_2 X_c^\top,\qquad        \tag{L9}
        \frac{\partial L}{\partial b} = G_2 \mathbf 1,\qquad         \tag{L10}
        \frac{\partial L}{\partial X_c} = W_2^\top G_2,\qquad        \tag{L11}
        \frac{\partial L}{\partial x} = \text{col2im}\!\left(\frac{\partial L}{\partial X_c}\right)  \tag{L12}

    In the channels-last layout the same products are taken transposed, with the weight
    columns in (ky, kx, c) order (:math:`W_r` = W transposed to (F, KH, KW, C), reshaped to
    (F, KH·KW·C); a copy of F·C·KH·KW numbers per call, never cached: pruning may replace W):
    :math:`Y_r = X_r W_r^\top` (N·OH·OW, F), :math:`\partial L/\partial W_r = G_2 X_r`,
    :math:`\partial L/\partial X_r = G_2^\top W_r`, (L8b)–(L11b). The bias is added to the
    GEMM output in place (contiguous rows), which is then copied to NCHW. (A single
    ``add(..., out=y)`` doing both is slower in NumPy: its iterator walks the broadcast bias.)

    In the channel-major layout the columns of example n form the block
    :math:`X_n` (C·KH·KW, OH·OW) of :math:`X_c`, and (L8)–(L11) split by example:
    :math:`Y_n = W_2 X_n` (written straight into y[n]), :math:`\partial L/\partial W_2 =
    \sum_n G_n X_n^\top` with :math:`G_n` = dout[n] as (F, OH·OW) (no transposed copy of
    dout), :math:`\partial L/\partial X_n = W_2^\top G_n`. For LeNet-5's conv1 (K = 25,
    F = 20, OH·OW = 576) these batched GEMMs are faster than one long-and-thin GEMM.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 pad: int = 0, *, rng=None, init: str = "he", init_scale: float = 1.0,
                 dtype=None, max_col_bytes: int = DEFAULT_MAX_COL_BYTES):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = positive_int(stride, "stride")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
        self.pad = pad
        self.max_col_bytes = positive_int(max_col_bytes, "max_col_bytes")
        self.layout = "auto"
        self.block_bytes = DEFAULT_BLOCK_BYTES
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        dtype = B.dtype_of(dtype)
        rng = B.make_rng(0 if rng is None else rng)
        self.params["W"] = init_weight(rng, (out_channels, in_channels, kh, kw), fan_in,
                                       out_channels * kh * kw, init, init_scale, dtype)
        self.params["b"] = B.zeros((out_channels,), dtype)
        self.grads = {k: None for k in self.params}
        self._x = None
        self._col = None
        self._rows = False

    def output_shape(self, x_shape):
        """(N, F, OH, OW) for an input of shape (N, C, H, W), by (L14)."""
        n, _, h, w = x_shape
        kh, kw = self.kernel_size
        oh = conv_output_size(h, kh, self.stride, self.pad, "Conv2D")
        ow = conv_output_size(w, kw, self.stride, self.pad, "Conv2D")
        return n, self.params["W"].shape[0], oh, ow

    def _chunks(self, x_shape, itemsize):
        """Example ranges whose im2col buffers each fit ``max_col_bytes``."""
        n, c, _, _ = x_shape
        _, _, oh, ow = self.output_shape(x_shape)
        kh, kw = self.kernel_size
        per_example = col_bytes(1, c, kh, kw, oh, ow, itemsize)
        if per_example > self.max_col_bytes:
            raise ValueError(
                f"Conv2D: one example's im2col buffer needs {per_example} bytes "
                f"(OH·OW·C·KH·KW·itemsize = {oh}·{ow}·{c}·{kh}·{kw}·{itemsize}), more than "
                f"max_col_bytes={self.max_col_bytes}; raise max_col_bytes or use smaller inputs"
            )
        step = max(1, self.max_col_bytes // per_example)
        return [(start, min(start + step, n)) for start in range(0, n, step)]

    def _blocks(self, start: int, stop: int, per_example: int):
        """Sub-ranges of examples [start, stop) whose columns take about ``block_bytes``."""
        step = max(1, positive_int(self.block_bytes, "block_bytes") // per_example)
        return [(b, min(b + step, stop)) for b in range(start, stop, step)]

    def _channels_last(self, channels: int, ow: int) -> bool:
        if self.layout not in LAYOUTS:
            raise ValueError(f"Conv2D.layout must be one of {', '.join(LAYOUTS)}, "
                             f"got {self.layout!r}")
        if self.layout == "auto":
            return channels * self.kernel_size[1] >= ow
        return self.layout == "channels_last"

    def _weight_matrix(self, rows: bool):
        """W as (F, C·KH·KW) for the channel-major layout, (F, KH·KW·C) for channels-last."""
        weight = self.params["W"]
        f = weight.shape[0]
        return weight.transpose(0, 2, 3, 1).reshape(f, -1) if rows else weight.reshape(f, -1)

    def forward(self, x):
        check_input(self, x, 4, "(N, C, H, W)")
        if x.shape[1] != self.params["W"].shape[1]:
            raise ValueError(
                f"Conv2D expects {self.params['W'].shape[1]} input channels, got x of shape "
                f"{tuple(x.shape)}; check in_channels or the previous layer's filters"
            )
        xp = B.get_array_module(x, self.params["W"])
        n, f, oh, ow = self.output_shape(x.shape)
        c = x.shape[1]
        kh, kw = self.kernel_size
        p = oh * ow
        rows = self._channels_last(c, ow)
        w2 = self._weight_matrix(rows)
        bias = self.params["b"]
        chunks = self._chunks(x.shape, x.dtype.itemsize)
        per_example = col_bytes(1, c, kh, kw, oh, ow, x.dtype.itemsize)
        y = xp.empty((n, f, oh, ow), dtype=x.dtype)
        y3 = y.reshape(n, f, p)
        self._x, self._col, self._rows = x, None, rows
        for start, stop in chunks:
            m = stop - start
            if rows:  # (m·OH·OW, KH·KW·C), rows (n, oy, ox)
                col = xp.empty((m * p, kh * kw * c), dtype=x.dtype)
                col6 = col.reshape(m, oh, ow, kh, kw, c)
            else:  # (m, C·KH·KW, OH·OW): example n's block of (L7) is col[n]
                col = xp.empty((m, c * kh * kw, p), dtype=x.dtype)
                col6 = col.reshape(m, c, kh, kw, oh, ow).transpose(1, 2, 3, 0, 4, 5)

            def unfold_and_multiply(s0: int, s1: int) -> None:  # runs before the loop moves on
                """(L7)–(L8) for the chunk's examples s0..s1, cache block by cache block."""
                for b0, b1 in self._blocks(start + s0, start + s1, per_example):
                    i0, i1 = b0 - start, b1 - start
                    if rows:
                        im2col_rows(x[b0:b1], self.kernel_size, self.stride, self.pad,
                                    out=col6[i0:i1])  # (L7b)
                        y2 = col[i0 * p:i1 * p] @ w2.T  # (L8b): (block·OH·OW, F)
                        y2 += bias  # along contiguous rows of F numbers
                        y3[b0:b1] = y2.reshape(i1 - i0, p, f).transpose(0, 2, 1)  # to NCHW
                    else:
                        im2col(x[b0:b1], self.kernel_size, self.stride, self.pad,
                               out=col6[:, :, :, i0:i1])  # (L7)
                        xp.matmul(w2, col[i0:i1], out=y3[b0:b1])  # (L8), per example: NCHW
                        y3[b0:b1] += bias.reshape(f, 1)

            T.over_blocks(unfold_and_multiply, m, m * (per_example + f * p * x.dtype.itemsize),
                          xp, products=True)
            if len(chunks) == 1:
                self._col = col
        return y

    def _backward(self, dout, input_grad: bool):
        """Weight and bias gradients (L9)–(L10), and the input gradient (L11)–(L12) only if
        ``input_grad`` (:meth:`Layer.param_backward` leaves it out)."""
        self._check_backward_ready(self._x)
        x = self._x
        n, f, oh, ow = self.output_shape(x.shape)
        check_dout(self, dout, (n, f, oh, ow))
        xp = B.get_array_module(dout, x)
        c = x.shape[1]
        kh, kw = self.kernel_size
        p = oh * ow
        rows = self._rows
        w2 = self._weight_matrix(rows)
        if rows:  # G_2 (F, N·OH·OW): one copy of dout, contiguous along each filter's row
            g2 = xp.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(f, n * p)
            db = g2.sum(axis=1)  # (L10)
        else:  # per example, G_2's block is dout[n] as it is: (F, OH·OW)
            g3 = dout.reshape(n, f, p)
            db = g3.sum(axis=2).sum(axis=0)  # (L10)
        dw2 = None
        dx = xp.empty_like(x) if input_grad else None
        per_example = col_bytes(1, c, kh, kw, oh, ow, x.dtype.itemsize)
        for start, stop in self._chunks(x.shape, x.dtype.itemsize):
            if self._col is not None:
                col = self._col
            elif rows:
                col = im2col_rows(x[start:stop], self.kernel_size, self.stride, self.pad)
            else:
                col = xp.empty((stop - start, c * kh * kw, p), dtype=x.dtype)
                im2col(x[start:stop], self.kernel_size, self.stride, self.pad,
                       out=col.reshape(stop - start, c, kh, kw, oh, ow).transpose(1, 2, 3, 0, 4, 5))
            if rows:
                part = self._weight_grad_by_columns(xp, g2[:, start * p:stop * p], col)  # (L9b)
                dw2 = part if dw2 is None else dw2 + part
            else:  # (L9) as a sum over each cache block's examples of G_n X_n^T
                for b0, b1 in self._blocks(start, stop, per_example):
                    part = self._weight_grad_by_filters(xp, g3[b0:b1],
                                                        col[b0 - start:b1 - start])  # (L9)
                    dw2 = part if dw2 is None else dw2 + part
            if not input_grad:
                continue

            def input_gradient(s0: int, s1: int) -> None:  # runs before the loop moves on
                """(L11)–(L12) for the chunk's examples s0..s1, cache block by cache block."""
                for b0, b1 in self._blocks(start + s0, start + s1, per_example):
                    shape = (b1 - b0, c) + tuple(x.shape[2:])
                    if rows:
                        col2im_rows(g2[:, b0 * p:b1 * p].T @ w2, shape, self.kernel_size,
                                    self.stride, self.pad, out=dx[b0:b1])  # (L11b), (L12)
                    else:
                        dcol = xp.matmul(w2.T, g3[b0:b1])  # (L11), per example: (block, K, P)
                        dcol6 = dcol.reshape(b1 - b0, c, kh, kw, oh, ow).transpose(
                            1, 2, 3, 0, 4, 5)
                        col2im(dcol6, shape, self.kernel_size, self.stride, self.pad,
                               out=dx[b0:b1])  # (L12)

            m = stop - start
            T.over_blocks(input_gradient, m, m * (2 * per_example + f * p * x.dtype.itemsize),
                          xp, products=True)
        if rows:  # (F, KH·KW·C) back to (F, C, KH, KW)
            dw = xp.ascontiguousarray(dw2.reshape(f, kh, kw, c).transpose(0, 3, 1, 2))
        else:
            dw = dw2.reshape(self.params["W"].shape)
        self.grads["W"] = dw
        self.grads["b"] = db
        return dx

    @staticmethod
    def _weight_grad_by_columns(xp, left, right):
        """G_2 X_r of (L9b), (F, K), from ``left`` = G_2 (F, P) and ``right`` = X_r (P, K), its
        columns split over the kernel threads: each keeps whole sums over the P positions."""
        out = xp.empty((left.shape[0], right.shape[1]), dtype=xp.result_type(left, right))

        def columns(k0: int, k1: int) -> None:
            xp.matmul(left, right[:, k0:k1], out=out[:, k0:k1])  # (L9b)

        T.over_blocks(columns, right.shape[1], (left.size + right.size) * right.itemsize, xp,
                      products=True)
        return out

    @staticmethod
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


    # -- what the layer is (minibern.layers.base; output_shape is above) ----------------------
    is_linear = True
    op_kind = "conv"

    @property
    def n_units_in(self) -> int:
        """C, the input channels (axis 1 of W)."""
        return int(self.params["W"].shape[1])

    @property
    def n_units_out(self) -> int:
        """F, the filters (axis 0 of W)."""
        return int(self.params["W"].shape[0])

    def n_params(self, kept_in: int, kept_out: int) -> int:
        """F_k·C_k·KH·KW weights and F_k biases between C_k kept channels and F_k kept filters."""
        kh, kw = self.kernel_size
        return kept_out * (kept_in * kh * kw + 1)

    def n_macs(self, kept_in: int, kept_out: int, x_shape) -> int:
        """F_k·C_k·KH·KW·OH·OW multiply–accumulates per example, (L8) on the kept channels and
        filters, OH and OW by (L14) for an input of shape ``x_shape``."""
        _, _, oh, ow = self.output_shape(x_shape)
        kh, kw = self.kernel_size
        return kept_out * kept_in * kh * kw * oh * ow

    def keep_output_units(self, kept) -> list:
        """Keep filters ``kept``: W[kept] of W (F, C, KH, KW) and b[kept]."""
        taken = [self.take_units("W", kept, axis=0),  # (P1)
                 self.take_units("b", kept, axis=0)]  # (P1)
        self.out_channels = int(len(kept))
        return taken

    def keep_input_units(self, kept, block: int = 1) -> list:
        """Keep input channels ``kept``: W[:, kept]. A channel is one unit (``block`` = 1)."""
        if block != 1:
            raise ValueError(f"Conv2D input units are channels (block 1), got block={block}; "
                             "a Flatten cannot stand before a Conv2D")
        taken = [self.take_units("W", kept, axis=1)]  # (P2)
        self.in_channels = int(len(kept))
        return taken

    def export_op(self, name: str) -> dict:
        """``{"kind": "conv", "name", "W" (F, C, KH, KW), "b" (F,), "stride", "pad"}``."""
        return {"kind": "conv", "name": name, "W": B.to_numpy(self.params["W"]),
                "b": B.to_numpy(self.params["b"]), "stride": self.stride, "pad": self.pad}

    @classmethod
    def from_op(cls, op: dict) -> "Conv2D":
        weight = op["W"]
        layer = cls(weight.shape[1], weight.shape[0], weight.shape[2:], stride=int(op["stride"]),
                    pad=int(op["pad"]), dtype=weight.dtype)
        layer.params = {"W": B.asarray(weight), "b": B.asarray(op["b"])}
        return layer


__all__ = ["Conv2D", "DEFAULT_BLOCK_BYTES", "DEFAULT_MAX_COL_BYTES", "LAYOUTS"]
