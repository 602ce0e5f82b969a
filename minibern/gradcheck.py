r"""Gradient checking by float64 finite differences of vector-Jacobian products.

For a layer :math:`y = f(x)` with a non-scalar output, pick a fixed random upstream gradient
:math:`u` (``dout``) and check the scalar :math:`\phi(x) = \langle f(x), u\rangle`, whose
gradient is exactly what ``backward(u)`` returns:

.. math::
    \frac{\partial \phi}{\partial x_i} \approx
    \frac{\langle f(x + \varepsilon e_i), u\rangle - \langle f(x - \varepsilon e_i), u\rangle}
         {2\varepsilon}                                                           \tag{G1}

(central differences, truncation error :math:`O(\varepsilon^2)`). The comparison uses

.. math::
    \text{rel\_err}(a, n) = \frac{\max_i |a_i - n_i|}{\max(\max_i |a_i|,\ \max_i |n_i|,\ 10^{-12})}  \tag{G2}

— a scale-aware max-norm error that does not blow up at entries that happen to be near 0.
Perturbations are made on float64 host copies; each evaluation moves the perturbed copy to the
current backend, so the check exercises the backend's own kernels. Inputs should be kept away
from non-differentiable points (ReLU kinks, max-pool ties): see :func:`distinct_values`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from minibern import backend as B

np = B.host


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences; the message has the evidence."""


@dataclass
class GradcheckReport:
    """Relative errors (G2) per checked quantity, e.g. ``{"x": 3e-10, "W": 1e-9}``."""

    errors: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0


def relative_error(analytic, numeric) -> float:
    """(G2) between two host arrays of equal shape."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"shapes differ: analytic {analytic.shape} vs numeric {numeric.shape}")
    if analytic.size == 0:
        return 0.0
    scale = max(np.abs(analytic).max(), np.abs(numeric).max(), 1e-12)
    return float(np.abs(analytic - numeric).max() / scale)


def numerical_vjp(phi, x, eps: float = 1e-6):
    """(G1): the gradient of the scalar function ``phi`` at host array ``x`` (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + eps
        plus = phi(x)
        flat_x[i] = original - eps
        minus = phi(x)
        flat_x[i] = original
        flat_g[i] = (plus - minus) / (2 * eps)  # (G1)
    return grad


def distinct_values(rng, shape, spacing: float = 0.05, offset: float = 0.0125):
    """A float64 host array of ``shape`` whose entries are pairwise ≥ ``spacing`` apart and
    at least ``offset`` away from 0, in random order.

    Finite differences with ε ≪ spacing then never cross a ReLU kink or a max-pool tie.
    """
    size = int(np.prod(shape))
    values = (np.arange(size) - size // 2) * spacing + offset
    return rng.permutation(values).reshape(shape)


def _format_failure(name, analytic, numeric, err, tol):
    diff = np.abs(analytic - numeric)
    worst = np.unravel_index(np.argsort(diff, axis=None)[::-1][:5], diff.shape)
    rows = [f"    index {tuple(int(a[k]) for a in worst)}: analytic {analytic[tuple(a[k] for a in worst)]:.10g}, "
            f"numeric {numeric[tuple(a[k] for a in worst)]:.10g}" for k in range(len(worst[0]))]
    return (f"gradient of {name!r} (shape {analytic.shape}): relative error {err:.3e} > tol {tol:.1e}\n"
            + "\n".join(rows))


def check_layer(layer, x, dout=None, *, rng=None, eps: float = 1e-6, tol: float = 1e-6,
                check_params: bool = True) -> GradcheckReport:
    """Check ``layer.backward`` for the input and every parameter against (G1).

    Parameters
    ----------
    layer : Layer with float64 parameters (build it with ``dtype="float64"``)
    x : host float64 array, the point at which to check
    dout : host float64 array shaped like the output, optional (random normal if omitted)
    rng : numpy Generator or seed for ``dout``
    eps, tol : finite-difference step and the largest allowed (G2) error

    Returns a :class:`GradcheckReport`; raises :class:`GradcheckError` with shapes, worst indices
    and values when any error exceeds ``tol``.
    """
    for key, value in layer.params.items():
        if value.dtype != np.float64:
            raise TypeError(f"gradient checks run in float64; {type(layer).__name__}.{key} is "
                            f"{value.dtype} — build the layer with dtype='float64'")
    x = np.asarray(x, dtype=np.float64)
    out = B.to_numpy(layer.forward(B.asarray(x)))
    if dout is None:
        dout = B.make_rng(0 if rng is None else rng).standard_normal(out.shape)
    dout = np.asarray(dout, dtype=np.float64)
    dout_device = B.asarray(dout)
    dx = B.to_numpy(layer.backward(dout_device))
    analytic = {"x": dx}
    analytic.update({k: B.to_numpy(g) for k, g in layer.grads.items()} if check_params else {})

    def phi_of_x(x_host):
        return float(np.sum(B.to_numpy(layer.forward(B.asarray(x_host))) * dout))

    numeric = {"x": numerical_vjp(phi_of_x, x, eps)}
    if check_params:
        for key in list(layer.params):
            original = layer.params[key]

            def phi_of_param(p_host, key=key):
                layer.set_parameter(key, B.asarray(p_host))
                return float(np.sum(B.to_numpy(layer.forward(B.asarray(x))) * dout))

            try:
                numeric[key] = numerical_vjp(phi_of_param, B.to_numpy(original), eps)
            finally:
                layer.set_parameter(key, original)

    report = GradcheckReport()
    failures = []
    for name, a in analytic.items():
        err = relative_error(a, numeric[name])
        report.errors[name] = err
        report.details[name] = (a, numeric[name])
        if not err <= tol:
            failures.append(_format_failure(name, a, numeric[name], err, tol))
    if failures:
        raise GradcheckError(f"{type(layer).__name__} at x of shape {x.shape}:\n" + "\n".join(failures))
    return report
