"""2-D convolution by im2col + one GEMM. Derivation: docs/derivations/layers.md, (L7)–(L14)."""
from __future__ import annotations

from minibern import backend as B
from minibern.layers.base import Layer, check_dout, check_input, pair, positive_int
from minibern.layers.im2col import col2im, col_bytes, conv_output_size, im2col
from minibern.layers.init import init_weight

#: Default budget for one im2col buffer. Larger batches are processed in chunks.
DEFAULT_MAX_COL_BYTES = 1 << 30


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

    def forward(self, x):
        check_input(self, x, 4, "(N, C, H, W)")
        if x.shape[1] != self.params["W"].shape[1]:
            raise ValueError(
                f"Conv2D expects {self.params['W'].shape[1]} input channels, got x of shape "
                f"{tuple(x.shape)}; check in_channels or the previous layer's filters"
            )
        xp = B.get_array_module(x, self.params["W"])
        n, f, oh, ow = self.output_shape(x.shape)
        w2 = self.params["W"].reshape(f, -1)
        bias = self.params["b"].reshape(f, 1)
        chunks = self._chunks(x.shape, x.dtype.itemsize)
        y = xp.empty((n, f, oh, ow), dtype=x.dtype)
        self._x, self._col = x, None
        for start, stop in chunks:
            col = im2col(x[start:stop], self.kernel_size, self.stride, self.pad)  # (L7)
            y2 = w2 @ col + bias  # (L8)
            y[start:stop] = y2.reshape(f, stop - start, oh, ow).transpose(1, 0, 2, 3)
            if len(chunks) == 1:
                self._col = col
        return y

    def backward(self, dout):
        self._check_backward_ready(self._x)
        x = self._x
        n, f, oh, ow = self.output_shape(x.shape)
        check_dout(self, dout, (n, f, oh, ow))
        xp = B.get_array_module(dout, x)
        w2 = self.params["W"].reshape(f, -1)
        dw2 = xp.zeros_like(w2)
        db = xp.zeros_like(self.params["b"])
        dx = xp.empty_like(x)
        for start, stop in self._chunks(x.shape, x.dtype.itemsize):
            col = self._col if self._col is not None else im2col(
                x[start:stop], self.kernel_size, self.stride, self.pad)
            g2 = dout[start:stop].transpose(1, 0, 2, 3).reshape(f, -1)
            dw2 += g2 @ col.T  # (L9)
            db += g2.sum(axis=1)  # (L10)
            dcol = w2.T @ g2  # (L11)
            dx[start:stop] = col2im(dcol, (stop - start,) + tuple(x.shape[1:]),
                                    self.kernel_size, self.stride, self.pad)  # (L12)
        self.grads["W"] = dw2.reshape(self.params["W"].shape)
        self.grads["b"] = db
        return dx


__all__ = ["Conv2D", "DEFAULT_MAX_COL_BYTES"]
