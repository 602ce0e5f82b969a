"""Tutorial 4: Bernoulli gates exactly — why the flattening hyper-prior sends θ to 0 or 1.

What you learn
    The method in a model small enough to solve in closed form: linear regression whose inputs
    are multiplied by gates ξ_j ~ Bern(θ_j). You see the flattening hyper-prior p_κ(γ); that
    minimising KL(θ‖γ) − log p_κ(γ) over γ leaves a cost *linear* in θ, κθ + c(κ) (a price of
    κ per kept input); that the expected loss is affine in each θ_j, so the whole cost is, and
    its minimum sits at a corner of the box; and that projected SGD on the exact gradient then
    drives every θ_j to exactly 0 or exactly 1 — while with a fixed prior γ the KL's infinite
    slopes at 0 and 1 hold θ strictly inside, and a useless input stays near γ, never pruned.
Read alongside
    docs/derivations/bernoulli_objective.md — (B1)–(B4) the gated model and the cost it
    minimises (data term + KL to the prior), (B5)–(B6) the Bernoulli KL, (B7)–(B12) the
    hyper-prior and the flattened KL, (B13)–(B17) the cost and why its minima are deterministic,
    (B18) the fixed-γ stationary point, (B20)–(B21) projected Robbins–Monro SGD, (B23)–(B26) the
    gated regression toy; then minibern/bernoulli/objective.py and minibern/bernoulli/theta_sgd.py.
Figures (in --out)
    hyperprior.png — p_κ(γ) for several κ; flattened_objective.png — min over γ of
    KL − log p_κ against θ (straight lines) beside KL(θ‖½) (a convex barrier);
    theta_trajectories.png — θ_j over SGD steps, with the hyper-prior and with fixed γ = ½, and
    each θ_j's distance to its nearest vertex on a log axis (only the hyper-prior's reach 0).
    theta_final.npz holds the final θ of both runs.
You should see (the last line; full run, seed 0, and the same with --quick)
        tutorial 4: hyper-prior: 8/8 θ exactly 0 or 1, kept [0, 1, 2] (relevant [0, 1, 2]);
            fixed γ: 0/8 exactly 0 or 1, noise θ in [0.503, 0.540]; figures: hyperprior.png,
            flattened_objective.png, theta_trajectories.png
Time on a 2-core CPU
    about 3 seconds; --quick (fewer steps, a coarser γ grid) a little less.

    python tutorials/04_one_bernoulli_gate.py --out runs/tutorial4
"""
# %% [markdown]
# Notation (docs/derivations/bernoulli_objective.md): gate j keeps input j with probability
# θ_j; γ_j is the prior's probability, κ the flattening strength, N the number of examples.

# %% 1. Options
from _common import pyplot, save, tutorial_args

from minibern import backend as B
from minibern.bernoulli.objective import (bernoulli_kl, flattened_kl, flattened_penalty,
                                          flattening_constant, gamma_star,
                                          gated_regression_expected_loss, hyperprior_neg_log)
from minibern.bernoulli.theta_sgd import ProjectedSGD

np = B.host
args = tutorial_args(__doc__, quick="fewer SGD steps and a coarser γ grid", out="runs/tutorial4")
rng = B.make_rng(args.seed)
plt = pyplot()
KAPPAS = (0.0, 1.0, 2.0, 5.0, 10.0)


