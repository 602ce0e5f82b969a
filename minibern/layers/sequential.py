"""A chain of layers: forward in order, backward in reverse (the chain rule, (L0))."""
from __future__ import annotations

from minibern.layers.base import Layer


class Sequential(Layer):
    r"""Compose layers :math:`f = f_K \circ \dots \circ f_1`.

    Layers are named ``"<type><index>"`` (``dense0``, ``relu1``, ...) unless given as
    ``(name, layer)`` pairs. Parameters are listed by qualified name ``"<layer>.<param>"``.

    Notes
    -----
    Backward applies each layer's vector-Jacobian product in reverse order:

    .. math:: \frac{\partial L}{\partial h_{k-1}} = J_{f_k}(h_{k-1})^\top
              \frac{\partial L}{\partial h_k}                               \tag{L0}
    """

    def __init__(self, *layers):
        super().__init__()
        self.names: list[str] = []
        self.layers: list[Layer] = []
        for index, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (
                f"{type(item).__name__.lower()}{index}", item)
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential item {index} is {type(layer).__name__}, not a Layer")
            if name in self.names or "." in name:
                raise ValueError(f"layer name {name!r} is repeated or contains '.'; pick unique names")
            self.names.append(name)
            self.layers.append(layer)
        self.outputs: list = []

    def insert(self, position: int, name: str, layer: Layer) -> None:
        """Insert ``layer`` named ``name`` before position ``position`` (pruning's input map)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"{name!r} is {type(layer).__name__}, not a Layer")
        if name in self.names or "." in name:
            raise ValueError(f"layer name {name!r} is repeated or contains '.'; pick a unique name")
        self.names.insert(position, name)
        self.layers.insert(position, layer)
        self.outputs = []

    def replace(self, name: str, layer: Layer) -> None:
        """Put ``layer`` in the place of the layer named ``name`` (pruning's input map)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"{name!r} is {type(layer).__name__}, not a Layer")
        self.layers[self.names.index(name)] = layer
        self.outputs = []

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.layers[self.names.index(key)]
        return self.layers[key]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(zip(self.names, self.layers))

    def forward(self, x):
        """Run every layer; the outputs are kept in :attr:`outputs` (references, no copies)."""
        self.outputs = []
        for layer in self.layers:
            x = layer.forward(x)
            self.outputs.append(x)
        return x

    def train(self, mode: bool = True) -> "Sequential":
        """Set training mode (sampled gate masks) or, with ``mode=False``, evaluation mode."""
        self.training = mode
        for layer in self.layers:
            layer.training = mode
        return self

    def eval(self) -> "Sequential":
        """Evaluation mode: gates use the deterministic mask 1[θ ≥ ½]."""
        return self.train(False)

    def backward(self, dout, *, input_grad: bool = True):
        """Backpropagate ``dout`` through every layer; return ∂L/∂x.

        With ``input_grad=False`` (the training step: nobody needs the gradient of the data)
        the leading layers whose backward only computes dx are skipped, the first layer that
        keeps gradients or statistics runs :meth:`~Layer.param_backward` (Dense and Conv2D then
        skip their input-gradient GEMM), and None is returned.
        """
        if input_grad:
            for layer in reversed(self.layers):
                dout = layer.backward(dout)  # (L0)
            return dout
        first = next((k for k, layer in enumerate(self.layers) if not layer.stateless_backward),
                     None)
        if first is None:
            return None
        for layer in reversed(self.layers[first + 1:]):
            dout = layer.backward(dout)  # (L0)
        self.layers[first].param_backward(dout)
        return None

    def param_backward(self, dout) -> None:
        self.backward(dout, input_grad=False)

    def named_parameters(self) -> dict:
        """``{"<layer>.<param>": array}`` in layer order (the arrays themselves, not copies)."""
        return {f"{name}.{key}": value for name, layer in self
                for key, value in layer.params.items()}

    def named_gradients(self) -> dict:
        """``{"<layer>.<param>": gradient}`` from the last backward pass."""
        return {f"{name}.{key}": layer.grads[key] for name, layer in self
                for key in layer.params}

    @property
    def params(self) -> dict:
        return self.named_parameters()

    @params.setter
    def params(self, value) -> None:
        if value:
            raise AttributeError("set parameters on the layers, not on the Sequential")

    @property
    def grads(self) -> dict:
        return self.named_gradients()

    @grads.setter
    def grads(self, value) -> None:
        if value:
            raise AttributeError("gradients belong to the layers")

    def set_parameter(self, qualified_name: str, value) -> None:
        """Replace a parameter array by qualified name (used by pruning and checkpoints)."""
        layer_name, _, key = qualified_name.partition(".")
        layer = self[layer_name]
        if key not in layer.params:
            raise KeyError(f"{qualified_name!r}: layer {layer_name!r} has no parameter {key!r}")
        layer.params[key] = value

    def output_shape(self, x_shape) -> tuple:
        """The shape of the last layer's output for an input of shape ``x_shape``."""
        for layer in self.layers:
            x_shape = layer.output_shape(x_shape)
        return tuple(x_shape)

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(int(v.size) for v in self.named_parameters().values())

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({name}) {layer!r}" for name, layer in self)
        return f"Sequential(\n{inner}\n)"
