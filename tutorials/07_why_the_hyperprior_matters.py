"""Tutorial 7: why the hyper-prior matters — the ablation, side by side with tutorial 6's run.

What you learn
    What the flattening hyper-prior does on a real network. The same gated LeNet-300-100, the
    same initial weights, the same batches and gate draws, trained twice: once as tutorial 6
    does (the hyper-prior, whose minimum over γ leaves the price κθ, linear in θ), and once with
    a fixed prior γ = ½ in its place (the paper's point of comparison; the CLI's
    ``--no-hyperprior --decide-alpha 0``, with θ started inside the box, step 2). With the
    hyper-prior the slope of the prior term is the constant κ/N and the projected step puts θ
    on exactly 0 or 1; with fixed γ it is
    (logit θ − logit γ)/N, which is ±∞ at the corners, so every θ stays strictly inside: a gate
    that is not needed hovers near γ instead of switching off, and no unit is ever removed.
Read alongside
    docs/derivations/bernoulli_objective.md — (B5)–(B6) the Bernoulli KL and its slope, (B7)–(B12)
    the hyper-prior and the flattened KL = κθ + c(κ), (B13)–(B17) the cost and why its minima
    are corners, (B18) the fixed-γ stationary point θ = σ(logit γ − Δ); then
    docs/derivations/convergence.md (C3)–(C7) for how the projected step holds θ on a corner.
    Tutorial 4 shows the same contrast on a toy solved exactly. The 20-epoch numbers over seeds:
    docs/RESULTS.md, grid "ablation".
Figures (in --out)
    ablation_trajectories.png — θ of 40 random gates per layer over training, the hyper-prior's
    run above, fixed γ below; ablation_hist.png — the final θ of every gate per layer, both runs.
    Each run's own directory (hyperprior/, fixed_gamma/) can be drawn in full with
    `python -m minibern plot DIR`.
You should see (the last line; full run, seed 0)
    tutorial 7: decided within 1e-3: 97.9% with the hyper-prior, 38.7% with fixed γ = ½ (25.2%
        of all gates certified at 0 by the decision rule, the rest by the θ step alone, with
        the hyper-prior); exactly 0 or 1: 1159 vs 0 gates; units removed: 778 vs 0; test error
        1.97% vs 2.02%; figures in runs/tutorial7
    and with --quick:
    tutorial 7: decided within 1e-3: 95.8% with the hyper-prior, 63.6% with fixed γ = ½ (6.1%
        of all gates certified at 0 by the decision rule, the rest by the θ step alone, with
        the hyper-prior); exactly 0 or 1: 943 vs 0 gates; units removed: 69 vs 0; test error
        11.27% vs 10.17%; figures in runs/tutorial7
Time on a 2-core CPU
    about a minute and a half for the two 20-epoch runs on an otherwise idle machine (many
    times that when other jobs share its two cores); --quick (4 epochs on 5,000 images, half
    the widths): about 6 seconds.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/07_why_the_hyperprior_matters.py --out runs/tutorial7
"""
# %% 1. Options, data and the run's settings (tutorial 6's, at half the widths in --quick)
from _common import gated_run, rule_share, show, training_tutorial

from minibern import backend as B
from minibern.bernoulli.config import GateConfig
from minibern.plots import compare_theta_histograms, compare_theta_trajectories, load_run

np = B.host
args, data, width, config = training_tutorial(__doc__, out="runs/tutorial7", model="lenet300",
                                              quick_epochs=4, quick_subset=5000)

# %% 2. Two priors on the gates, everything else equal
# With the hyper-prior the prior's gradient is κ_i/N (B15), a constant: the cost is linear in
# each θ_i (B16)–(B17), so the projected step (B20) can stop on a corner. With a fixed γ it is
# (logit θ_i − logit γ)/N (B6): −∞ at 0, +∞ at 1, so the step keeps θ in [ε, 1 − ε] (ε = 1e-6),
# θ starts at the box's top edge 1 − ε rather than at 1, and the stationary point
# θ_i = σ(logit γ − Δ_i) (B18) is interior. The decision rule (convergence.md (C8)–(C10))
# certifies corners, and fixed γ has none to certify: it is off there.
EPS = 1e-6
RUNS = {"hyper-prior": GateConfig(),
        "fixed γ = ½": GateConfig(hyperprior=False, gamma=0.5, decide_alpha=0.0,
                                  theta_init=1 - EPS)}