def kl(theta, gamma):
    """KL(Bern θ ‖ Bern γ), elementwise, with 0·log 0 = 0 (B5)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        on = np.where(theta > 0, theta * np.log(theta / gamma), 0.0)
        off = np.where(theta < 1, (1 - theta) * np.log((1 - theta) / (1 - gamma)), 0.0)
    return on + off


# %% 2. The flattening hyper-prior (B7): p_κ(γ) = (e^κ − 1)/κ · 1/(1 + (e^κ − 1)γ)
# κ = 0 is flat; larger κ puts more prior mass near γ = 0 (a factor e^κ from γ = 0 to γ = 1).
gammas = np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 4001)])
fig, ax = plt.subplots(figsize=(5, 3.4))
for kappa in KAPPAS:
    density = np.exp(-hyperprior_neg_log(gammas, kappa))  # (B8)
    mass = float(np.sum(np.diff(gammas) * (density[1:] + density[:-1]) / 2))
    print(f"step 2: κ = {kappa:>4}: p_κ(0) = {density[0]:8.2f}, p_κ(1) = {density[-1]:.4f}, "
          f"ratio e^κ = {density[0] / density[-1]:8.2f}, ∫p_κ dγ = {mass:.4f}")
    ax.plot(gammas, density, label=f"κ = {kappa:g}")
ax.set_yscale("log")
ax.set_xlabel("γ (the prior's keep probability)")
ax.set_ylabel("p_κ(γ)")
ax.set_title("the flattening hyper-prior (B7)", fontsize=9)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
figures = [save(fig, args.out / "hyperprior.png")]

# %% 3. Minimised over γ, the prior terms become linear in θ (B9)–(B11)
# For each θ, search γ on a grid for the minimum of F(γ) = KL(θ‖γ) − log p_κ(γ); compare with
# the closed forms: the minimiser γ*(θ) (B10) and the value κθ + c(κ) (B11), which the package
# evaluates term by term in flattened_kl.
# The grid is uniform in logit γ: γ*(θ) = θe^{−κ}/(1 − θ + θe^{−κ}) is tiny for small θ.
thetas = np.linspace(0.0, 1.0, 21)
grid = 1 / (1 + np.exp(-np.linspace(-40, 40, 4001 if args.quick else 40001)))
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
for kappa in (1.0, 2.0, 5.0):
    values = kl(thetas[:, None], grid[None, :]) + hyperprior_neg_log(grid, kappa)[None, :]
    brute = values.min(axis=1)
    argmin = grid[values.argmin(axis=1)]
    line = kappa * thetas + flattening_constant(kappa)  # (B11)
    package = np.array([flattened_kl(np.array([t]), kappa)[0] for t in thetas])
    inner = (thetas > 0) & (thetas < 1)
    print(f"step 3: κ = {kappa}: max over θ of |grid min − (κθ + c(κ))| = "
          f"{np.abs(brute - line).max():.1e}, "
          f"|flattened_kl − (κθ + c(κ))| = {np.abs(package - line).max():.1e}, "
          f"|grid argmin − γ*(θ)| ≤ {np.abs(argmin - gamma_star(thetas, kappa))[inner].max():.1e}")
    left.plot(thetas, line, label=f"κθ + c(κ), κ = {kappa:g}")
    left.plot(thetas, brute, "k.", ms=4)
left.plot([], [], "k.", label="min over a γ grid")
left.set_xlabel("θ")
left.set_ylabel("min_γ [KL(θ‖γ) − log p_κ(γ)]")
left.set_title("with the hyper-prior: linear, slope κ (B11)–(B12)", fontsize=9)
left.legend(fontsize=7)
fine = np.linspace(0, 1, 401)
right.plot(fine, kl(fine, 0.5), color="C3")
right.set_xlabel("θ")
right.set_ylabel("KL(θ‖½)")
right.set_title("fixed γ = ½: convex, slope logit θ − logit γ → ±∞ (B6)", fontsize=9)
for ax in (left, right):
    ax.grid(alpha=0.3)
figures.append(save(fig, args.out / "flattened_objective.png"))

# %% 4. The toy (B23): y depends on inputs 0–2 (input 2 only weakly); inputs 3–7 are noise
N, D = 100, 8
relevant = np.arange(D) < 3
x_host = rng.standard_normal((N, D))
y_host = x_host @ np.array([1.5, -1.0, 0.2, 0, 0, 0, 0, 0]) + 0.3 * rng.standard_normal(N)
x, y = B.asarray(x_host), B.asarray(y_host)
v0 = 0.1 * rng.standard_normal(D)
# The closed form E_ξ[(y − Σ ξ_j v_j x_j)²] = (y − Σ θ_j v_j x_j)² + Σ θ_j(1 − θ_j) v_j² x_j²
# against an average over sampled masks, at some θ:
theta_probe = np.linspace(0.2, 0.9, D)
closed, grad_probe, _ = gated_regression_expected_loss(theta_probe, B.asarray(v0), x, y)
masks = rng.random((20000, D)) < theta_probe
sampled = float(np.mean(((y_host[None, :] - (masks * v0) @ x_host.T) ** 2)))
print(f"step 4: expected loss at θ = {theta_probe.round(2)}: closed form (B23) {closed:.5f}, "
      f"average over 20,000 sampled masks {sampled:.5f}")
# Δ_j = N ∂E/∂θ_j is exactly the loss change of switching input j on (B26): E is affine in θ_j.
on, off = theta_probe.copy(), theta_probe.copy()
on[0], off[0] = 1.0, 0.0
secant = N * (gated_regression_expected_loss(on, B.asarray(v0), x, y)[0]
              - gated_regression_expected_loss(off, B.asarray(v0), x, y)[0])
print(f"        Δ_0 = N ∂E/∂θ_0 = {N * grad_probe[0]:.6f}; N[E(θ_0 = 1) − E(θ_0 = 0)] = "
      f"{secant:.6f} (B26)")


# %% 5. Learning θ and v together: exact gradients, projected Robbins–Monro SGD on θ
def train(prior_grad, bounds, steps):
    """θ by (B20)–(B21) on ∂E/∂θ (B24) + the prior's gradient, v by gradient descent (B25).
    Returns θ's trajectory (steps + 1, D) and the final v."""
    theta, v = np.full(D, 0.5), B.asarray(v0)
    sgd = ProjectedSGD(0.5, decay_steps=200, bounds=bounds)
    path = [theta.copy()]
    for _ in range(steps):
        _, grad_theta, grad_v = gated_regression_expected_loss(theta, v, x, y)  # (B24), (B25)
        v = v - 0.1 * grad_v
        sgd.update(theta, grad_theta + prior_grad(theta))  # (B20): clip onto the box
        path.append(theta.copy())
    return np.array(path), v


