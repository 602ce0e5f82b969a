"""Projected SGD on θ (B20)–(B22): the update and its schedule, the box is never left, and on
the exact toy (B23)–(B25) the flattened cost drives every θ to exactly 0 or 1 while the fixed-γ
ablation keeps θ inside (0, 1)."""
import numpy as np
import pytest

from minibern import backend as B
from minibern.bernoulli.objective import (bernoulli_kl, flattened_penalty,
                                          gated_regression_expected_loss)
from minibern.bernoulli.theta_sgd import ProjectedSGD

host_only = pytest.mark.host_only


# ---------------------------------------------------------------------------------------------
# The update and its schedule
# ---------------------------------------------------------------------------------------------
@host_only
def test_step_size_schedule():
    opt = ProjectedSGD(2.0, decay_steps=10)
    assert opt.step_size(0) == 2.0
    assert opt.step_size(10) == pytest.approx(1.0)
    assert opt.step_size(90) == pytest.approx(0.2)
    assert ProjectedSGD(0.3).step_size(1e6) == 0.3  # constant without decay_steps


@host_only
def test_update_follows_the_formula_in_place():
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, 1, 6)
    opt = ProjectedSGD(0.5, decay_steps=4)
    want = theta.copy()
    same = theta
    for t in range(5):
        grad = rng.standard_normal(6)
        eta = opt.update(theta, grad)
        assert eta == pytest.approx(0.5 / (1 + t / 4))
        want = np.clip(want - eta * grad, 0.0, 1.0)
    assert theta is same and opt.steps == 5
    np.testing.assert_array_equal(theta, want)
    eta = opt.update(theta, np.zeros(6), t=12.0)  # an explicit clock (e.g. a fractional epoch)
    assert eta == pytest.approx(0.5 / 4) and opt.steps == 6


@host_only
def test_theta_never_leaves_the_box_for_large_random_gradients():
    rng = np.random.default_rng(1)
    theta = rng.uniform(0, 1, (50, 4))
    opt = ProjectedSGD(5.0, decay_steps=3)
    hit_ends = np.zeros(theta.shape, bool)
    for _ in range(300):
        grad = rng.standard_normal(theta.shape) * 10.0 ** rng.uniform(-3, 8, theta.shape)
        want = theta.copy()
        eta = opt.update(theta, grad)
        # (B22) elementwise, from gradients of 1e-3 to 1e8: the projection of the plain step
        want = np.where(want - eta * grad < 0.0, 0.0, np.where(want - eta * grad > 1.0, 1.0,
                                                                want - eta * grad))
        np.testing.assert_array_equal(theta, want)
        hit_ends |= (theta == 0.0) | (theta == 1.0)
    assert hit_ends.all()  # the ends are reached exactly


@host_only
def test_mask_moves_only_visited_gates():
    theta = np.full(5, 0.5)
    grad = np.array([1.0, np.nan, -1.0, np.inf, 0.2])  # unvisited entries are ignored
    mask = np.array([True, False, True, False, True])
    ProjectedSGD(0.1).update(theta, grad, mask=mask)
    np.testing.assert_allclose(theta, [0.4, 0.5, 0.6, 0.5, 0.48])


@host_only
def test_state_dict_roundtrip_continues_the_schedule():
    rng = np.random.default_rng(2)
    grads = rng.standard_normal((6, 3))
    a, b = np.full(3, 0.5), np.full(3, 0.5)
    opt_a, opt_b = ProjectedSGD(0.2, decay_steps=2), ProjectedSGD(0.2, decay_steps=2)
    for g in grads[:3]:
        opt_a.update(a, g)
        opt_b.update(b, g)
    saved = opt_b.state_dict()
    opt_b = ProjectedSGD(0.2, decay_steps=2)
    opt_b.load_state_dict(saved)
    for g in grads[3:]:
        opt_a.update(a, g)
        opt_b.update(b, g)
    np.testing.assert_array_equal(a, b)
    assert opt_b.steps == 6


# ---------------------------------------------------------------------------------------------
# The exact toy: relevant inputs end at exactly 1, pure-noise inputs at exactly 0
# ---------------------------------------------------------------------------------------------
RELEVANT = np.array([True, True, True, False, False, False, False, False])


