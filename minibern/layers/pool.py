"""Max pooling. Derivation: docs/derivations/layers.md, (L14)–(L16)."""
from __future__ import annotations

from minibern import backend as B
from minibern.layers.base import Layer, check_dout, check_input, positive_int
from minibern.layers.im2col import conv_output_size


class MaxPool2D(Layer):
    r"""Max over size×size windows of an (N, C, H, W) input, moved by ``stride``.

    Parameters
    ----------
    size : int
        Window side k (default 2).
    stride : int, optional
        Step s (default: ``size``, non-overlapping windows). Rows/columns that do not fill a
        whole window are dropped (floor in (L14), with p = 0).

    Notes
    -----
    With the window offsets :math:`(k_y, k_x)` enumerated as :math:`j = k_y k + k_x`:

    .. math::
        y[n,c,o_y,o_x] = \max_{j} x[n,c,o_y s + k_y, o_x s + k_x]           \tag{L15}

        \frac{\partial L}{\partial x[n,c,o_y s + k_y, o_x s + k_x]}
          \mathrel{+}= \frac{\partial L}{\partial y[n,c,o_y,o_x]}\;\mathbb 1[j = j^*(n,c,o_y,o_x)]  \tag{L16}

    where :math:`j^*` is the *first* offset attaining the maximum: a tie sends the whole
    gradient to one input (a valid subgradient). The forward pass is an elementwise maximum
    over the k² strided views, keeping :math:`j^*` as a small integer array for backward.
    """

    def __init__(self, size: int = 2, stride: int | None = None):
        super().__init__()
        self.size = positive_int(size, "size")
        self.stride = positive_int(size if stride is None else stride, "stride")
        self._x_shape = None
        self._argmax = None

    def _views(self, x, oh, ow):
        k, s = self.size, self.stride
        for ky in range(k):
            for kx in range(k):
                yield ky * k + kx, (slice(None), slice(None),
                                    slice(ky, ky + s * oh, s), slice(kx, kx + s * ow, s))

    def forward(self, x):
        check_input(self, x, 4, "(N, C, H, W)")
        xp = B.get_array_module(x)
        n, c, h, w = x.shape
        oh = conv_output_size(h, self.size, self.stride, 0, "MaxPool2D")
        ow = conv_output_size(w, self.size, self.stride, 0, "MaxPool2D")
        out = None
        argmax = xp.zeros((n, c, oh, ow), dtype="int8" if self.size ** 2 < 128 else "int32")
        for j, index in self._views(x, oh, ow):
            view = x[index]
            if out is None:
                out = view.copy()
                continue
            better = view > out  # strict: ties keep the first offset, (L16)
            xp.maximum(out, view, out=out)  # (L15)
            argmax[better] = j
        self._x_shape, self._argmax = x.shape, argmax
        return out

    def backward(self, dout):
        self._check_backward_ready(self._argmax)
        check_dout(self, dout, self._argmax.shape)
        xp = B.get_array_module(dout, self._argmax)
        oh, ow = self._argmax.shape[2:]
        dx = xp.zeros(self._x_shape, dtype=dout.dtype)
        zero = dout.dtype.type(0)
        for j, index in self._views(dx, oh, ow):
            dx[index] += xp.where(self._argmax == j, dout, zero)  # (L16)
        return dx
