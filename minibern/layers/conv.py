"""2-D convolution by im2col + one GEMM. Derivation: docs/derivations/layers.md, (L7)–(L14)."""
from __future__ import annotations

from minibern import backend as B
from minibern import kernels
from minibern.kernels import conv as fast_conv
from minibern.layers.base import Layer, check_dout, check_input, pair, positive_int
from minibern.layers.im2col import col2im, conv_output_size, im2col
from minibern.layers.init import init_weight


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
        Budget for the fast kernel's im2col buffer (default 1 GiB): a larger batch is
        processed in chunks of examples; if even one example exceeds it, forward refuses with a
        ValueError. The reference ignores it.

    Attributes
    ----------
    layout : {"auto", "channels_first", "channels_last"}
        The fast kernel's column layout (default ``"auto"``); the arithmetic is the same.
    block_bytes : int
        The fast kernel's cache block (default ``minibern.kernels.conv.DEFAULT_BLOCK_BYTES``).

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

    The lines below are the reference. With the fast kernels (the default, see
    :mod:`minibern.kernels`; ``minibern.kernels.use("reference")`` or
    ``MINIBERN_KERNELS=reference`` switches) forward and backward hand the same equations to
    :mod:`minibern.kernels.conv`: channels-last or per-example columns (``layout``), cache
    blocks (``block_bytes``), budget chunks (``max_col_bytes``) and the kernel threads.
    Backward runs the kernels its forward ran.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 pad: int = 0, *, rng=None, init: str = "he", init_scale: float = 1.0,
                 dtype=None, max_col_bytes: int = fast_conv.DEFAULT_MAX_COL_BYTES):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = positive_int(stride, "stride")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
        self.pad = pad
        self.max_col_bytes = positive_int(max_col_bytes, "max_col_bytes")  # fast kernel only
        self.layout, self.block_bytes = "auto", fast_conv.DEFAULT_BLOCK_BYTES  # fast kernel only
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        dtype = B.dtype_of(dtype)
        rng = B.make_rng(0 if rng is None else rng)
        self.params["W"] = init_weight(rng, (out_channels, in_channels, kh, kw), fan_in,
                                       out_channels * kh * kw, init, init_scale, dtype)
        self.params["b"] = B.zeros((out_channels,), dtype)
        self.grads = {k: None for k in self.params}
        self._x = None
        self._col = None  # (L7)'s columns; with the fast kernel, what it saved
        self._fast = False  # whether forward ran the fast kernel

    def output_shape(self, x_shape):
        """(N, F, OH, OW) for an input of shape (N, C, H, W), by (L14)."""
        n, _, h, w = x_shape
        kh, kw = self.kernel_size
        oh = conv_output_size(h, kh, self.stride, self.pad, "Conv2D")
        ow = conv_output_size(w, kw, self.stride, self.pad, "Conv2D")
        return n, self.params["W"].shape[0], oh, ow

    def forward(self, x):
        check_input(self, x, 4, "(N, C, H, W)")
        if x.shape[1] != self.params["W"].shape[1]:
            raise ValueError(
                f"Conv2D expects {self.params['W'].shape[1]} input channels, got x of shape "
                f"{tuple(x.shape)}; check in_channels or the previous layer's filters"
            )
        self._x, self._fast = x, kernels.fast()
        if self._fast:
            y, self._col = fast_conv.forward(self, x)
            return y
        n, f, oh, ow = self.output_shape(x.shape)
        self._col = im2col(x, self.kernel_size, self.stride, self.pad)  # (L7): X_c
        w2 = self.params["W"].reshape(f, -1)  # W_2: (F, C·KH·KW)
        y2 = w2 @ self._col + self.params["b"].reshape(f, 1)  # (L8): (F, N·OH·OW)
        return y2.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)  # to (N, F, OH, OW)

    def _backward(self, dout, input_grad: bool):
        """Weight and bias gradients (L9)–(L10), and the input gradient (L11)–(L12) only if
        ``input_grad`` (:meth:`Layer.param_backward` leaves it out)."""
        self._check_backward_ready(self._x)
        x = self._x
        n, f, oh, ow = self.output_shape(x.shape)
        check_dout(self, dout, (n, f, oh, ow))
        if self._fast:
            self.grads["W"], self.grads["b"], dx = fast_conv.backward(self, x, self._col, dout,
                                                                      input_grad)
            return dx
        w2 = self.params["W"].reshape(f, -1)
        g2 = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # G_2: (F, N·OH·OW)
        self.grads["W"] = (g2 @ self._col.T).reshape(self.params["W"].shape)  # (L9)
        self.grads["b"] = g2.sum(axis=1)  # (L10)
        if not input_grad:
            return None
        dcol = w2.T @ g2  # (L11): (C·KH·KW, N·OH·OW)
        return col2im(dcol, x.shape, self.kernel_size, self.stride, self.pad)  # (L12)


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


__all__ = ["Conv2D"]
