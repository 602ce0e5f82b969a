"""Max pooling. Derivation: docs/derivations/layers.md, (L14)–(L16)."""
from __future__ import annotations

from minibern import backend as B
from minibern import kernels
from minibern.kernels import pool as fast_pool
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
    gradient to one input (a valid subgradient).

    The lines below are the reference: j* is kept as a small integer array, updated where a
    view is strictly larger than the running maximum. With the fast kernels (the default, see
    :mod:`minibern.kernels`; ``minibern.kernels.use("reference")`` or
    ``MINIBERN_KERNELS=reference`` switches) forward and backward hand the same equations to
    :mod:`minibern.kernels.pool` (contiguous planes, branch-free, threads), which gives the
    same numbers.
    """

    stateless_backward = True  # backward only returns dx

    def __init__(self, size: int = 2, stride: int | None = None):
        super().__init__()
        self.size = positive_int(size, "size")
        self.stride = positive_int(size if stride is None else stride, "stride")
        self._x_shape = None
        self._argmax = None

    def _views(self, oh, ow):
        """``(j, index)`` of the k² strided views: x[index] has the output's shape."""
        k, s = self.size, self.stride
        for ky in range(k):
            for kx in range(k):
                yield ky * k + kx, (slice(None), slice(None),
                                    slice(ky, ky + s * (oh - 1) + 1, s),
                                    slice(kx, kx + s * (ow - 1) + 1, s))

    def forward(self, x):
        check_input(self, x, 4, "(N, C, H, W)")
        xp = B.get_array_module(x)
        oh = conv_output_size(x.shape[2], self.size, self.stride, 0, "MaxPool2D")
        ow = conv_output_size(x.shape[3], self.size, self.stride, 0, "MaxPool2D")
        self._x_shape = x.shape
        if kernels.fast():
            y, self._argmax = fast_pool.forward(self, x, oh, ow)
            return y
        views = [x[index] for _, index in self._views(oh, ow)]
        y = views[0].copy()
        argmax = xp.zeros(y.shape, dtype=xp.int8 if len(views) < 128 else xp.int32)
        for j in range(1, len(views)):
            argmax = xp.where(views[j] > y, j, argmax)  # j*: a tie keeps the first offset
            y = xp.maximum(y, views[j])  # (L15)
        self._argmax = argmax
        return y

    def backward(self, dout):
        self._check_backward_ready(self._argmax)
        check_dout(self, dout, self._argmax.shape)
        if kernels.fast():
            return fast_pool.backward(self, dout, self._argmax, self._x_shape)
        xp = B.get_array_module(dout, self._argmax)
        dx = xp.zeros(self._x_shape, dtype=dout.dtype)
        for j, index in self._views(*self._argmax.shape[2:]):
            dx[index] += dout * (self._argmax == j)  # (L16)
        return dx

    # -- what the layer is (minibern.layers.base) ---------------------------------------------
    is_channelwise = True  # (L15) takes maxima within one channel: a deleted channel stays so
    op_kind = "maxpool"

    def output_shape(self, x_shape) -> tuple:
        """(N, C, OH, OW) for an input of shape (N, C, H, W), OH and OW by (L14) with p = 0."""
        n, c, h, w = x_shape
        return (n, c, conv_output_size(h, self.size, self.stride, 0, "MaxPool2D"),
                conv_output_size(w, self.size, self.stride, 0, "MaxPool2D"))

    def export_op(self, name: str) -> dict:
        """``{"kind": "maxpool", "name", "size", "stride"}`` (L15)."""
        return {"kind": "maxpool", "name": name, "size": self.size, "stride": self.stride}

    @classmethod
    def from_op(cls, op: dict) -> "MaxPool2D":
        return cls(int(op["size"]), int(op["stride"]))