# With the hyper-prior, the prior's gradient is the constant κ/N (B15): input j pays κ to stay.
KAPPA = 2.0
steps = 400 if args.quick else 1000
flat_path, v_flat = train(lambda t: flattened_penalty(t, KAPPA, N)[1], (0.0, 1.0), steps)
theta_flat = flat_path[-1]
_, grad_end, _ = gated_regression_expected_loss(theta_flat, v_flat, x, y)
print(f"step 5: hyper-prior, κ = {KAPPA}: θ after {steps} steps = {theta_flat}")
print(f"        slope (Δ_j + κ)/N at the end: {(grad_end + KAPPA / N).round(4)} — negative "
      "pushes θ up (kept at 1), positive down (pruned at 0) (B17)")
exact = np.isin(theta_flat, (0.0, 1.0))
first_exact = [int(np.argmax(np.isin(flat_path[:, j], (0.0, 1.0)))) for j in range(D)]
print(f"        {int(exact.sum())}/{D} θ are exactly 0 or 1 (first reached at steps "
      f"{first_exact}); kept inputs {np.flatnonzero(theta_flat == 1.0).tolist()}")

# %% 6. The ablation: a fixed prior γ = ½ and its KL (B5)–(B6)
# Its slope logit θ − logit γ is −∞ at 0 and +∞ at 1, so θ is kept in [ε, 1 − ε] where it is
# finite, and the stationary point is interior: θ_j = σ(logit γ − Δ_j) (B18).
GAMMA, EPS = 0.5, 1e-6
fixed_path, v_fixed = train(lambda t: bernoulli_kl(t, GAMMA, N, eps=EPS)[1], (EPS, 1 - EPS),
                            steps * 3)
theta_fixed = fixed_path[-1]
_, grad_fixed, _ = gated_regression_expected_loss(theta_fixed, v_fixed, x, y)
stationary = 1 / (1 + np.exp(N * grad_fixed))  # (B18) with logit γ = 0 and Δ_j = N ∂E/∂θ_j
print(f"step 6: fixed γ = {GAMMA}: θ after {3 * steps} steps = {theta_fixed.round(4)}, "
      f"1 − θ_0 = {1 - theta_fixed[0]:.1e}, 1 − θ_1 = {1 - theta_fixed[1]:.1e}")
print(f"        (B18) σ(logit γ − Δ_j) at the end = {stationary.round(4)}; the strongly useful "
      f"inputs' 1 − O(e^Δ) rounds to 1, so they rest at the box's edge 1 − ε = {1 - EPS}")
noise_fixed = theta_fixed[~relevant]
print(f"        {int(np.isin(theta_fixed, (0.0, 1.0)).sum())}/{D} θ are exactly 0 or 1; the "
      f"noise inputs sit at θ ∈ [{noise_fixed.min():.3f}, {noise_fixed.max():.3f}] near γ: "
      "nothing is pruned")
np.savez(args.out / "theta_final.npz", hyperprior=theta_flat, fixed_gamma=theta_fixed,
         relevant=relevant, gamma=GAMMA)

