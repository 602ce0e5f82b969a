"""Elementwise activations. Derivation: docs/derivations/layers.md, (L5)–(L6)."""
from __future__ import annotations

from minibern import backend as B
from minibern.layers.base import Layer, check_dout


class ReLU(Layer):
    r"""Rectified linear unit, elementwise on any shape.

    Notes
    -----
    .. math::
        y = \max(x, 0)                                      \tag{L5}

        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\,\mathbb 1[x > 0]   \tag{L6}

    The kink at 0 takes the subgradient 0. The maximum is taken against a shared zero array
    of x's shape (:func:`minibern.backend.shared_zeros_like`), not the scalar 0: NumPy's
    scalar loop is slower (``benchmarks/bench_kernels.py``; results in ``benchmarks/README.md``).
    """

    stateless_backward = True  # backward only returns dx

    def __init__(self):
        super().__init__()
        self._mask = None

    def forward(self, x):
        B.require_float_array(x, "ReLU input")
        xp = B.get_array_module(x)
        self._mask = x > 0
        return xp.maximum(x, B.shared_zeros_like(x))  # (L5)

    def backward(self, dout):
        self._check_backward_ready(self._mask)
        check_dout(self, dout, self._mask.shape)
        return dout * self._mask  # (L6)

    # -- what the layer is (minibern.layers.base; output_shape: the input's) -------------------
    is_channelwise = True  # (L5) acts on every entry alone: a deleted channel stays deleted
    op_kind = "relu"

    def export_op(self, name: str) -> dict:
        """``{"kind": "relu", "name"}``: y = max(x, 0) (L5)."""
        return {"kind": "relu", "name": name}