def _toy_data(seed=0, n=200):
    """y depends on the first three inputs only; the other five are pure noise inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, RELEVANT.size))
    w = np.where(RELEVANT, [1.5, -1.0, 0.8, 0, 0, 0, 0, 0], 0.0)
    y = x @ w + 0.1 * rng.standard_normal(n)
    return rng, x, y


def _train_toy(prior_grad, x, y, v0, *, steps, bounds=(0.0, 1.0), lr_v=0.1):
    """Projected SGD (Robbins–Monro) on θ jointly with plain gradient descent on v."""
    theta = np.full(x.shape[1], 0.5)
    v = B.asarray(v0)
    xd, yd = B.asarray(x), B.asarray(y)
    opt = ProjectedSGD(0.5, decay_steps=200, bounds=bounds)
    for _ in range(steps):
        _, grad_theta, grad_v = gated_regression_expected_loss(theta, v, xd, yd)  # (B24), (B25)
        v = v - lr_v * grad_v
        opt.update(theta, grad_theta + prior_grad(theta))  # (B20)
    return theta, v, xd, yd


def test_flattened_cost_drives_every_theta_to_exactly_0_or_1():
    rng, x, y = _toy_data()
    n, kappa = x.shape[0], 2.0
    theta, v, _, _ = _train_toy(lambda t: flattened_penalty(t, kappa, n)[1], x, y,
                                0.1 * rng.standard_normal(x.shape[1]), steps=400)  # (B15)
    np.testing.assert_array_equal(theta, RELEVANT.astype(float))  # exactly 1 and exactly 0
    np.testing.assert_allclose(B.to_numpy(v)[RELEVANT], [1.5, -1.0, 0.8], atol=0.02)


@host_only
def test_fixed_gamma_ablation_stops_at_the_interior_stationary_point():
    """Without the hyper-prior (fixed γ = 0.5, KL gradient (B6) with eps clipping, θ projected
    onto [eps, 1 − eps]) the noise inputs end near γ, at the
    interior stationary point (B18) θ_j = σ(logit γ − Δ_j), instead of at 0."""
    rng, x, y = _toy_data()
    n, gamma, eps = x.shape[0], 0.5, 1e-6
    theta, v, xd, yd = _train_toy(lambda t: bernoulli_kl(t, gamma, n, eps=eps)[1], x, y,
                                  0.1 * rng.standard_normal(x.shape[1]), steps=2000,
                                  bounds=(eps, 1 - eps))
    noise = theta[~RELEVANT]
    assert np.all((noise > 0.4) & (noise < 0.6)), noise  # not pruned
    _, grad_theta, _ = gated_regression_expected_loss(theta, v, xd, yd)
    stationary = 1.0 / (1.0 + np.exp(n * grad_theta))  # (B18) with logit γ = 0, Δ = N ∂E/∂θ
    np.testing.assert_allclose(noise, stationary[~RELEVANT], atol=2e-3)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@host_only
@pytest.mark.parametrize("lr0", [0.0, -1.0, np.nan, np.inf])
def test_bad_lr0(lr0):
    with pytest.raises(ValueError, match=r"lr0 must be a finite number > 0, got .*use e\.g\. lr0="):
        ProjectedSGD(lr0)


def test_warmup_keeps_a_start_up_transient_from_deciding_a_gate():
    """(B21′): a gradient that points the wrong way for the first 5 steps (an untrained net's
    transient) and then the right way. Without the ramp the big early steps put θ on 0 at once;
    with it θ barely moves and returns to 1. After the ramp both schedules are the same."""
    def run(warmup):
        opt, theta, path = ProjectedSGD(1.0, decay_steps=200, warmup=warmup), np.ones(1), []
        for step in range(400):
            grad = np.array([0.5 if step < 5 else -0.01])
            opt.update(theta, grad)
            path.append(float(theta[0]))
        return opt, path
    plain, without = run(0.0)
    ramped, with_ramp = run(100.0)
    assert min(without[:6]) == 0.0
    assert min(with_ramp) > 0.9 and with_ramp[-1] == 1.0
    assert ramped.step_size(150) == pytest.approx(plain.step_size(150), rel=1e-12)
    assert ramped.step_size(50) < plain.step_size(50)


@host_only
def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"warmup must be a finite number >= 0, got -1"):
        ProjectedSGD(1.0, warmup=-1.0)
    with pytest.raises(ValueError, match=r"decay_steps must be a finite number > 0, got 0"):
        ProjectedSGD(1.0, decay_steps=0)
    with pytest.raises(ValueError, match=r"bounds must satisfy 0 <= low < high <= 1, got "
                                         r"\(0\.5, 0\.2\)"):
        ProjectedSGD(1.0, bounds=(0.5, 0.2))


@host_only
def test_bad_update_arguments():
    opt = ProjectedSGD(1.0)
    with pytest.raises(TypeError, match=r"host float64 numpy array.*float32"):
        opt.update(np.full(2, 0.5, np.float32), np.zeros(2))
    with pytest.raises(TypeError, match=r"host float64 numpy array"):
        opt.update(B.strict_xp.asarray([0.5]), np.zeros(1))
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), theta has \(2,\)"):
        opt.update(np.full(2, 0.5), np.zeros(3))
    with pytest.raises(ValueError, match=r"non-finite.*eps="):
        opt.update(np.full(2, 0.5), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match=r"theta\[1\] = nan"):
        opt.update(np.array([0.5, np.nan]), np.zeros(2))
    assert opt.steps == 0  # nothing was counted
