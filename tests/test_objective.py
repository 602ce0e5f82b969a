"""The objective's closed forms (docs/derivations/bernoulli_objective.md): every gradient against
float64 finite differences (G1)/(G2), γ* against brute-force minimisation, the flattened KL
against κθ + c(κ), the toy against enumeration of all masks, and bad input."""
import itertools

import numpy as np
import pytest

from minibern import backend as B
from minibern import gradcheck as G
from minibern.bernoulli import objective as O

host_only = pytest.mark.host_only
TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# Independent references (written from the formulas, not from the module)
# ---------------------------------------------------------------------------------------------
def _kl_reference(theta, log_gamma, log_one_minus_gamma):
    """Elementwise (B5), with γ given through its logs so γ near 0 or 1 loses nothing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        on = np.where(theta > 0, theta * (np.log(theta) - log_gamma), 0.0)
        off = np.where(theta < 1, (1 - theta) * (np.log(1 - theta) - log_one_minus_gamma), 0.0)
    return on + off


def _neg_log_prior_reference(gamma, kappa):
    """(B7)'s negative log, written directly (fine for 0 < κ <= 700)."""
    return np.log1p(np.expm1(kappa) * gamma) - np.log(np.expm1(kappa) / kappa)


def _interior(rng, shape):
    return rng.uniform(0.1, 0.9, size=shape)


# ---------------------------------------------------------------------------------------------
# Flattened penalty and κ per unit (B14)–(B15)
# ---------------------------------------------------------------------------------------------
@host_only
@pytest.mark.parametrize("kappa", [3.0, "per-gate"])
def test_flattened_penalty_value_and_gradient(kappa):
    rng = np.random.default_rng(0)
    theta = _interior(rng, (4, 3))
    kappa = rng.uniform(0, 5, size=(4, 3)) if kappa == "per-gate" else kappa
    value, grad = O.flattened_penalty(theta, kappa, n_data=50)
    assert value == pytest.approx(np.sum(kappa * theta) / 50, rel=1e-14)
    numeric = G.numerical_vjp(lambda t: O.flattened_penalty(t, kappa, 50)[0], theta)
    assert grad.shape == theta.shape
    assert G.relative_error(grad, numeric) < TOL


@host_only
def test_kappa_per_unit_shared_and_per_param():
    counts = np.array([785, 785, 301])
    np.testing.assert_array_equal(O.kappa_per_unit(2.0, counts), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(O.kappa_per_unit(0.02, counts, per_param=True),
                               [15.7, 15.7, 6.02], rtol=1e-14)
    assert O.kappa_per_unit(0.5, 10, per_param=True) == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------
# Bernoulli KL (B5)–(B6): the fixed-γ ablation
# ---------------------------------------------------------------------------------------------
@host_only
@pytest.mark.parametrize("gamma", [0.5, 0.05, "per-gate"])
def test_bernoulli_kl_value_and_gradient(gamma):
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.02, 0.98, size=7)
    gamma = rng.uniform(0.05, 0.95, size=7) if gamma == "per-gate" else gamma
    value, grad = O.bernoulli_kl(theta, gamma, n_data=20)
    g = np.broadcast_to(gamma, theta.shape)
    want = _kl_reference(theta, np.log(g), np.log1p(-g)).sum() / 20
    assert value == pytest.approx(want, rel=1e-13)
    numeric = G.numerical_vjp(lambda t: O.bernoulli_kl(t, gamma, 20)[0], theta)
    assert G.relative_error(grad, numeric) < TOL


@host_only
def test_bernoulli_kl_at_the_ends_barrier_and_eps_clipping():
    theta, gamma = np.array([0.0, 1.0, 0.3]), 0.25
    value, grad = O.bernoulli_kl(theta, gamma)
    # 0·log 0 = 0: KL(0||γ) = -log(1-γ), KL(1||γ) = -log γ
    want = -np.log(0.75) - np.log(0.25) + _kl_reference(np.array([0.3]), np.log(0.25),
                                                        np.log(0.75))[0]
    assert value == pytest.approx(want, rel=1e-14)
    assert grad[0] == -np.inf and grad[1] == np.inf and np.isfinite(grad[2])
    eps = 1e-6
    _, clipped = O.bernoulli_kl(theta, gamma, eps=eps)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(clipped, [logit(eps) - logit(0.25), logit(1 - eps) - logit(0.25),
                                         logit(0.3) - logit(0.25)], rtol=1e-9)
    assert O.bernoulli_kl(theta, gamma, eps=eps)[0] == value  # the value is never clipped


# ---------------------------------------------------------------------------------------------
# The flattening hyper-prior (B7)–(B12)
# ---------------------------------------------------------------------------------------------
KAPPAS = [0.0, 1e-6, 0.5, 3.0, 20.0, 100.0]
THETAS = [0.0, 1e-9, 0.2, 0.5, 0.9, 1 - 1e-9, 1.0]


