"""Keep a subset of input features: the index map left by pruned input gates.

Derivation: docs/derivations/layers.md, (L20)–(L21).
"""
from __future__ import annotations

from minibern import backend as B
from minibern.layers.base import Layer, check_dout, positive_int

np = B.host


class SelectFeatures(Layer):
    r"""``y = x[:, index]``: keep the features listed in ``index`` (in that order).

    Physical pruning of input gates removes columns from the first weight matrix; this layer
    keeps the map from the raw inputs (e.g. the 784 MNIST pixels) to the kept ones, so a pruned
    network still takes raw inputs.

    Parameters
    ----------
    index : sequence of int (K,)
        Distinct feature indices into the raw input, each in [0, in_features).
    in_features : int
        D, the width of the raw input.

    Notes
    -----
    Shapes: x (N, D), y (N, K). With distinct indices the map is a selection matrix
    :math:`S \in \{0,1\}^{D\times K}`, :math:`S_{d k} = 1[d = \text{index}_k]`:

    .. math::
        y = x S, \qquad y_{n,k} = x_{n,\text{index}_k}                          \tag{L20}

        \frac{\partial L}{\partial x} = G S^\top,\qquad
        \frac{\partial L}{\partial x_{n,d}} = \sum_k 1[d = \text{index}_k]\, G_{n,k}  \tag{L21}

    i.e. a scatter of ``dout`` into zeros; features not kept get gradient 0.
    """

    stateless_backward = True  # backward only returns dx

    def __init__(self, index, in_features: int):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        index = np.asarray(index)
        if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must be a non-empty 1-D integer array, got {index!r}")
        if index.min() < 0 or index.max() >= in_features or np.unique(index).size != index.size:
            raise ValueError(f"index must hold distinct features in [0, {in_features}); "
                             f"got min {index.min()}, max {index.max()}, {index.size} entries")
        self.index = index.astype(np.int64)  # host copy: what checkpoints and exports save
        self._index = B.asarray(self.index)
        self._n = None

    def forward(self, x):
        B.require_float_array(x, "SelectFeatures input")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"SelectFeatures expects (N, {self.in_features}) raw inputs, got "
                             f"{tuple(x.shape)}; pass the unpruned input")
        self._n = x.shape[0]
        return x[:, self._index]  # (L20)

    def backward(self, dout):
        self._check_backward_ready(self._n)
        check_dout(self, dout, (self._n, self.index.size))
        xp = B.get_array_module(dout)
        dx = xp.zeros((self._n, self.in_features), dtype=dout.dtype)
        dx[:, self._index] = dout  # (L21)
        return dx

    def __repr__(self) -> str:
        return f"SelectFeatures({self.index.size} of {self.in_features})"

    # -- what the layer is (minibern.layers.base) ---------------------------------------------
    selects_inputs = True
    op_kind = "select"

    def output_shape(self, x_shape) -> tuple:
        """(N, K) for raw inputs of shape (N, D), by (L20)."""
        return x_shape[0], int(self.index.size)

    def keep_output_units(self, kept) -> list:
        """Keep the selected features ``kept`` (positions in ``index``): index ← index[kept], so
        the map from the raw inputs composes with the removal (P4). No parameters are sliced."""
        self.index = self.index[B.host.asarray(kept)]  # (P4)
        self._index = B.asarray(self.index)
        return []

    def export_op(self, name: str) -> dict:
        """``{"kind": "select", "name", "index" int64 (K,), "in_features"}`` (L20)."""
        return {"kind": "select", "name": name, "index": self.index.copy(),
                "in_features": self.in_features}

    @classmethod
    def from_op(cls, op: dict) -> "SelectFeatures":
        return cls(op["index"], int(op["in_features"]))
