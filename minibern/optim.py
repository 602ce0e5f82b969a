r"""Optimisers: in-place updates, state keyed by parameter name. See docs/derivations/layers.md (O1)–(O2).

State buffers are created lazily with ``zeros_like`` on the parameter's own device. Because
pruning deletes rows or filters from parameters, the state can be sliced the same way
(:meth:`Optimizer.slice_state`), and saved/restored for checkpoints
(:meth:`Optimizer.state_dict`, :meth:`Optimizer.load_state_dict`, host arrays).
"""
from __future__ import annotations

import math

from minibern import backend as B


def _positive(value, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _fraction(value, name):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


def inverse_time_decay(lr0: float, t: float, tau: float | None) -> float:
    r"""The step size :math:`\eta_t = \eta_0/(1 + t/\tau)` (constant :math:`\eta_0` when
    ``tau`` is None): the weights' schedule over epochs (``--lr-decay``) and θ's Robbins–Monro
    schedule (B21) of docs/derivations/bernoulli_objective.md."""
    if tau is None:
        return lr0
    return lr0 / (1.0 + t / tau)


class Optimizer:
    """Base class. ``step(model)`` or ``step(params, grads)`` updates parameters in place."""

    buffers: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = _positive(lr, "lr")
        if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.state: dict[str, dict] = {}
        self.steps = 0

    def step(self, params, grads=None) -> None:
        if grads is None:
            params, grads = params.named_parameters(), params.named_gradients()
        self.steps += 1
        for name, param in params.items():
            grad = grads[name]
            if grad is None:
                raise RuntimeError(f"parameter {name!r} has no gradient; run backward first")
            if grad.shape != param.shape:
                raise ValueError(f"gradient of {name!r} has shape {tuple(grad.shape)}, "
                                 f"parameter has {tuple(param.shape)}")
            if name not in self.state:
                xp = B.get_array_module(param)
                self.state[name] = {key: xp.zeros_like(param) for key in self.buffers}
            if self.weight_decay:
                grad = grad + param.dtype.type(self.weight_decay) * param
            self._update(param, grad, self.state[name])

    def _update(self, param, grad, state) -> None:
        raise NotImplementedError

    def slice_state(self, name: str, keep, axis: int = 0) -> None:
        """Keep only the entries ``keep`` (int indices or bool mask) along ``axis`` of ``name``'s state."""
        if name not in self.state:
            return
        keep = B.host.asarray(B.to_numpy(keep))
        index = B.asarray(B.host.flatnonzero(keep) if keep.dtype == bool else keep)
        for key, buffer in self.state[name].items():
            xp = B.get_array_module(buffer, index)
            self.state[name][key] = xp.take(buffer, index, axis=axis)

    def state_dict(self) -> dict:
        """Host copy of the state: ``{"steps": int, "<name>/<buffer>": ndarray}``."""
        out = {"steps": self.steps}
        for name, buffers in self.state.items():
            for key, buffer in buffers.items():
                out[f"{name}/{key}"] = B.to_numpy(buffer)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` produced, onto the current backend."""
        self.steps = int(state["steps"])
        self.state = {}
        for flat_key, value in state.items():
            if flat_key == "steps":
                continue
            name, _, key = flat_key.rpartition("/")
            self.state.setdefault(name, {})[key] = B.asarray(value)


class SGD(Optimizer):
    r"""SGD with (heavy-ball) momentum μ:

    .. math:: v \leftarrow \mu v + g,\qquad p \leftarrow p - \eta v     \tag{O1}

    (with μ = 0 this is plain SGD). ``weight_decay`` λ adds λp to g.
    """

    buffers = ("velocity",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _fraction(momentum, "momentum")

    def _update(self, param, grad, state) -> None:
        velocity = state["velocity"]
        velocity *= param.dtype.type(self.momentum)  # (O1)
        velocity += grad
        param -= param.dtype.type(self.lr) * velocity  # (O1)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015), bias-corrected:

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        p \leftarrow p - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}   \tag{O2}
    """

    buffers = ("m", "v")

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = _fraction(betas[0], "betas[0]")
        self.beta2 = _fraction(betas[1], "betas[1]")
        self.eps = _positive(eps, "eps")

    def _update(self, param, grad, state) -> None:
        xp = B.get_array_module(param, grad)
        f = param.dtype.type
        t = self.steps
        m, v = state["m"], state["v"]
        m *= f(self.beta1)  # (O2)
        m += f(1 - self.beta1) * grad
        v *= f(self.beta2)
        v += f(1 - self.beta2) * grad * grad
        step = f(self.lr / (1 - self.beta1 ** t))
        denom = xp.sqrt(v * f(1.0 / (1 - self.beta2 ** t)))
        denom += f(self.eps)
        param -= step * m / denom  # (O2)