@host_only
@pytest.mark.parametrize("kappa", KAPPAS)
def test_gamma_star_is_the_brute_force_minimiser(kappa):
    """On a fine grid in logit γ (spacing 1e-3 over [-130, 130]) plus the ends γ = 0 and 1, no
    grid point beats γ*; where the minimum is well conditioned (θ not near 0 or 1, so that the
    objective's curvature in logit γ is of order θ(1 − θ)), the grid's best point is within
    one spacing of γ*. At θ ∈ {0, 1} the minimum is at the end γ = θ."""
    u = np.linspace(-130.0, 130.0, 260_001)
    log_g = np.concatenate([[-np.inf], -np.logaddexp(0.0, -u), [0.0]])   # log γ
    log_1mg = np.concatenate([[0.0], -np.logaddexp(0.0, u), [-np.inf]])  # log(1 − γ)
    gamma = np.exp(log_g)
    prior = (np.zeros_like(gamma) if kappa == 0 else _neg_log_prior_reference(gamma, kappa))
    for theta in THETAS:
        objective = _kl_reference(np.full_like(gamma, theta), log_g, log_1mg) + prior
        star = float(O.gamma_star(np.array([theta]), kappa)[0])
        best = int(np.argmin(objective))
        at_star = (O.bernoulli_kl(np.array([theta]), star)[0]
                   + float(O.hyperprior_neg_log(star, kappa)))
        assert at_star <= objective.min() + 1e-12 * (1 + abs(at_star)), (theta, kappa)
        if theta in (0.0, 1.0):
            end = 0 if theta == 0 else gamma.size - 1
            assert star == theta
            assert objective[end] <= objective.min() + 1e-12 * (1 + abs(at_star))
        elif 0.1 < theta < 0.95:
            star_logit = np.log(star) - np.log1p(-star)
            assert abs(u[best - 1] - star_logit) <= 1.5e-3, (theta, kappa)


@host_only
def test_gamma_star_closed_form_properties():
    theta = np.array([0.0, 1e-12, 0.3, 0.5, 1 - 1e-12, 1.0])
    np.testing.assert_array_equal(O.gamma_star(theta, 0.0), theta)  # flat prior: γ* = θ
    for kappa in (0.7, 100.0, 800.0):
        star = O.gamma_star(theta, kappa)
        assert np.all(np.isfinite(star)) and star[0] == 0.0 and star[-1] == 1.0
        inner = slice(1, -2)  # near θ = 1, 1 − γ* carries few digits
        logit_theta = np.log(theta[inner]) - np.log1p(-theta[inner])
        if kappa < 700:  # (B10): logit γ* = logit θ − κ
            np.testing.assert_allclose(np.log(star[inner]) - np.log1p(-star[inner]),
                                       logit_theta - kappa, rtol=1e-9, atol=1e-9)


@host_only
@pytest.mark.parametrize("kappa", [1e-8, 0.5, 5.0, 50.0])
def test_hyperprior_is_a_density_and_matches_the_direct_formula(kappa):
    """(B7) integrates to 1. For large κ the mass spreads evenly in log γ down to γ ~ e^−κ, so
    the trapezoid rule runs over s = log γ: ∫ p dγ = ∫ p(e^s) e^s ds (plus p(0)·γ_min below)."""
    s = np.linspace(np.log(1e-60), 0.0, 400_001)
    gamma = np.exp(s)
    neg_log = O.hyperprior_neg_log(gamma, kappa)
    np.testing.assert_allclose(neg_log, _neg_log_prior_reference(gamma, kappa), rtol=1e-12,
                               atol=1e-12)
    f = np.exp(-neg_log) * gamma
    integral = np.sum((f[1:] + f[:-1]) / 2) * (s[1] - s[0])
    integral += float(np.exp(-O.hyperprior_neg_log(0.0, kappa))) * 1e-60
    assert integral == pytest.approx(1.0, abs=1e-6)


@host_only
def test_hyperprior_flat_limit_and_large_kappa():
    gamma = np.array([0.0, 0.3, 1.0])
    np.testing.assert_array_equal(O.hyperprior_neg_log(gamma, 0.0), 0.0)
    big = O.hyperprior_neg_log(gamma, 1000.0)  # e^κ overflows; the log form does not
    assert np.all(np.isfinite(big))
    # -log p(1) = κ + c(κ) and -log p(0) = c(κ)
    c = float(O.flattening_constant(1000.0))
    assert big[0] == pytest.approx(c, rel=1e-14) and big[2] == pytest.approx(1000.0 + c, rel=1e-14)


