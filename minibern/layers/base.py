"""The layer protocol and the checks every layer shares.

A layer holds ``params`` and ``grads``, two dicts with the same keys (``"W"``, ``"b"``);
``forward(x)`` keeps what ``backward`` needs; ``backward(dout)`` returns ``dx`` and
*overwrites* ``grads`` (gradients never accumulate across calls). Neither method writes into
its argument. ``param_backward(dout)`` is backward for a layer whose input gradient nobody
needs (the first layer of a network reads the data): it fills ``grads`` and returns None.

Layers also say what they are, so that the walks over a network (where the gates sit, physical
pruning, export, the size counts) ask the layer instead of testing its class:

==========================  ===================================================================
``output_shape(x_shape)``   the shape ``forward`` returns for an input of shape ``x_shape``
``is_linear``               Dense, Conv2D: weights W joining input units (features, channels)
                            to output units (units, filters); a gate sits behind the output
                            units and feeds the input units of the next one
``is_channelwise``          ReLU, MaxPool2D: each channel is mapped on its own, so deleting a
                            channel before the layer deletes the same channel after it
``flattens``                Flatten: channel c becomes the block of H·W features c·H·W … (L17)
``selects_inputs``          SelectFeatures: the output units are chosen raw input features
``is_gate``                 the Bernoulli gates of :mod:`minibern.bernoulli` (the engine has none)
``n_params``, ``n_macs``    parameters and multiply–accumulates between kept units (linear)
``keep_output_units``,      physical pruning of output units (P1), (P4) and of input units
``keep_input_units``        (P2)–(P3); they return what they sliced, so the optimiser's state
                            can follow (P5) (docs/derivations/pruning.md)
``export_op``, ``from_op``  the layer as a record of host arrays (``op_kind``) and back
                            (:mod:`minibern.bernoulli.export`)
==========================  ===================================================================
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

    # -- what the layer is (module docstring) -------------------------------------------------
    is_linear = False
    is_channelwise = False
    flattens = False
    selects_inputs = False
    is_gate = False

    #: The ``kind`` of the layer's export record; None for a layer export does not know.
    op_kind = None

    def output_shape(self, x_shape) -> tuple:
        """The shape of ``forward(x)`` for ``x`` of shape ``x_shape``: by default the same
        (elementwise layers: ReLU, gates)."""
        return tuple(x_shape)

    def export_op(self, name: str) -> dict:
        """The layer as an export record ``{"kind": op_kind, "name": name, ...host values}``."""
        raise ValueError(f"layer {name!r} is a {type(self).__name__}, which export does not know; "
                         "supported: Dense, Conv2D, MaxPool2D, ReLU, Flatten, SelectFeatures, "
                         "BernoulliGate")

    @classmethod
    def from_op(cls, op: dict) -> "Layer":
        """The layer an export record describes (host arrays are moved to the backend). This
        default serves layers without parameters or settings (ReLU, Flatten)."""
        return cls()

    def n_params(self, kept_in: int, kept_out: int) -> int:
        """Weights and biases joining ``kept_in`` input units to ``kept_out`` output units
        (linear layers)."""
        raise TypeError(f"{type(self).__name__} has no weights between units")

    def n_macs(self, kept_in: int, kept_out: int, x_shape) -> int:
        """Multiply–accumulates per example between ``kept_in`` input units and ``kept_out``
        output units, for one example of shape ``x_shape`` (linear layers)."""
        raise TypeError(f"{type(self).__name__} has no weights between units")

    def keep_output_units(self, kept) -> list:
        """Keep only output units ``kept`` (host ints); return the ``(key, index, axis)`` slices
        taken (:meth:`take_units`). Producers: Dense, Conv2D (P1), SelectFeatures (P4)."""
        raise TypeError(f"{type(self).__name__} has no output units to prune")

    def keep_input_units(self, kept, block: int = 1) -> list:
        """Keep only input units ``kept`` (host ints), each a block of ``block`` consecutive
        inputs; return the slices taken. Consumers: Dense (P2)–(P3), Conv2D (P2)."""
        raise TypeError(f"{type(self).__name__} has no input units to prune")

    def take_units(self, key: str, index, axis: int) -> tuple:
        """Keep the entries ``index`` (host ints) of ``params[key]`` along ``axis``, as a fresh
        contiguous array; return ``(key, index, axis)`` so the optimiser can slice its state the
        same way (P5)."""
        value = self.params[key]
        xp = B.get_array_module(value)
        self.set_parameter(key, xp.ascontiguousarray(xp.take(value, B.asarray(index), axis=axis)))
        return key, index, axis

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
