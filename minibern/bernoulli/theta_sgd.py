r"""Projected SGD on the gate probabilities θ with a Robbins–Monro step size.

Derivation: docs/derivations/bernoulli_objective.md, (B20)–(B22).

θ lives on the host (float64; one entry per gate, a few thousand at most), so this optimiser
works on host arrays only: the gradient estimate comes back from the device once per step with
``minibern.backend.to_numpy``.

.. math::
    \eta_t = \frac{\eta_0}{1 + t/\tau}
        \quad(\text{constant } \eta_0 \text{ if } \tau = \infty)                          \tag{B21}

    \theta \leftarrow \Pi_{[\ell, u]}\big(\theta - \eta_t\,\hat g\big)
        = \min\big(\max(\theta - \eta_t \hat g,\ \ell),\ u\big)                         \tag{B20}

with :math:`[\ell, u] = [0, 1]` by default. The clip is the Euclidean projection onto the box, so
θ = 0 and θ = 1 are reached exactly. A ``mask`` restricts the step to the visited gates (B22).
"""
from __future__ import annotations

import math

from minibern import backend as B
from minibern.bernoulli.objective import check_theta
from minibern.optim import inverse_time_decay

np = B.host


def _positive(value, name, fix):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; {fix}")
    return float(value)


class ProjectedSGD:
    r"""Projected SGD with the Robbins–Monro step :math:`\eta_t = \eta_0/(1 + t/\tau)`.

    Parameters
    ----------
    lr0 : float > 0
        :math:`\eta_0`, the initial step size.
    decay_steps : float > 0 or None
        :math:`\tau`, in the units of ``t`` (steps by default). ``None``: constant step size
        (no Robbins–Monro guarantee: noisy estimates then keep θ moving).
    warmup : float >= 0
        :math:`t_w`, in the units of ``t``: the step ramps up linearly over the first
        :math:`t_w` (B21′); 0 (default): no ramp.
    bounds : (float, float)
        The box :math:`[\ell, u] \subseteq [0, 1]` θ is projected onto; default (0, 1). The fixed-γ
        ablation uses (eps, 1 − eps), on which its KL gradient (B6) is finite.

    Attributes
    ----------
    steps : int
        Updates made so far; the default clock ``t`` of :meth:`update`.

    Notes
    -----
    :math:`\sum_t \eta_t = \infty` and :math:`\sum_t \eta_t^2 < \infty` (B21): the steps are large
    enough to reach any point and small enough that unbiased noisy gradients average out, so θ
    can settle exactly instead of jittering at the scale of :math:`\eta\,\mathrm{std}(\hat g)`.
    """

    def __init__(self, lr0: float, decay_steps: float | None = None, bounds=(0.0, 1.0),
                 warmup: float = 0.0):
        self.lr0 = _positive(lr0, "lr0", "use e.g. lr0=1.0 (θ is a probability: steps of order "
                                         "0.01–1 per update)")
        self.decay_steps = None if decay_steps is None else _positive(
            decay_steps, "decay_steps", "use e.g. decay_steps=100, or None for a constant step")
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError) as error:
            raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}; "
                             "use the default (0.0, 1.0)") from error
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"bounds must satisfy 0 <= low < high <= 1, got {bounds!r}; "
                             "use (0.0, 1.0), or (eps, 1 - eps) for the fixed-γ ablation")
        self.bounds = (low, high)
        if not (isinstance(warmup, (int, float)) and math.isfinite(warmup) and warmup >= 0):
            raise ValueError(f"warmup must be a finite number >= 0, got {warmup!r}; use 0 for no "
                             "ramp")
        self.warmup = float(warmup)
        self.steps = 0

    def step_size(self, t) -> float:
        r""":math:`\eta_t = \eta_0/(1 + t/\tau)` (B21); ``lr0`` if ``decay_steps`` is None;
        times :math:`\min(1, t/t_w)` with a warm-up (B21′)."""
        if not t >= 0:
            raise ValueError(f"t must be >= 0 (a step count or fractional epoch), got {t!r}")
        ramp = min(1.0, t / self.warmup) if self.warmup else 1.0  # (B21′)
        return inverse_time_decay(ramp * self.lr0, t, self.decay_steps)  # (B21)

    def update(self, theta, grad, t=None, mask=None) -> float:
        r"""One projected step in place, :math:`\theta \leftarrow \Pi(\theta - \eta_t\hat g)` (B20).

        Parameters
        ----------
        theta : host float64 ndarray, any shape, updated in place
        grad : host array shaped like ``theta``, the gradient estimate :math:`\hat g` of the
            per-example cost (finite wherever it is used)
        t : float, optional
            The schedule's clock (a step count, or a fractional epoch if ``decay_steps`` was given
            in epochs). Default: :attr:`steps`, the number of updates made so far.
        mask : host bool array shaped like ``theta``, optional
            Only gates where ``mask`` is True move (B22); the others keep their value and their
            ``grad`` entries are ignored.

        Returns
        -------
        float, the step size :math:`\eta_t` used. :attr:`steps` grows by one.
        """
        if not (isinstance(theta, np.ndarray) and type(theta) is np.ndarray
                and theta.dtype == np.float64):
            raise TypeError(f"theta must be a host float64 numpy array (updated in place), got "
                            f"{type(theta).__name__} of dtype {getattr(theta, 'dtype', None)}; "
                            "keep θ as np.asarray(theta, dtype=np.float64) on the host")
        check_theta(theta)  # NaN or out-of-box θ is a bug upstream, not something to clip away
        if B.is_array(grad) and B.get_array_module(grad) is not np:
            raise TypeError("grad must be a host array; bring it back with "
                            "minibern.backend.to_numpy(grad)")
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != theta.shape:
            raise ValueError(f"grad has shape {grad.shape}, theta has {theta.shape}; "
                             "pass one gradient entry per gate")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.shape != theta.shape:
                raise ValueError(f"mask must be a bool array of theta's shape {theta.shape}, got "
                                 f"{mask.dtype} {mask.shape}")
        used = grad if mask is None else grad[mask]
        if not np.all(np.isfinite(used)):
            raise ValueError(
                "grad has non-finite entries where it is used (e.g. the KL gradient (B6) at "
                "θ ∈ {0, 1}); pass eps=... to bernoulli_kl, or find the source of the NaN/inf")
        eta = self.step_size(self.steps if t is None else t)
        low, high = self.bounds
        if mask is None:
            np.clip(theta - eta * grad, low, high, out=theta)  # (B20)
        else:
            theta[mask] = np.clip(theta[mask] - eta * used, low, high)  # (B20), (B22)
        self.steps += 1
        return eta

    def state_dict(self) -> dict:
        """``{"steps": int}``: what a checkpoint needs to continue the schedule."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s step counter."""
        steps = int(state["steps"])
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.steps = steps
