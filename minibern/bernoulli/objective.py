r"""The variational objective's closed-form pieces, as pure functions.

Derivation: docs/derivations/bernoulli_objective.md, (B1)–(B26). Read it beside this file; every
implementing line cites its equation.

Notation
--------
G gates with probabilities :math:`\theta \in [0,1]^G` (``theta``: a *host* float64 array of any
shape), prior parameters :math:`\gamma`, flattening strength :math:`\kappa \ge 0` (a scalar or one
value per gate), :math:`N` = ``n_data`` examples in the training set, weights :math:`v` (arrays of
any backend). Every term of the cost is divided by :math:`N` (B4), so a minibatch's gradient is an
unbiased estimate of the per-example cost's gradient.

Two kinds of function live here:

* **cost terms** return ``(value, gradient)`` with the value a Python float summed over gates and
  divided by ``n_data``: :func:`flattened_penalty`, :func:`bernoulli_kl`, :func:`flattened_kl`,
  :func:`weight_prior`, :func:`gated_regression_expected_loss`;
* **elementwise identities** of the hyper-prior: :func:`gamma_star`, :func:`hyperprior_neg_log`,
  :func:`flattening_constant`.
"""
from __future__ import annotations

import math

from minibern import backend as B

np = B.host


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _first_bad(mask):
    index = tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(mask.reshape(-1))[0]),
                                                   mask.shape))
    return index if len(index) != 1 else index[0]


def check_theta(theta, name: str = "theta"):
    """Return ``theta`` as a host float64 array; raise if any entry is outside [0, 1] or NaN.

    Parameters
    ----------
    theta : host array-like of any shape
        Gate probabilities. Device arrays are refused (θ lives on the host).
    name : str
        Used in the error message.

    Raises
    ------
    TypeError
        ``theta`` is a device (CuPy or strict-backend) array.
    ValueError
        An entry is NaN or outside [0, 1]; the message names the first offending index and value,
        how many entries are bad, and the fix.
    """
    if B.is_array(theta) and B.get_array_module(theta) is not np:
        raise TypeError(f"{name} must be a host numpy array (gate probabilities live on the host), "
                        f"got a {type(theta).__name__}; bring it back with "
                        "minibern.backend.to_numpy(...)")
    theta = np.asarray(theta, dtype=np.float64)
    bad = ~((theta >= 0.0) & (theta <= 1.0))  # NaN compares False, so it is caught too
    if bad.any():
        index = _first_bad(bad)
        raise ValueError(
            f"{name} must lie in [0, 1] (probabilities), got "
            f"{name}[{index}] = {float(theta[index])!r} "
            f"({int(bad.sum())} bad entries of {theta.size}); clip with np.clip({name}, 0, 1) or "
            "find where the NaN came from (a NaN gradient?)"
        )
    return theta


def _check_kappa(kappa, name: str = "kappa"):
    kappa = np.asarray(B.to_numpy(kappa) if B.is_array(kappa) else kappa, dtype=np.float64)
    bad = ~((kappa >= 0.0) & np.isfinite(kappa))
    if bad.any():
        where = f"[{_first_bad(bad)}]" if kappa.ndim else ""
        value = float(kappa[_first_bad(bad)] if kappa.ndim else kappa)
        raise ValueError(
            f"{name} must be a finite number >= 0 (the cost of keeping one unit), got "
            f"{name}{where} = {value!r}; use {name}=0 for no pruning pressure or a positive value"
        )
    return kappa


def _check_n_data(n_data):
    if isinstance(n_data, bool) or not isinstance(n_data, (int, np.integer)) or n_data < 1:
        raise ValueError(f"n_data must be a positive integer (examples in the training set), "
                         f"got {n_data!r}; pass e.g. n_data=len(train_labels)")
    return int(n_data)


def _check_broadcast(kappa, theta, name="kappa"):
    try:
        return np.broadcast_to(kappa, theta.shape)
    except ValueError as error:
        raise ValueError(f"{name} of shape {kappa.shape} does not broadcast to theta's shape "
                         f"{theta.shape}; pass a scalar or one value per gate") from error


