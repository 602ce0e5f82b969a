"""Fully connected layer. Derivation: docs/derivations/layers.md, equations (L1)–(L4)."""
from __future__ import annotations

from minibern import backend as B
from minibern import kernels
from minibern.kernels import dense as fast_dense
from minibern.layers.base import Layer, check_dout, check_input, positive_int
from minibern.layers.init import init_weight


class Dense(Layer):
    r"""Affine map ``y = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes D and M.
    rng : numpy.random.Generator or int, optional
        Host generator (or seed) for the initial weights; default seed 0.
    init : {"he", "glorot"}
        Initialisation scheme (see :mod:`minibern.layers.init`); ``init_scale`` multiplies it.
    dtype : str or dtype
        Parameter dtype, float32 by default.

    Notes
    -----
    Shapes: x (N, D), W (D, M), b (M,), y (N, M).

    .. math::
        Y = XW + \mathbf 1 b^\top                           \tag{L1}

        \frac{\partial L}{\partial W} = X^\top G,\qquad     \tag{L2}
        \frac{\partial L}{\partial b} = G^\top \mathbf 1,\qquad   \tag{L3}
        \frac{\partial L}{\partial X} = G W^\top            \tag{L4}

    where :math:`G = \partial L/\partial Y` is ``dout``.

    The lines below are the reference. With the fast kernels (the default, see
    :mod:`minibern.kernels`; ``minibern.kernels.use("reference")`` or
    ``MINIBERN_KERNELS=reference`` switches) forward and backward hand the same equations to
    :mod:`minibern.kernels.dense`, which splits the products over the kernel threads.
    """

    def __init__(self, in_features: int, out_features: int, *, rng=None, init: str = "he",
                 init_scale: float = 1.0, dtype=None):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        dtype = B.dtype_of(dtype)
        rng = B.make_rng(0 if rng is None else rng)
        self.params["W"] = init_weight(rng, (in_features, out_features), in_features,
                                       out_features, init, init_scale, dtype)
        self.params["b"] = B.zeros((out_features,), dtype)
        self.grads = {k: None for k in self.params}
        self._x = None

    def forward(self, x):
        check_input(self, x, 2, "(N, in_features)")
        if x.shape[1] != self.params["W"].shape[0]:
            raise ValueError(
                f"Dense expects {self.params['W'].shape[0]} input features, got x of shape "
                f"{tuple(x.shape)}; check the previous layer's output size"
            )
        self._x = x
        if kernels.fast():
            return fast_dense.forward(x, self.params["W"], self.params["b"])
        return x @ self.params["W"] + self.params["b"]  # (L1)

    def _backward(self, dout, input_grad: bool):
        """(L2)–(L3), and (L4) only if ``input_grad``: the first layer's input gradient is one
        GEMM nobody needs (:meth:`Layer.param_backward`)."""
        self._check_backward_ready(self._x)
        x, weight = self._x, self.params["W"]
        check_dout(self, dout, (x.shape[0], weight.shape[1]))
        if kernels.fast():
            self.grads["W"], self.grads["b"], dx = fast_dense.backward(x, weight, dout, input_grad)
            return dx
        self.grads["W"] = x.T @ dout  # (L2)
        self.grads["b"] = dout.sum(axis=0)  # (L3)
        return dout @ weight.T if input_grad else None  # (L4)

    # -- what the layer is (minibern.layers.base) ---------------------------------------------
    is_linear = True
    op_kind = "dense"

    @property
    def n_units_in(self) -> int:
        """D, the input features (rows of W)."""
        return int(self.params["W"].shape[0])

    @property
    def n_units_out(self) -> int:
        """M, the units (columns of W)."""
        return int(self.params["W"].shape[1])

    def output_shape(self, x_shape) -> tuple:
        """(N, M) for an input of shape (N, D), by (L1)."""
        return x_shape[0], int(self.params["W"].shape[1])

    def n_params(self, kept_in: int, kept_out: int) -> int:
        """D_k·M_k weights and M_k biases between D_k kept inputs and M_k kept units."""
        return kept_out * (kept_in + 1)

    def n_macs(self, kept_in: int, kept_out: int, x_shape=None) -> int:
        """D_k·M_k multiply–accumulates per example, (L1) on the kept units."""
        return kept_out * kept_in

    def keep_output_units(self, kept) -> list:
        """Keep units ``kept``: columns of W (D, M) and entries of b (M,)."""
        taken = [self.take_units("W", kept, axis=1),  # (P1)
                 self.take_units("b", kept, axis=0)]  # (P1)
        self.out_features = int(len(kept))
        return taken

    def keep_input_units(self, kept, block: int = 1) -> list:
        """Keep input units ``kept``: rows of W (D, M); behind a Flatten unit i is the block of
        rows i·block … i·block + block − 1 (block = H·W, C-order (L17))."""
        rows = (B.host.asarray(kept)[:, None] * block + B.host.arange(block)).ravel()  # (P3)
        taken = [self.take_units("W", rows, axis=0)]  # (P2); (P3) for block > 1
        self.in_features = int(rows.size)
        return taken

    def export_op(self, name: str) -> dict:
        """``{"kind": "dense", "name", "W" (D, M), "b" (M,)}`` as host arrays."""
        return {"kind": "dense", "name": name, "W": B.to_numpy(self.params["W"]),
                "b": B.to_numpy(self.params["b"])}

    @classmethod
    def from_op(cls, op: dict) -> "Dense":
        weight = op["W"]
        layer = cls(weight.shape[0], weight.shape[1], dtype=weight.dtype)
        layer.params = {"W": B.asarray(weight), "b": B.asarray(op["b"])}
        return layer
