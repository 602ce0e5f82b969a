"""Tutorial 5: estimating Δ — what removing a unit costs, three ways, against the exact answer.

What you learn
    θ's gradient needs one number per gate that has no closed form in a real network:
    Δ_i = E[L | ξ_i = 1] − E[L | ξ_i = 0], the change of the expected loss when unit i is on
    rather than off. On a network with few enough gates (11 here) it can be computed exactly by
    enumerating all 2^G masks; the tutorial then draws thousands of minibatches and masks and
    compares the two estimators the training can afford: the *first-order* one (the backprop
    derivative ∂ℓ/∂ξ_i, almost free, but the slope of a relaxation, not the secant from 0 to 1)
    and the *removal* one (flip ξ_{n,i} for each example and re-run the rest of the network:
    unbiased). You see the bias of the first and the unbiasedness of the second, with the
    numbers: each estimator's mean, its standard error, and their distance to the exact Δ.
Read alongside
    docs/derivations/bernoulli_objective.md (B16)–(B17) — why Δ_i is the exact slope of the
    expected loss in θ_i; docs/derivations/estimators.md — (E1)–(E2) the gate layer, (E3) the
    first-order estimator, (E4)–(E8) removal, (E9) exact; then minibern/bernoulli/estimators.py
    (with flip_products.py) and exact.py.
Figures (in --out)
    delta_estimators.png — per gate: the exact Δ, each estimator's mean ± 2 standard errors
    (bias), each estimator's standard deviation per minibatch (variance), and the spread of
    single estimates for the gate with the largest first-order bias.
    delta_estimates.npz holds the exact Δ and every single estimate.
You should see (the last line; full run, seed 0)
        tutorial 5: over 3000 draws, removal max |z| = 1.7 (11/11 gates within 3 SE of the exact
            Δ: unbiased); first-order max |z| = 98.0 (9/11 gates beyond 3 SE, mean |bias|
            0.0728: biased); figure delta_estimators.png
    and with --quick:
        tutorial 5: over 400 draws, removal max |z| = 1.2 (11/11 gates within 3 SE of the exact
            Δ: unbiased); first-order max |z| = 35.6 (8/11 gates beyond 3 SE, mean |bias|
            0.0743: biased); figure delta_estimators.png
Time on a 2-core CPU
    about 3 seconds; --quick (400 draws instead of 3,000) about 2.5.

    python tutorials/05_estimating_delta.py --out runs/tutorial5
"""
# %% [markdown]
# Every estimate is per example, Δ_i/N: the batch mean of ℓ_n(ξ_i = 1) − ℓ_n(ξ_i = 0)
# (docs/derivations/estimators.md, "What must be estimated").

# %% 1. Options
from _common import pyplot, save, tutorial_args

from minibern import backend as B
from minibern.bernoulli.estimators import ExactEstimator, FirstOrderEstimator, RemovalEstimator
from minibern.bernoulli.exact import exact_expected_loss
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.topology import gate_layers
from minibern.layers import Dense, ReLU, Sequential
from minibern.losses import softmax_cross_entropy
from minibern.optim import Adam

np = B.host
args = tutorial_args(__doc__, quick="400 draws instead of 3,000", out="runs/tutorial5")
rng = B.make_rng(args.seed)
np.set_printoptions(precision=4, suppress=True, linewidth=120)

# %% 2. A small task and a small gated network: 8 inputs → 6 gated units → 5 gated units → 3
# The labels come from a random "teacher" network, so there is something to learn.
N, D, CLASSES = 512, 8, 3
x_host = rng.standard_normal((N, D))
teacher = np.maximum(x_host @ rng.standard_normal((D, 6)), 0) @ rng.standard_normal((6, CLASSES))
labels_host = teacher.argmax(axis=1)
x, labels = B.asarray(x_host), B.asarray(labels_host)
kw = dict(rng=rng, dtype="float64")
net = Sequential(("fc1", Dense(D, 6, **kw)), ("relu1", ReLU()), ("gate1", BernoulliGate(6)),
                 ("fc2", Dense(6, 5, **kw)), ("relu2", ReLU()), ("gate2", BernoulliGate(5)),
                 ("fc3", Dense(5, CLASSES, **kw)))
gates = gate_layers(net)
for _, _, gate in gates:
    gate.rng = rng  # masks come from the seeded host generator (E0)
print(f"step 2: {N} examples, network {D}-6-5-{CLASSES} with {sum(g.n_units for *_, g in gates)} "
      f"gates: 2^11 = 2048 joint masks, few enough to enumerate (E9)")

# %% 3. Train the weights for a while with every gate on (θ = 1: the gates are the identity)
optimizer = Adam(lr=0.01)
for step in range(300):
    loss, dlogits = softmax_cross_entropy(net.forward(x), labels)
    net.backward(dlogits)
    optimizer.step(net)
print(f"step 3: after 300 full-batch Adam steps the training loss is {B.to_float(loss):.3f}")

# %% 4. Make the gates stochastic and compute Δ exactly by enumeration (E9)
# θ between 0.3 and 0.95: the masks now vary, and Δ_i is an expectation over the other gates.
for _, _, gate in gates:
    gate.theta[:] = np.linspace(0.3, 0.95, gate.n_units)
names = [f"{name}[{j}]" for _, name, gate in gates for j in range(gate.n_units)]
exact = np.concatenate([d for d, _ in ExactEstimator().estimate(net, x, labels).values()])
print(f"step 4: expected loss E_ξ[ℓ] = {exact_expected_loss(net, x, labels):.4f} over all "
      f"2048 masks; exact Δ_i/N per gate:\n        {exact}")