@host_only
def test_flattening_constant_closed_form():
    kappa = np.array([0.0, 1e-10, 1e-3, 1.0, 30.0, 100.0, 700.0])
    c = O.flattening_constant(kappa)
    assert c[0] == 0.0
    assert c[1] == pytest.approx(-5e-11, rel=1e-6)  # c(κ) ≈ −κ/2 for small κ
    direct = -np.log(np.expm1(kappa[2:]) / kappa[2:])
    np.testing.assert_allclose(c[2:], direct, rtol=1e-13)


@host_only
@pytest.mark.parametrize("kappa", [0.0, 1e-6, 0.3, 2.0, 10.0, 50.0, 100.0])
def test_flattened_kl_equals_kappa_theta_plus_constant(kappa):
    """(B11): min_γ [KL(θ||γ) − log p_κ(γ)], evaluated term by term at γ*, is κθ + c(κ) for
    every θ on a grid including 0 and 1."""
    c = float(O.flattening_constant(kappa))
    for theta in np.concatenate([np.linspace(0.0, 1.0, 101), [1e-12, 1 - 1e-12]]):
        value, grad = O.flattened_kl(np.array([theta]), kappa)
        assert value == pytest.approx(kappa * theta + c, abs=1e-12 * (1 + kappa)), theta
        assert grad[0] == kappa


@host_only
def test_flattened_kl_gradient_is_kappa_over_n():
    """(B12): the envelope theorem. The returned gradient is κ/N by construction, so what is
    tested is the *value*, computed term by term through γ*(θ) (B5), (B8), (B10): its float64
    central differences, coordinate by coordinate and near the ends of [0, 1] too, must have
    slope κ/N; a wrong γ* (B10) or hyper-prior (B8) would bend it."""
    rng = np.random.default_rng(2)
    theta = np.concatenate([_interior(rng, 6), [0.02, 0.985]])
    kappa = np.concatenate([rng.uniform(0.1, 8.0, size=6), [0.5, 12.0]])
    value, grad = O.flattened_kl(theta, kappa, n_data=30)
    h = 1e-6
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        slope = (O.flattened_kl(theta + step, kappa, 30)[0]
                 - O.flattened_kl(theta - step, kappa, 30)[0]) / (2 * h)
        assert slope == pytest.approx(kappa[i] / 30, rel=1e-6), i
    numeric = G.numerical_vjp(lambda t: O.flattened_kl(t, kappa, 30)[0], theta)
    assert G.relative_error(grad, numeric) < TOL
    const = float(np.sum(O.flattening_constant(kappa))) / 30
    assert value == pytest.approx(O.flattened_penalty(theta, kappa, 30)[0] + const, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Weight prior (B19), on the current backend
# ---------------------------------------------------------------------------------------------
def test_weight_prior_value_and_gradients():
    rng = np.random.default_rng(3)
    host = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3)}
    sigma2 = {"W1": 0.5, "b1": 2.0}
    weights = {k: B.asarray(v) for k, v in host.items()}
    value, grads = O.weight_prior(weights, sigma2, n_data=10)
    want = sum(np.sum(host[k] ** 2) / (2 * sigma2[k] * 10) for k in host)
    assert value == pytest.approx(want, rel=1e-13)
    for name in host:
        assert B.get_array_module(grads[name]) is B.get_array_module(weights[name])
        assert grads[name].dtype == weights[name].dtype

        def phi(w_host, name=name):
            return O.weight_prior({**weights, name: B.asarray(w_host)}, sigma2, 10)[0]

        numeric = G.numerical_vjp(phi, host[name])
        assert G.relative_error(B.to_numpy(grads[name]), numeric) < TOL


