"""The layer protocol and the checks every layer shares.

A layer holds ``params`` and ``grads``, two dicts with the same keys (``"W"``, ``"b"``);
``forward(x)`` keeps what ``backward`` needs; ``backward(dout)`` returns ``dx`` and
*overwrites* ``grads`` (gradients never accumulate across calls). Neither method writes into
its argument. ``param_backward(dout)`` is backward for a layer whose input gradient nobody
needs (the first layer of a network reads the data): it fills ``grads`` and returns None.
"""
from __future__ import annotations

from minibern import backend as B


class Layer:
    """Base class: a differentiable map ``y = f(x; params)`` with a hand-written backward."""

    #: False in evaluation mode (only layers with randomness, such as gates, look at it).
    training = True

    #: True for layers whose backward does nothing but return dx (no parameter gradients, no
    #: statistics): a Sequential asked for no input gradient skips such leading layers.
    stateless_backward = False

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        """∂L/∂x for ``dout`` = ∂L/∂y; overwrites ``grads``. A layer implements this, or
        :meth:`_backward` when leaving out ∂L/∂x saves work (Dense, Conv2D: one GEMM)."""
        return self._backward(dout, input_grad=True)

    def param_backward(self, dout) -> None:
        """Backward when nobody needs ∂L/∂x (the layer reads the data): fill ``grads`` (and any
        statistics a layer keeps) and return None."""
        self._backward(dout, input_grad=False)

    def _backward(self, dout, input_grad: bool):
        """The backward pass, ∂L/∂x computed (and returned) only if ``input_grad``. This default,
        for layers that implement :meth:`backward` itself, runs it and drops dx."""
        if type(self).backward is Layer.backward:
            raise NotImplementedError(f"{type(self).__name__} implements neither backward nor "
                                      "_backward")
        dx = self.backward(dout)
        return dx if input_grad else None

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"

    def set_parameter(self, name: str, value) -> None:
        """Replace parameter ``name`` by a new array (gradient checks, pruning, checkpoints)."""
        if name not in self.params:
            raise KeyError(f"{type(self).__name__} has no parameter {name!r}; it has {list(self.params)}")
        self.params[name] = value

    @property
    def dtype(self):
        """The dtype of the parameters (None for a layer without parameters)."""
        for value in self.params.values():
            return value.dtype
        return None

    def _check_backward_ready(self, cached) -> None:
        if cached is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward was called before forward; call forward(x) first"
            )


def check_input(layer: Layer, x, ndim: int, layout: str):
    """Validate a layer input: a floating array of rank ``ndim`` whose dtype matches the layer.

    ``layout`` names the axes for the message, e.g. ``"(N, C, H, W)"``.
    """
    name = type(layer).__name__
    B.require_float_array(x, f"{name} input")
    if x.ndim != ndim:
        raise ValueError(
            f"{name} expects a {ndim}-D input {layout}, got shape {tuple(x.shape)}; "
            + ("flatten it first (layers.Flatten)" if ndim == 2 and x.ndim > 2
               else "reshape your data to that layout")
        )
    dtype = layer.dtype
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} holds {dtype} parameters but got a {x.dtype} input; convert the input with "
            f"x.astype('{dtype}') or build the layer with dtype='{x.dtype}'"
        )
    return x


def check_dout(layer: Layer, dout, expected_shape) -> None:
    """Validate the upstream gradient against the shape the forward pass produced."""
    if tuple(dout.shape) != tuple(expected_shape):
        raise ValueError(
            f"{type(layer).__name__}.backward got dout of shape {tuple(dout.shape)}, expected "
            f"{tuple(expected_shape)} (the shape of the last forward output)"
        )


def positive_int(value, name: str) -> int:
    """``value`` as an int, or a ValueError naming it if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def pair(value, name: str) -> tuple[int, int]:
    """An int or an (h, w) pair of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
    return positive_int(value[0], name), positive_int(value[1], name)