# ---------------------------------------------------------------------------------------------
# Flattened (expected-L0) penalty
# ---------------------------------------------------------------------------------------------
def flattened_penalty(theta, kappa, n_data):
    r"""The flattened penalty :math:`\frac1N\sum_i \kappa_i\theta_i` and its gradient.

    Parameters
    ----------
    theta : host float64 array, any shape (G gates)
    kappa : float >= 0, or host array broadcastable to ``theta`` (one κ per gate)
    n_data : int, N

    Returns
    -------
    value : float
    grad_theta : host float64 array shaped like ``theta``

    Notes
    -----
    .. math::
        P(\theta) = \frac1N \sum_i \kappa_i \theta_i, \qquad
        \frac{\partial P}{\partial \theta_i} = \frac{\kappa_i}{N}              \tag{B15}

    It is the flattened KL (B11) up to a constant in θ, so it is the only part of the prior
    terms that training needs.
    """
    theta = check_theta(theta)
    kappa = _check_broadcast(_check_kappa(kappa), theta)
    n = _check_n_data(n_data)
    value = float(np.sum(kappa * theta)) / n  # (B15)
    grad = kappa / n  # (B15)
    return value, np.array(grad, dtype=np.float64)


def kappa_per_unit(kappa, params_per_unit, per_param: bool = False):
    r"""One κ per unit: shared, or proportional to the unit's parameter count.

    Parameters
    ----------
    kappa : float >= 0
        The shared κ, or (``per_param=True``) the cost of one parameter.
    params_per_unit : int or host int array (G,)
        The number of parameters each unit costs (what counts — fan-in weights + bias, its
        outgoing weights too — is the model's choice). An int means every unit counts that many;
        then the result is 0-d and broadcasts against θ.
    per_param : bool
        False: :math:`\kappa_i = \kappa`. True: :math:`\kappa_i = \kappa P_i` (the complexity-aware
        variant).

    Returns
    -------
    host float64 array shaped like ``params_per_unit``

    Notes
    -----
    .. math::
        \kappa_i = \kappa \quad\text{or}\quad \kappa_i = \kappa\, P_i       \tag{B14}
    """
    kappa = float(_check_kappa(kappa))
    counts = np.asarray(params_per_unit)
    if counts.dtype.kind not in "iuf" or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"params_per_unit must hold non-negative parameter counts, got "
                         f"{params_per_unit!r}; pass e.g. fan_in + 1 per unit")
    counts = counts.astype(np.float64)
    if per_param:
        return kappa * counts  # (B14)
    return np.full(counts.shape, kappa)  # (B14)


# ---------------------------------------------------------------------------------------------
# The flattening hyper-prior
# ---------------------------------------------------------------------------------------------
def flattening_constant(kappa):
    r"""The constant of the flattened KL, :math:`c(\kappa) = -\log\frac{e^\kappa - 1}{\kappa}`.

    Elementwise over ``kappa`` (float or host array, >= 0); :math:`c(0) = 0` (the limit).
    Stable for every finite κ: :math:`c(\kappa) = -\kappa - \log\frac{1 - e^{-\kappa}}{\kappa}`
    with :math:`1 - e^{-\kappa}` from ``expm1``.

    Returns a host float64 array (0-d for a scalar κ). See (B11).
    """
    kappa = _check_kappa(kappa)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = -np.expm1(-kappa) / kappa  # (1 - e^-κ)/κ ∈ (0, 1]
        const = -kappa - np.log(ratio)  # (B11)
    return np.where(kappa == 0.0, 0.0, const)


def _log_expm1(kappa):
    """log(e^κ − 1), stable for every κ >= 0 (−inf at κ = 0)."""
    with np.errstate(divide="ignore"):
        return kappa + np.log(-np.expm1(-kappa))


def hyperprior_neg_log(gamma, kappa):
    r"""Elementwise :math:`-\log p_\kappa(\gamma)` of the flattening hyper-prior.

    Parameters
    ----------
    gamma : float or host array, values in [0, 1]
    kappa : float or host array >= 0, broadcastable with ``gamma``

    Returns
    -------
    host float64 array (broadcast shape)

    Notes
    -----
    .. math::
        p_\kappa(\gamma) = \frac{e^\kappa - 1}{\kappa}\,\frac{1}{1 + (e^\kappa - 1)\gamma}, \qquad
        -\log p_\kappa(\gamma) = \log\big(1 + (e^\kappa - 1)\gamma\big) + c(\kappa)   \tag{B8}

    :math:`\log(1 + (e^\kappa-1)\gamma)` is evaluated as
    ``logaddexp(0, log(e^κ − 1) + log γ)``, exact at γ = 0 and κ = 0 (flat prior: 0) and free of
    overflow for any κ.
    """
    gamma = check_theta(gamma, "gamma")
    kappa = _check_kappa(kappa)
    with np.errstate(divide="ignore"):
        log_term = np.logaddexp(0.0, _log_expm1(kappa) + np.log(gamma))  # (B8)
    return log_term + flattening_constant(kappa)  # (B8)