def test_weight_prior_single_array_and_float32():
    w = B.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    value, grad = O.weight_prior(w, 4.0, n_data=5)
    assert value == pytest.approx(55.0 / 40.0, rel=1e-6)
    assert grad.dtype == w.dtype
    np.testing.assert_allclose(B.to_numpy(grad), np.arange(6).reshape(2, 3) / 20.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The exact toy (B23)–(B26), on the current backend
# ---------------------------------------------------------------------------------------------
def _toy(rng, n=9, d=5):
    return _interior(rng, d), rng.standard_normal(d), rng.standard_normal((n, d)), \
        rng.standard_normal(n)


@pytest.mark.parametrize("d", [1, 4, 8])
def test_toy_closed_form_equals_enumeration_of_all_masks(d):
    rng = np.random.default_rng(10 + d)
    theta, v, x, y = _toy(rng, n=7, d=d)
    theta[0] = 0.0 if d > 1 else theta[0]
    theta[-1] = 1.0 if d > 2 else theta[-1]
    value, _, _ = O.gated_regression_expected_loss(theta, B.asarray(v), B.asarray(x),
                                                   B.asarray(y))
    want = 0.0
    for mask in itertools.product((0, 1), repeat=d):
        mask = np.array(mask)
        prob = np.prod(np.where(mask == 1, theta, 1 - theta))
        want += prob * np.mean((y - x @ (mask * v)) ** 2)
    assert value == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_toy_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    theta, v, x, y = _toy(rng)
    xd, yd = B.asarray(x), B.asarray(y)
    _, grad_theta, grad_v = O.gated_regression_expected_loss(theta, B.asarray(v), xd, yd)
    assert isinstance(grad_theta, np.ndarray) and grad_theta.dtype == np.float64
    assert B.get_array_module(grad_v) is B.get_array_module(xd)
    numeric_theta = G.numerical_vjp(
        lambda t: O.gated_regression_expected_loss(t, B.asarray(v), xd, yd)[0], theta)
    numeric_v = G.numerical_vjp(
        lambda w: O.gated_regression_expected_loss(theta, B.asarray(w), xd, yd)[0], v)
    assert G.relative_error(grad_theta, numeric_theta) < TOL
    assert G.relative_error(B.to_numpy(grad_v), numeric_v) < TOL


def test_toy_is_affine_in_each_theta():
    """(B26): ∂E/∂θ_j = E(θ_j = 1) − E(θ_j = 0), for every θ_j (E is multilinear, (B16))."""
    rng = np.random.default_rng(5)
    theta, v, x, y = _toy(rng)
    args = (B.asarray(v), B.asarray(x), B.asarray(y))
    _, grad_theta, _ = O.gated_regression_expected_loss(theta, *args)
    for j in range(theta.size):
        ends = []
        for end in (1.0, 0.0):
            t = theta.copy()
            t[j] = end
            ends.append(O.gated_regression_expected_loss(t, *args)[0])
        assert grad_theta[j] == pytest.approx(ends[0] - ends[1], rel=1e-10, abs=1e-13)


def test_toy_rejects_mismatched_shapes():
    rng = np.random.default_rng(6)
    theta, v, x, y = _toy(rng)
    with pytest.raises(ValueError, match=r"expected theta \(D,\), v \(D,\), x \(N, D\)"):
        O.gated_regression_expected_loss(theta[:-1], B.asarray(v), B.asarray(x), B.asarray(y))


# ---------------------------------------------------------------------------------------------
# Bad input: ValueError naming the value and the fix
# ---------------------------------------------------------------------------------------------
@host_only
@pytest.mark.parametrize("bad, shown", [(-0.1, "-0.1"), (1.5, "1.5"), (np.nan, "nan")])
def test_theta_outside_unit_interval_or_nan(bad, shown):
    theta = np.array([[0.2, 0.3], [0.4, bad]])
    with pytest.raises(ValueError, match=rf"theta\[\(1, 1\)\] = {shown}.*np\.clip"):
        O.check_theta(theta)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        O.flattened_penalty(theta, 1.0, 10)
    with pytest.raises(ValueError, match=r"gamma\[2\] = "):
        O.bernoulli_kl(np.full(3, 0.5), np.array([0.5, 0.5, bad]))


@host_only
def test_theta_on_a_device_is_refused():
    with pytest.raises(TypeError, match=r"host numpy array.*to_numpy"):
        O.check_theta(B.strict_xp.asarray([0.5]))


@host_only
@pytest.mark.parametrize("kappa", [-0.5, np.nan, np.inf, np.array([1.0, -2.0])])
def test_bad_kappa(kappa):
    with pytest.raises(ValueError, match=r"kappa.* must be a finite number >= 0.*got kappa.*"
                                         r"use kappa=0"):
        O.flattened_penalty(np.full(2, 0.5), kappa, 10)
    with pytest.raises(ValueError, match=r"kappa"):
        O.gamma_star(np.full(2, 0.5), kappa)


@host_only
@pytest.mark.parametrize("sigma2", [0.0, -1.0, np.nan])
def test_bad_sigma2(sigma2):
    with pytest.raises(ValueError, match=r"sigma2 for 'W' must be a finite number > 0.*got "
                                         r".*sigma2=1\.0"):
        O.weight_prior({"W": np.ones(3)}, sigma2, 10)


@host_only
@pytest.mark.parametrize("n_data", [0, -3, 2.5, True])
def test_bad_n_data(n_data):
    with pytest.raises(ValueError, match=r"n_data must be a positive integer.*len\(train_labels\)"):
        O.flattened_penalty(np.full(2, 0.5), 1.0, n_data)


@host_only
def test_bad_eps_and_params_per_unit():
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 0\.5\), got 0\.7"):
        O.bernoulli_kl(np.full(2, 0.5), 0.5, eps=0.7)
    with pytest.raises(ValueError, match=r"params_per_unit must hold non-negative"):
        O.kappa_per_unit(1.0, np.array([3, -1]))
    with pytest.raises(ValueError, match=r"does not broadcast to theta's shape"):
        O.flattened_penalty(np.full(3, 0.5), np.ones(2), 10)