# %% 7. The trajectories: every θ travels to a corner, or lingers inside
# On a linear axis 1 − 10⁻⁶ cannot be told from 1, so the right panel shows each θ's distance
# to its nearest vertex, min(θ, 1 − θ), on a log axis: the hyper-prior's reach exactly 0
# (the line ends, ×), the fixed-γ run's strong inputs stop at the box's edge ε (they would
# round to 1 without it), and its noise inputs stay near γ, about ½ away from either vertex.
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, path, title in ((axes[0], flat_path, f"hyper-prior, κ = {KAPPA:g}: θ reaches 0 or 1"),
                        (axes[1], fixed_path, f"fixed γ = {GAMMA:g}: noise inputs stay near γ")):
    for j in range(D):
        ax.plot(path[:, j], color="C0" if relevant[j] else "C3", lw=1.2,
                label=("relevant input" if j == 0 else "noise input" if j == 3 else None))
    ax.set_xlabel("SGD step")
    ax.set_ylabel("θ_j")
    ax.set_title(title, fontsize=9)
axes[1].text(len(fixed_path) / 2, 0.985, "the top two sit at 1 − ε, not at 1 (right panel)",
             fontsize=7, ha="center", va="top")
ax = axes[2]
for path, style, name in ((flat_path, "-", f"hyper-prior, κ = {KAPPA:g}"),
                          (fixed_path, "--", f"fixed γ = {GAMMA:g}")):
    distance = np.minimum(path, 1 - path)
    for j in range(D):
        shown = np.where(distance[:, j] > 0, distance[:, j], np.nan)  # log axis: 0 is off it
        ax.plot(shown, style, color="C0" if relevant[j] else "C3", lw=1.2)
        reached = np.flatnonzero(distance[:, j] == 0)
        if reached.size:
            ax.plot(reached[0] - 1, distance[reached[0] - 1, j], "x", color="k", ms=6)
    ax.plot([], [], style, color="grey", label=name)
ax.plot([], [], "x", color="k", label="next step: exactly 0 or 1")
ax.axhline(EPS, color="grey", lw=0.8, ls=":", label=f"box edge ε = {EPS:g} (fixed γ)")
ax.set_yscale("log")
ax.set_xscale("symlog", linthresh=10)  # linear up to step 10, then logarithmic
ax.set_xlim(0, len(fixed_path))
ax.set_xlabel("SGD step")
ax.set_ylabel("min(θ_j, 1 − θ_j)")
ax.set_title("how close to a vertex? only the hyper-prior reaches one", fontsize=9)
ax.legend(fontsize=7, loc="center left")
for ax in axes:
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
figures.append(save(fig, args.out / "theta_trajectories.png"))

# %% Result
print(f"tutorial 4: hyper-prior: {int(exact.sum())}/{D} θ exactly 0 or 1, kept "
      f"{np.flatnonzero(theta_flat == 1.0).tolist()} (relevant {np.flatnonzero(relevant).tolist()}); "
      f"fixed γ: {int(np.isin(theta_fixed, (0.0, 1.0)).sum())}/{D} exactly 0 or 1, noise θ in "
      f"[{noise_fixed.min():.3f}, {noise_fixed.max():.3f}]; figures: "
      f"{', '.join(p.name for p in figures)}")

# %% [markdown]
# ## Exercises
# 1. **A cheaper price.** In step 5 set `KAPPA = 0.5` and run
#    `python tutorials/04_one_bernoulli_gate.py`. Before you run it, predict from the
#    step-5 slopes (Δ_j + κ)/N printed above (Δ_j = N·slope − κ, N = 100): which inputs are
#    kept now, and do the noise inputs, whose slope is now about κ/N alone, still reach 0
#    within the steps taken? Which θ end strictly inside (0, 1), and why so slowly?
# 2. **A smaller box.** In step 5 give `train` the bounds `(0.1, 0.9)` instead of `(0.0, 1.0)`.
#    Before you run it, predict: where does each θ end, how many are "exactly 0 or 1" now, and
#    does the choice of kept inputs change? (The projection (B20) puts θ on a vertex of
#    whatever box it projects onto; the cost is still affine in each θ_j.)
# 3. **A different fixed γ.** Set `GAMMA = 0.1` in step 6. Predict from (B18),
#    θ_j = σ(logit γ − Δ_j): where do the noise inputs settle now, and is any of them pruned?