def gamma_star(theta, kappa):
    r"""The optimal prior parameter :math:`\gamma^*(\theta)` under the flattening hyper-prior.

    Parameters
    ----------
    theta : host float64 array, values in [0, 1]
    kappa : float or host array >= 0, broadcastable with ``theta``

    Returns
    -------
    host float64 array (broadcast shape)

    Notes
    -----
    The minimiser over γ of :math:`\mathrm{KL}(\mathrm{Bern}\,\theta\,\|\,\mathrm{Bern}\,\gamma)
    - \log p_\kappa(\gamma)` (derived in (B9)):

    .. math::
        \gamma^*(\theta) = \frac{\theta e^{-\kappa}}{1 - \theta + \theta e^{-\kappa}},\qquad
        \operatorname{logit}\gamma^* = \operatorname{logit}\theta - \kappa     \tag{B10}

    κ = 0 gives γ* = θ. θ = 0 gives 0 and θ = 1 gives 1 exactly, for every κ.
    """
    theta = check_theta(theta)
    kappa = _check_kappa(kappa)
    shrink = np.exp(-kappa)
    with np.errstate(invalid="ignore"):
        gamma = theta * shrink / ((1.0 - theta) + theta * shrink)  # (B10)
    return np.where(theta == 1.0, 1.0, gamma)  # 0/0 only if e^-κ underflows (κ > 745)


