"""Flatten: (N, C, H, W) -> (N, C*H*W). Derivation: docs/derivations/layers.md, (L17)."""
from __future__ import annotations

from minibern import backend as B
from minibern.layers.base import Layer, check_dout


class Flatten(Layer):
    r"""Reshape every example to a vector, C-order: index ``c*H*W + h*W + w``.

    Notes
    -----
    A reshape is a permutation-free relabelling, so its backward is the inverse reshape:

    .. math:: y_{n,\,(c,h,w)} = x_{n,c,h,w},\qquad
              \frac{\partial L}{\partial x_{n,c,h,w}} = \frac{\partial L}{\partial y_{n,(c,h,w)}}
              \tag{L17}
    """

    stateless_backward = True  # backward only returns dx

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x):
        B.require_float_array(x, "Flatten input")
        if x.ndim < 2:
            raise ValueError(f"Flatten expects (N, ...) with at least 2 axes, got {tuple(x.shape)}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)  # (L17)

    def backward(self, dout):
        self._check_backward_ready(self._shape)
        n_features = 1
        for size in self._shape[1:]:
            n_features *= size
        check_dout(self, dout, (self._shape[0], n_features))
        return dout.reshape(self._shape)  # (L17)

    # -- what the layer is (minibern.layers.base) ---------------------------------------------
    flattens = True
    op_kind = "flatten"

    def output_shape(self, x_shape) -> tuple:
        """(N, C·H·W) for an input of shape (N, C, H, W) (any trailing axes), by (L17)."""
        n_features = 1
        for size in x_shape[1:]:
            n_features *= int(size)
        return x_shape[0], n_features

    def export_op(self, name: str) -> dict:
        """``{"kind": "flatten", "name"}``: (N, C, H, W) -> (N, C·H·W), C-order (L17)."""
        return {"kind": "flatten", "name": name}