FOLDERS = {"hyper-prior": "hyperprior", "fixed γ = ½": "fixed_gamma"}
for label, gate_config in RUNS.items():
    print(f"step 2: {label:12s} hyperprior={gate_config.hyperprior}, κ = {gate_config.kappa}, "
          f"γ = {gate_config.gamma}, θ starts at {gate_config.theta_init}, decide_alpha = "
          f"{gate_config.decide_alpha}")
# The two slopes side by side (times N): κ for every θ with the hyper-prior; at the box's top
# edge, where fixed γ's θ starts, logit(1 − ε) − logit(γ) (B6), which for γ = ½ is ln((1 − ε)/ε).
kappa, gamma = RUNS["hyper-prior"].kappa, RUNS["fixed γ = ½"].gamma
edge = float(np.log((1 - EPS) / EPS) - np.log(gamma / (1 - gamma)))  # (B6) at θ = 1 − ε
print(f"step 2: N × slope of the prior: hyper-prior κ = {kappa} at every θ; fixed γ at θ = 1 − ε "
      f"(for γ = ½ it should be ln(1e6) = 13.82): got {edge:.2f} at γ = {gamma}, "
      f"{edge / kappa:.1f}× κ")

# %% 3. Train both from the same start (same seed: same weights, batch order and gate draws)
# Only the prior differs, so every difference below is the prior's doing. Each run writes its
# own directory (metrics.json, history.npz, checkpoint.npz) for steps 4–6 to read.
metrics = {}
for label, gate_config in RUNS.items():
    print(f"step 3: training with {label} ...")
    metrics[label], _ = gated_run(data, config, gate_config, args.out / FOLDERS[label],
                                  log=lambda line: None)
    seconds = metrics[label]["epoch_seconds"]
    print(f"        {len(seconds)} epochs in {sum(seconds):.1f} s, test error "
          f"{100 * metrics[label]['test_error']:.2f}%, architecture "
          f"{'-'.join(map(str, metrics[label]['architecture']))} from "
          f"{'-'.join(map(str, metrics[label]['architecture_start']))}")

# %% 4. Where did θ end? On a corner, within 1e-3 of one, or inside
# Removed units count as θ = 0 in the snapshots (they were exactly 0 when removed). Fixed γ's
# slope at the box's edges is ±logit(1 − ε)/N ≈ ±13.8/N, far steeper than κ/N: a θ step sized
# for the hyper-prior throws a gate the loss does not care about from one edge to the other,
# and the visit average (C3) holds it there for a while; only as the step size decays (B21)
# can such gates settle towards σ(logit γ − Δ_i) (B18). Within 1e-3 of a corner therefore does
# not mean decided here; exactly 0 — what removes a unit — never happens.
final = {}
for label in RUNS:
    run_metrics, history = load_run(args.out / FOLDERS[label])
    final[label] = theta = history["theta_snapshots"][-1]
    start = 0
    for gate in run_metrics["gates"]:
        layer = theta[start:start + gate["total"]]
        start += gate["total"]
        counts = [(layer == 0).sum(), ((layer > 0) & (layer <= 1e-3)).sum(),
                  ((layer > 1e-3) & (layer < 1 - 1e-3)).sum(),
                  ((layer >= 1 - 1e-3) & (layer < 1)).sum(), (layer == 1).sum()]
        inside = layer[(layer > 1e-3) & (layer < 1 - 1e-3)]
        median = f"median θ inside {np.median(inside):.3f}; " if inside.size else ""
        print(f"step 4: {label:12s} {gate['name']:8s} {gate['total']:4d} gates: "
              + " | ".join(f"{int(c):4d}" for c in counts) + f"   ({median}{gate['removed']} "
              "removed)")