# ---------------------------------------------------------------------------------------------
# Bernoulli KL (the fixed-γ ablation) and the flattened KL
# ---------------------------------------------------------------------------------------------
def _kl_terms(theta, gamma):
    """Elementwise KL(Bern θ || Bern γ) with 0·log 0 = 0 (B5)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        on = np.where(theta > 0, theta * (np.log(theta) - np.log(gamma)), 0.0)  # (B5)
        off = np.where(theta < 1, (1 - theta) * (np.log1p(-theta) - np.log1p(-gamma)), 0.0)  # (B5)
    return on + off


def _logit(p):
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def bernoulli_kl(theta, gamma, n_data: int = 1, *, eps: float | None = None):
    r"""The ablation's prior term :math:`\frac1N\sum_i \mathrm{KL}(\mathrm{Bern}\,\theta_i\,\|\,
    \mathrm{Bern}\,\gamma_i)` (fixed γ, no hyper-prior) and its gradient.

    Parameters
    ----------
    theta : host float64 array, any shape, values in [0, 1]
    gamma : float or host array broadcastable to ``theta``, values in [0, 1]
    n_data : int
        N; the default 1 gives the plain summed KL.
    eps : float in (0, 0.5), optional
        If given, θ is clipped into [eps, 1 − eps] *for the gradient only*, which is then finite
        everywhere (what the ablation's projected SGD uses). The value is never clipped.

    Returns
    -------
    value : float
        Exact, with the convention 0·log 0 = 0; +inf if some θ_i > 0 meets γ_i = 0 (or
        θ_i < 1 meets γ_i = 1).
    grad_theta : host float64 array shaped like ``theta``

    Notes
    -----
    .. math::
        \mathrm{KL}(\theta\|\gamma) = \theta\log\frac{\theta}{\gamma}
            + (1-\theta)\log\frac{1-\theta}{1-\gamma}                                  \tag{B5}

        \frac{\partial\,\mathrm{KL}}{\partial\theta} = \operatorname{logit}\theta
            - \operatorname{logit}\gamma                                              \tag{B6}

    Without ``eps`` the gradient is −inf at θ = 0 and +inf at θ = 1: the KL is a barrier
    that pushes θ back into (0, 1), so no gate can be pruned (B18).
    """
    theta = check_theta(theta)
    gamma = _check_broadcast(check_theta(gamma, "gamma"), theta, "gamma")
    n = _check_n_data(n_data)
    value = float(np.sum(_kl_terms(theta, gamma))) / n  # (B5)
    point = theta
    if eps is not None:
        if not isinstance(eps, (int, float)) or not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}; use e.g. eps=1e-6")
        point = np.clip(theta, eps, 1.0 - eps)  # (B6), clipped
    with np.errstate(invalid="ignore"):
        grad = (_logit(point) - _logit(gamma)) / n  # (B6)
    return value, np.array(grad, dtype=np.float64)


def flattened_kl(theta, kappa, n_data: int = 1):
    r"""The prior terms minimised over γ, evaluated explicitly at :math:`\gamma^*(\theta)`.

    Parameters
    ----------
    theta : host float64 array, any shape, values in [0, 1]
    kappa : float or host array >= 0, broadcastable to ``theta``
    n_data : int, N (default 1: the plain sum)

    Returns
    -------
    value : float
        :math:`\frac1N\sum_i \big[\mathrm{KL}(\theta_i\|\gamma^*_i)
        - \log p_\kappa(\gamma^*_i)\big]`,
        computed term by term from (B5), (B8), (B10) — not from the closed form (B11), so that
        tests can compare the two.
    grad_theta : host float64 array shaped like ``theta``
        :math:`\kappa_i/N` (B12).

    Notes
    -----
    .. math::
        \min_\gamma\big[\mathrm{KL}(\theta\|\gamma) - \log p_\kappa(\gamma)\big]
            = \kappa\theta + c(\kappa),\qquad c(\kappa) = -\log\frac{e^\kappa-1}{\kappa} \tag{B11}

        \frac{d}{d\theta}\Big(\min_\gamma[\cdots]\Big) = \operatorname{logit}\theta
            - \operatorname{logit}\gamma^* = \kappa                                      \tag{B12}
    """
    theta = check_theta(theta)
    kappa = _check_broadcast(_check_kappa(kappa), theta)
    n = _check_n_data(n_data)
    gamma = gamma_star(theta, kappa)  # (B10)
    terms = _kl_terms(theta, gamma) + hyperprior_neg_log(gamma, kappa)  # (B5) + (B8)
    return float(np.sum(terms)) / n, np.array(kappa / n, dtype=np.float64)  # (B12)


# ---------------------------------------------------------------------------------------------
# Gaussian prior on the weights
# ---------------------------------------------------------------------------------------------
def _check_sigma2(sigma2, name):
    if isinstance(sigma2, bool) or not isinstance(sigma2, (int, float, np.floating, np.integer)) \
            or not sigma2 > 0 or not math.isfinite(sigma2):
        raise ValueError(f"sigma2 for {name!r} must be a finite number > 0 (the prior variance of "
                         f"the weights), got {sigma2!r}; use e.g. sigma2=1.0, or a larger "
                         "value for a weaker prior")
    return float(sigma2)


def weight_prior(weights, sigma2, n_data):
    r"""The Gaussian weight prior :math:`\frac1N\sum \|v\|^2/(2\sigma^2)` and its gradients.

    Parameters
    ----------
    weights : dict name -> array (any backend), or one array
    sigma2 : float > 0, or dict name -> float > 0 (one σ² per array, e.g. per layer)
    n_data : int, N

    Returns
    -------
    value : float
    grads : dict name -> array (or one array), each shaped, typed and placed like its weight

    Notes
    -----
    .. math::
        R(v) = \frac1N \sum_l \frac{\|v_l\|^2}{2\sigma_l^2},\qquad
        \frac{\partial R}{\partial v_l} = \frac{v_l}{N\sigma_l^2}                    \tag{B19}
    """
    n = _check_n_data(n_data)
    single = not isinstance(weights, dict)
    named = {"weights": weights} if single else weights
    value, grads = 0.0, {}
    for name, v in named.items():
        B.require_float_array(v, name)
        s2 = _check_sigma2(sigma2[name] if isinstance(sigma2, dict) else sigma2, name)
        xp = B.get_array_module(v)
        value += float(B.to_numpy(xp.sum(v * v))) / (2.0 * s2 * n)  # (B19)
        grads[name] = v * v.dtype.type(1.0 / (n * s2))  # (B19)
    return value, grads["weights"] if single else grads


# ---------------------------------------------------------------------------------------------
# The exact toy: linear regression with gated inputs, squared loss
# ---------------------------------------------------------------------------------------------
def gated_regression_expected_loss(theta, v, x, y):
    r"""Expected squared loss of linear regression with Bernoulli-gated inputs, in closed form.

    Parameters
    ----------
    theta : host float64 array (D,), gate probabilities, values in [0, 1]
    v : float array (D,), weights, any backend
    x : float array (N, D), inputs, same backend as ``v``
    y : float array (N,), targets, same backend

    Returns
    -------
    value : float
        :math:`\frac1N\sum_n \mathbb E_\xi\big[(y_n - \sum_j \xi_j v_j x_{nj})^2\big]`.
    grad_theta : host float64 array (D,)
        Equals :math:`\Delta_j/N` (B26): the loss change of switching input j on.
    grad_v : array (D,), on ``v``'s backend, ``v``'s dtype

    Notes
    -----
    With :math:`a_{nj} = v_j x_{nj}` and :math:`r_n = y_n - \sum_j \theta_j a_{nj}`:

    .. math::
        E = \frac1N\sum_n\Big[r_n^2 + \sum_j \theta_j(1-\theta_j)\,a_{nj}^2\Big]        \tag{B23}

        \frac{\partial E}{\partial\theta_j} = \frac1N\sum_n\big[-2 r_n a_{nj}
            + (1 - 2\theta_j)\,a_{nj}^2\big]                                          \tag{B24}

        \frac{\partial E}{\partial v_j} = \frac1N\sum_n\big[-2 r_n \theta_j x_{nj}
            + 2\theta_j(1-\theta_j)\,v_j x_{nj}^2\big]                                \tag{B25}
    """
    theta = check_theta(theta)
    for name, arr in (("v", v), ("x", x), ("y", y)):
        B.require_float_array(arr, name)
    if x.ndim != 2 or v.shape != (x.shape[1],) or y.shape != (x.shape[0],) \
            or theta.shape != v.shape:
        raise ValueError(f"expected theta (D,), v (D,), x (N, D), y (N,); got theta "
                         f"{theta.shape}, v {tuple(v.shape)}, x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}")
    xp = B.get_array_module(v, x, y)
    n = x.shape[0]
    if n < 1:
        raise ValueError("x has no rows; the expected loss needs N >= 1 examples")
    th = xp.asarray(theta, dtype=v.dtype)  # host -> v's device
    a = x * v  # a_nj = v_j x_nj, (N, D)
    r = y - a @ th  # r_n, (N,)
    a2 = a * a
    variance = th * (1 - th)
    value = float(B.to_numpy(xp.sum(r * r) + xp.sum(a2 @ variance))) / n  # (B23)
    ra = r @ a  # Σ_n r_n a_nj, (D,)
    grad_theta = (-2 * ra + (1 - 2 * th) * xp.sum(a2, axis=0)) / n  # (B24)
    rx = r @ x  # Σ_n r_n x_nj
    x2 = xp.sum(x * x, axis=0)
    grad_v = (-2 * th * rx + 2 * variance * v * x2) / n  # (B25)
    return value, B.to_numpy(grad_theta).astype(np.float64), grad_v


def expected_parameters(blocks, thetas: dict, kappa_per_param):
    r"""The expected parameter count of a gated network and the unit costs it implies.

    A weight joining input unit i to output unit j of a linear layer is present iff both units
    are kept; a bias iff its unit is. With independent gates, the expected count is bilinear in
    the widths :math:`S = \sum_i \theta_i` of the gated sides (an ungated side counts its width):

    .. math::
        P(\theta) = \sum_{\text{layers}} K\, S_{\text{in}} S_{\text{out}} + S_{\text{out}},
        \qquad
        \kappa_i = \kappa\,\frac{\partial P}{\partial\theta_i}
                 = \kappa\,\bigl(K_{\text{in}}\,S_{\text{in}} + 1\bigr)
                   + \kappa\,K_{\text{out}}\,S_{\text{out}}                     \tag{B14′}

    where the first term is unit i's incoming weights and bias (as output of its producer) and
    the second its outgoing weights (as input of its consumer), each counted only over the
    units on the other side that are expected to be kept. At a vertex, P is the parameter count
    of the kept network; κ·P is multilinear, so the vertex argument (B16)–(B18) still holds.

    Parameters
    ----------
    blocks : list of :class:`~minibern.bernoulli.topology.WeightBlock`
    thetas : dict
        ``{gate name: host θ array (n,)}``.
    kappa_per_param : float >= 0
        κ, the cost of one parameter.

    Returns
    -------
    value : float
        κ·P(θ).
    unit_costs : dict
        ``{gate name: host float64 array (n,)}``, κ_i of (B14′), to be used in (B15).
    """
    kappa = float(_check_kappa(kappa_per_param))
    width = {name: float(np.sum(theta)) for name, theta in thetas.items()}
    slope = {name: 0.0 for name in thetas}
    value = 0.0
    for block in blocks:
        s_in = width[block.inputs] if block.inputs else float(block.n_inputs)
        s_out = width[block.outputs] if block.outputs else float(block.n_outputs)
        value += block.rows_per_input * s_in * s_out + s_out
        if block.inputs:
            slope[block.inputs] += block.rows_per_input * s_out
        if block.outputs:
            slope[block.outputs] += block.rows_per_input * s_in + 1.0
    return kappa * value, {name: np.full(np.shape(theta), kappa * slope[name])
                           for name, theta in thetas.items()}
