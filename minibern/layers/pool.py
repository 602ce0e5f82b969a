"""Max pooling. Derivation: docs/derivations/layers.md, (L14)–(L16)."""
from __future__ import annotations

from minibern import backend as B
from minibern import threads as T
from minibern.layers.base import Layer, check_dout, check_input, positive_int
from minibern.layers.im2col import conv_output_size


#: Scratch for the contiguous copies of the window views: examples are pooled in blocks whose
#: k² planes take at most this many bytes (always at least one example), per kernel thread
#: (:mod:`minibern.threads`).
PLANES_BYTES = 4 << 20


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

    **Cost.** Forward is an elementwise maximum over the k² strided views (never a reshape and
    a ``max(axis=...)`` reduction, which is many times slower). When the windows do not overlap
    the views are first copied into k² contiguous planes, block by block of examples (one pass
    over x, at most :data:`PLANES_BYTES` of scratch per kernel thread), so every comparison
    runs on contiguous memory. :math:`j^*` is kept as a small integer array (one byte per
    output for k² < 128): the last offset whose view was strictly larger than the running
    maximum, updated branch-free as ``max(j*, j·1[view_j > max])``. Backward
    writes ``dout · 1[j* = j]`` into each of the k² strided views of dx; when the windows tile
    the input exactly (s = k, H and W multiples of k, the LeNet case) every input is written
    once and dx needs no zero-fill and no ``+=``.
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
        n, c, h, w = x.shape
        oh = conv_output_size(h, self.size, self.stride, 0, "MaxPool2D")
        ow = conv_output_size(w, self.size, self.stride, 0, "MaxPool2D")
        if self.size == 1:
            self._x_shape = x.shape
            self._argmax = xp.zeros((n, c, oh, ow), dtype="int8")
            return x[next(self._views(oh, ow))[1]].copy()
        k2 = self.size ** 2
        index_type = xp.int8 if k2 < 128 else xp.int32
        out = xp.empty((n, c, oh, ow), dtype=x.dtype)
        argmax = xp.empty((n, c, oh, ow), dtype=index_type)
        if self.stride >= self.size:
            # windows do not overlap: copy the k² strided views of a block of examples into
            # contiguous planes (one pass over x; at most PLANES_BYTES of scratch per thread) so
            # every comparison runs on contiguous memory
            step = max(1, PLANES_BYTES // (k2 * c * oh * ow * x.dtype.itemsize))
        else:
            step = n

        def pool(start: int, stop: int) -> None:
            for b0 in range(start, stop, step):
                b1 = min(b0 + step, stop)
                views = [x[b0:b1][index] for _, index in self._views(oh, ow)]
                if self.stride >= self.size:
                    views = xp.stack(views)
                self._running_max(xp, views, out[b0:b1], argmax[b0:b1])

        T.over_blocks(pool, n, 2 * n * c * h * w * x.dtype.itemsize, xp)
        self._x_shape, self._argmax = x.shape, argmax
        return out

    @staticmethod
    def _running_max(xp, views, out, argmax) -> None:
        """out = max_j views[j] (L15) and argmax = the first j attaining it (L16)."""
        better = xp.greater(views[1], views[0])  # strict: a tie keeps the first offset
        xp.maximum(views[0], views[1], out=out)  # (L15)
        argmax[...] = better
        step = xp.empty_like(argmax)
        for j in range(2, len(views)):
            xp.greater(views[j], out, out=better)
            xp.maximum(out, views[j], out=out)  # (L15)
            # j* = the last j that beat the running maximum: j grows, so a max of j·better is
            # that index (branch-free; a masked copyto is several times slower here)
            xp.multiply(better, argmax.dtype.type(j), out=step)
            xp.maximum(argmax, step, out=argmax)

    def backward(self, dout):
        self._check_backward_ready(self._argmax)
        check_dout(self, dout, self._argmax.shape)
        xp = B.get_array_module(dout, self._argmax)
        n, c, h, w = self._x_shape
        oh, ow = self._argmax.shape[2:]
        k, s = self.size, self.stride
        tiled = s == k and h == k * oh and w == k * ow
        dx = xp.empty(self._x_shape, dtype=dout.dtype) if tiled else \
            xp.zeros(self._x_shape, dtype=dout.dtype)

        def unpool(b0: int, b1: int) -> None:
            grad, argmax, dx_block = dout[b0:b1], self._argmax[b0:b1], dx[b0:b1]
            for j, index in self._views(oh, ow):
                if tiled:  # every input sits in exactly one window: write, do not add
                    xp.multiply(grad, argmax == j, out=dx_block[index])  # (L16)
                else:
                    dx_block[index] += grad * (argmax == j)  # (L16), overlapping or ragged

        T.over_blocks(unpool, n, 2 * n * c * h * w * dout.dtype.itemsize, xp)
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