# %% 5. Draw minibatches and masks; estimate Δ both ways from each draw
# First-order (E3): the batch mean of ∂ℓ_n/∂ξ_{n,i} = Σ a·∂ℓ/∂y, left by the gate's backward.
# Removal (E4)–(E8): for each example, flip its ξ_{n,i}, re-run only the layers after the gate.
DRAWS, BATCH = (400 if args.quick else 3000), 32
first_order, removal = FirstOrderEstimator(), RemovalEstimator(subset=None)
estimates = {"first-order": np.empty((DRAWS, len(names))), "removal": np.empty((DRAWS, len(names)))}
for r in range(DRAWS):
    index = B.asarray(rng.choice(N, BATCH, replace=False))
    batch_images, batch_labels = x[index], labels[index]
    _, dlogits = softmax_cross_entropy(net.forward(batch_images), batch_labels)  # masks drawn here
    net.backward(dlogits)  # leaves ∂ℓ/∂ξ in each gate (E2)
    for name, estimator in (("first-order", first_order), ("removal", removal)):
        found = estimator.estimate(net, batch_images, batch_labels, rng)
        estimates[name][r] = np.concatenate([found[g][0] for _, g, _ in gates])

# %% 6. Bias and variance, in numbers
# The standard error of a mean over R independent draws is std/√R; a mean more than ~3
# standard errors from the exact Δ is biased, not unlucky.
summary = {}
print(f"step 6: {DRAWS} draws of a batch of {BATCH} with fresh masks; per gate: exact | "
      "mean ± standard error (z = distance in standard errors)")
for name, values in estimates.items():
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    se = std / np.sqrt(DRAWS)
    z = (mean - exact) / se
    summary[name] = dict(mean=mean, std=std, se=se, z=z)
for j, gate_name in enumerate(names):
    cells = "  ".join(f"{k} {s['mean'][j]:+.4f} ± {s['se'][j]:.4f} (z {s['z'][j]:+6.1f})"
                      for k, s in summary.items())
    print(f"        {gate_name:9s} {exact[j]:+.4f} | {cells}")
for name, s in summary.items():
    within = int((np.abs(s["z"]) <= 3).sum())
    print(f"        {name:11s}: max |z| = {np.abs(s['z']).max():.1f}, {within}/{len(names)} gates "
          f"within 3 standard errors, mean |bias| = {np.abs(s['mean'] - exact).mean():.4f}, "
          f"mean std per batch = {s['std'].mean():.4f}")
np.savez(args.out / "delta_estimates.npz", exact=exact, names=np.array(names),
         **{name.replace("-", "_"): values for name, values in estimates.items()})

# %% 7. The figure: bias (means ± 2 SE against the exact Δ), variance, one gate's spread
plt = pyplot()
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [2, 2, 1.3]})
positions = np.arange(len(names))
axes[0].plot(positions, exact, "kx", ms=8, mew=2, label="exact Δ (E9)")
for offset, (name, s) in zip((-0.15, 0.15), summary.items()):
    axes[0].errorbar(positions + offset, s["mean"], yerr=2 * s["se"], fmt="o", ms=4, capsize=2,
                     label=f"{name} mean ± 2 SE")
axes[0].set_ylabel("Δ_i / N")
axes[0].set_title(f"bias: {DRAWS} draws of {BATCH} examples and masks", fontsize=9)
for name, s in summary.items():
    axes[1].bar(positions + (-0.2 if name == "first-order" else 0.2), s["std"], width=0.4,
                label=name)
axes[1].set_ylabel("std of one estimate")
axes[1].set_title("variance: spread of a single minibatch estimate", fontsize=9)
for ax in axes[:2]:
    ax.set_xticks(positions)
    ax.set_xticklabels(names, rotation=60, fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
worst = int(np.argmax(np.abs(summary["first-order"]["z"])))
for name, values in estimates.items():
    axes[2].hist(values[:, worst], bins=40, alpha=0.6, label=name)
axes[2].axvline(exact[worst], color="k", lw=2, label="exact")
axes[2].set_title(f"{names[worst]}: single estimates", fontsize=9)
axes[2].legend(fontsize=7)
figure = save(fig, args.out / "delta_estimators.png")

# %% Result
fo, rm = summary["first-order"], summary["removal"]
print(f"tutorial 5: over {DRAWS} draws, removal max |z| = {np.abs(rm['z']).max():.1f} "
      f"({int((np.abs(rm['z']) <= 3).sum())}/{len(names)} gates within 3 SE of the exact Δ: "
      f"unbiased); first-order max |z| = {np.abs(fo['z']).max():.1f} "
      f"({int((np.abs(fo['z']) > 3).sum())}/{len(names)} gates beyond 3 SE, mean |bias| "
      f"{np.abs(fo['mean'] - exact).mean():.4f}: biased); figure {figure.name}")

# %% [markdown]
# ## Exercises
# 1. **More draws.** Compare `python tutorials/05_estimating_delta.py --quick` (400 draws) with
#    the full run (3,000). Before you run the second, predict: by what factor does the
#    first-order estimator's max |z| grow, and does the removal estimator's stay below 3? (The
#    bias does not depend on the draws; the standard error falls as 1/√R.)
# 2. **Smaller batches.** In step 5 set `BATCH = 8`. Predict: by what factor does each
#    estimator's "mean std per batch" grow (a mean over B examples), and does the removal
#    estimator stay unbiased? Which of the two summary lines of step 6 changes, which does not?
# 3. **Gates nearly on.** In step 4 set every θ to 0.99 (as in training, where most kept gates
#    sit at 1). Predict: does the first-order bias shrink or grow, and what happens to the
#    removal estimator's spread? (At θ = 1, ∂ℓ/∂ξ measures scaling a unit by 1 ± ε, not
#    removing it: docs/derivations/estimators.md, (E3).)