print("        columns: exactly 0 | within 1e-3 of 0 | inside | within 1e-3 of 1 | exactly 1")
on_corner = {label: float(np.isin(final[label], (0.0, 1.0)).mean()) for label in RUNS}
print(f"step 4: gates exactly on 0 or 1 — fixed γ should have none: got "
      f"{100 * on_corner['fixed γ = ½']:.1f}%; the hyper-prior most (> 50%): got "
      f"{100 * on_corner['hyper-prior']:.1f}%")

# %% 5. The decided share: gates within 1e-3 of 0 or 1
# Without the hyper-prior a θ within 1e-3 of a corner is either a unit the loss needs badly
# (σ(logit γ − Δ_i) rounds towards 1 for a large negative Δ_i (B18)) or one still thrown to an
# edge (step 4); none is exactly 0, so none can leave the arrays (P6). With it, a unit the loss
# does not care about pays κ/N per step and ends exactly at 0.
decided = {label: metrics[label]["decided_1e-3"] for label in RUNS}
exact = {label: int(np.isin(final[label], (0.0, 1.0)).sum()) for label in RUNS}
removed = {label: sum(g["removed"] for g in metrics[label]["gates"]) for label in RUNS}
for label in RUNS:
    print(f"step 5: {label:12s} decided within 1e-3: {100 * decided[label]:5.1f}% of "
          f"{final[label].size} gates, {exact[label]} exactly 0 or 1, {removed[label]} units "
          "removed from the arrays")
print(f"step 5: units removed with fixed γ should be 0 (no θ is ever exactly 0): got "
      f"{removed['fixed γ = ½']}")

# %% 6. Figures: the two runs' trajectories and final histograms, one row each
# Where does each prior leave θ? Above (hyper-prior) the trajectories end on the lines θ = 0
# and θ = 1 and the histogram is two spikes; below (fixed γ) they hover inside the box.
runs = {label: args.out / FOLDERS[label] for label in RUNS}
figures = show([compare_theta_trajectories(runs, args.out / "ablation_trajectories.png"),
                compare_theta_histograms(runs, args.out / "ablation_hist.png")])
print(f"step 6: {', '.join(p.name for p in figures)}")

# %% Result
hyper, fixed = RUNS
print(f"tutorial 7: decided within 1e-3: {100 * decided[hyper]:.1f}% with the hyper-prior, "
      f"{100 * decided[fixed]:.1f}% with fixed γ = ½ ({rule_share(metrics[hyper])}, with the "
      f"hyper-prior); exactly 0 or 1: {exact[hyper]} vs "
      f"{exact[fixed]} gates; units removed: {removed[hyper]} vs {removed[fixed]}; test error "
      f"{100 * metrics[hyper]['test_error']:.2f}% vs {100 * metrics[fixed]['test_error']:.2f}%; "
      f"figures in {args.out}")

# %% [markdown]
# ## Exercises
# 1. **Move γ.** In step 2 give the fixed prior γ = 0.1 instead of ½ (`gamma=0.1`), then run
#    `python tutorials/07_why_the_hyperprior_matters.py --quick --out runs/tutorial7_gamma`.
#    Before you run it, predict from (B18) θ = σ(logit γ − Δ): where do the gates the loss does
#    not need settle now, and does any unit get removed? Check the "median θ inside" of step 4
#    and the units removed in step 5.
# 2. **Halve κ.** In step 2 give the hyper-prior's run `GateConfig(kappa=2.75)` and run with
#    `--quick --out runs/tutorial7_kappa`. Predict: more or fewer units removed than at κ = 5.5,
#    and does the decided share (step 5) still beat fixed γ's? The slope check of step 2 tells
#    you how much steeper fixed γ's edge is then.
# 3. **Take away the decision rule, keep the hyper-prior.** Give the hyper-prior's run
#    `GateConfig(decide_alpha=0.0)`. Predict: do gates still land exactly on 0 and 1 (which
#    step puts them there: the projected step (B20) or the rule (C9)?), and what does the final
#    line say where it quoted the rule's share? Compare the units removed with the run above.
