"""The experiment grids of docs/RESULTS.md: name → {"about", "runs": {run name: CLI args}}.

A run's name is ``<configuration>_seed<k>``: the table pools the seeds of a configuration.
Every run uses the package's defaults except what its arguments say, so a grid measures the
method as a user gets it.
"""
from __future__ import annotations

from minibern.cli.defaults import recipe_args

#: Each model's recipe (the CLI's defaults, spelled out so that a kept run's arguments say it).
LENET300 = ["--model", "lenet300", *recipe_args("lenet300")]
LENET5 = ["--model", "lenet5", *recipe_args("lenet5")]
LONGER = ["--model", "lenet300", "--epochs", "40", "--lr-decay", "5", "--gates"]
SEEDS = (0, 1, 2)

#: The robustness target's starts (docs/RESULTS.md, "robust by design"): three widths at init
#: scale 1, and 300-100 at init scales ½ and 2, as run-name suffixes and their arguments.
WIDTH_STARTS = {f"width{width}": ["--width-mult", width] for width in ("1", "2", "4")}
FIVE_STARTS = WIDTH_STARTS | {f"scale{scale}": ["--init-scale", scale] for scale in ("0.5", "2")}
FIVE_SEEDS = (0, 1, 2, 3, 4)
VISITS16 = ["--first-subset", "16", "--subset", "16"]


#: Runs of a mode this code no longer has (the snap rules, ``--snap-tol``): the results page
#: still reads their recorded files, the runner does not train them (their flags are gone; the
#: arguments are kept as the record of how they were made).
RECORDED_ONLY = {"convergence": ("legacy_snap_rules_seed0",)}


def seeded(configurations: dict, seeds=SEEDS) -> dict:
    """{configuration: args} → {configuration_seed<k>: args + --seed k}."""
    return {f"{name}_seed{seed}": [*args, "--seed", str(seed)]
            for name, args in configurations.items() for seed in seeds}


GRIDS = {
    "lenet300": {
        "about": "gated LeNet-300-100 with and without the decision rule; the un-gated baseline",
        "runs": seeded({
            "gated": [*LENET300, "--gates"],
            "gated_no_rule": [*LENET300, "--gates", "--decide-alpha", "0"],
            "plain": LENET300,
        }, seeds=FIVE_SEEDS),
    },
    "convergence": {
        "about": "what each part of the θ step does (seed 0): raw estimates, the fast decay, "
                 "certificates at 1, the legacy snap rules",
        "runs": seeded({
            "raw_estimates": [*LENET300, "--gates", "--average-visits", "1", "--decide-alpha",
                              "0"],
            "fast_decay": [*LENET300, "--gates", "--theta-decay", "0.5", "--decide-alpha", "0"],
            "fast_decay_certify_both": [*LENET300, "--gates", "--theta-decay", "0.5",
                                        "--decide-at-one"],
            "certify_both": [*LENET300, "--gates", "--decide-at-one"],
            "legacy_snap_rules": [*LENET300, "--gates", "--average-visits", "1", "--theta-decay",
                                  "0.5", "--decide-alpha", "0", "--snap-tol", "0.01"],
        }, seeds=(0,)),
    },
    "kappa": {
        "about": "the size–error trade-off: κ per unit below the default 5.5",
        "runs": seeded({f"kappa{kappa}": [*LENET300, "--gates", "--kappa", kappa]
                        for kappa in ("0.5", "1", "2.5")}),
    },
    "robustness": {
        "about": "gated LeNet-300-100 from 300-100, 600-200, 1200-400 and at init scales 0.5, 2",
        "reference": "width1_scale1",
        "runs": seeded({
            "width1_scale1": [*LENET300, "--gates"],
            "width2_scale1": [*LENET300, "--gates", "--width-mult", "2"],
            "width4_scale1": [*LENET300, "--gates", "--width-mult", "4"],
            "width1_scale0.5": [*LENET300, "--gates", "--init-scale", "0.5"],
            "width1_scale2": [*LENET300, "--gates", "--init-scale", "2"],
        }),
    },
    "unit_cost": {
        "about": "κ per expected parameter (B14′) instead of per unit, from 300-100, 600-200 and "
                 "1200-400 (κ = 0.2: three seeds; the others seed 0)",
        "reference": {f"expected{kappa}_width{width}": f"expected{kappa}_width1"
                      for kappa in ("0.03", "0.1", "0.2") for width in ("1", "2", "4")},
        "runs": {name: args for kappa, seeds in (("0.03", (0,)), ("0.1", (0,)), ("0.2", SEEDS))
                 for name, args in seeded({f"expected{kappa}_width{width}": [
                     *LENET300, "--gates", "--kappa-expected-params", "--kappa", kappa,
                     "--width-mult", width] for width in ("1", "2", "4")}, seeds=seeds).items()},
    },
    "warmup": {
        "about": "the θ step ramped up over the first epoch (B21′), from 300-100 and 600-200, "
                 "with θ₀ = 1 and with θ₀ = ½ (dropout from the start); and over the first five "
                 "or ten epochs from θ₀ = ½, a longer adaptive-dropout phase (seed 0)",
        "reference": {f"{name}_width{width}": f"{name}_width1"
                      for name in ("warmup1", "warmup1_theta0.5", "warmup5_theta0.5",
                                   "warmup10_theta0.5")
                      for width in ("1", "2")},
        "runs": seeded({f"{name}_width{width}": [*LENET300, "--gates", "--theta-warmup", epochs,
                                                 *extra, "--width-mult", width]
                        for name, epochs, extra in (
                            ("warmup1", "1", []),
                            ("warmup1_theta0.5", "1", ["--theta-init", "0.5"]),
                            ("warmup5_theta0.5", "5", ["--theta-init", "0.5"]),
                            ("warmup10_theta0.5", "10", ["--theta-init", "0.5"]))
                        for width in ("1", "2")}, seeds=(0,)),
    },
    "weight_prior": {
        "about": "the Gaussian weight prior of (B3) switched on (--weight-decay = 1/(Nσ²)), from "
                 "300-100 and 600-200 (seed 0)",
        "reference": {f"decay{decay}_width{width}": f"decay{decay}_width1"
                      for decay in ("1e-4", "5e-4") for width in ("1", "2")},
        "runs": seeded({f"decay{decay}_width{width}": [*LENET300, "--gates", "--weight-decay",
                                                       decay, "--width-mult", width]
                        for decay in ("1e-4", "5e-4") for width in ("1", "2")}, seeds=(0,)),
    },
    "theta_step": {
        "about": "the θ step decaying over 20 epochs instead of 5 (τ of (B21)), so that it is still "
                 "large when the slope of a wide layer's units is small (docs/FINDINGS.md §3), from "
                 "300-100, 600-200 and 1200-400 (seed 0)",
        "reference": {f"decay20_width{width}": "decay20_width1" for width in ("1", "2", "4")},
        "runs": seeded({f"decay20_width{width}": [*LENET300, "--gates", "--theta-decay", "20",
                                                  "--width-mult", width]
                        for width in ("1", "2", "4")}, seeds=(0,)),
    },
    "gradients": {
        "about": "the default from 300-100 and 600-200, run again so that history.npz holds "
                 "gradient_snapshots, each gate's averaged Δ̂ + κ per epoch (seed 0)",
        "reference": {"default_width2": "default_width1"},
        "runs": seeded({f"default_width{width}": [*LENET300, "--gates", "--width-mult", width,
                                                  "--snapshot-every", "0"]
                        for width in ("1", "2")}, seeds=(0,)),
    },
    "optimizer": {
        "about": "momentum SGD (η = 0.05, momentum 0.9) instead of Adam, from 300-100, 600-200 "
                 "and 1200-400: Adam moves every weight by about η per step whatever its "
                 "gradient's size, so each kept unit can grow its own share of the logits' "
                 "margin (docs/FINDINGS.md §3); and with the Gaussian weight prior of (B3) "
                 "(--weight-decay 1/(Nσ²) = 5e-4), which SGD applies in full where Adam "
                 "rescales it (seed 0)",
        "reference": {f"sgd{decay}_width{width}": f"sgd{decay}_width1"
                      for decay in ("", "_decay5e-4") for width in ("1", "2", "4")},
        "runs": seeded({f"sgd{name}_width{width}": [*LENET300, "--gates", "--optimizer", "sgd",
                                                    "--lr", "0.05", *extra, "--width-mult", width]
                        for name, extra in (("", []),
                                            ("_decay5e-4", ["--weight-decay", "5e-4"]))
                        for width in ("1", "2", "4")}, seeds=(0,)),
    },
    "certify_at_one": {
        "about": "the decision rule at both vertices (--decide-at-one, (C10′)) from 300-100, "
                 "600-200 and 1200-400: a gate certified at 1 is frozen and no longer estimated "
                 "(seed 0)",
        "reference": {f"at_one_width{width}": "at_one_width1" for width in ("1", "2", "4")},
        "runs": seeded({f"at_one_width{width}": [*LENET300, "--gates", "--decide-at-one",
                                                 "--width-mult", width]
                        for width in ("1", "2", "4")}, seeds=(0,)),
    },
    "longer": {
        "about": "the default gated run trained for 40 epochs instead of 20, from 300-100 "
                 "(seed 0), and from 600-200, 1200-400 and 600-200 at init scales 0.5 and 2 "
                 "(seeds 0–2), against 300-100 and against 600-200; from 600-200 and 1200-400 "
                 "without the decision rule too (seed 0)",
        "reference": {"gated_40_epochs_width2": "gated_40_epochs",
                      **{f"gated_40_epochs_{name}": "gated_40_epochs_width2"
                         for name in ("width4", "width2_scale0.5", "width2_scale2",
                                      "width2_no_rule", "width4_no_rule")}},
        "runs": {**seeded({"gated_40_epochs": LONGER}, seeds=(0,)),
                 **seeded({f"gated_40_epochs_{name}": [*LONGER, *extra] for name, extra in (
                     ("width2", ["--width-mult", "2"]), ("width4", ["--width-mult", "4"]),
                     ("width2_scale0.5", ["--width-mult", "2", "--init-scale", "0.5"]),
                     ("width2_scale2", ["--width-mult", "2", "--init-scale", "2"]))}),
                 **seeded({f"gated_40_epochs_{name}_no_rule": [*LONGER, "--decide-alpha", "0",
                                                               "--width-mult", width]
                           for name, width in (("width2", "2"), ("width4", "4"))}, seeds=(0,))},
    },
    "protocol": {
        "about": "the default gated LeNet-300-100 and the un-gated baseline trained for 40 "
                 "epochs, with the test error of every epoch in history.npz, so that the "
                 "protocols of the published numbers can be compared: the final epoch of 20 or "
                 "40, the epoch of lowest validation error, the best test epoch",
        "runs": seeded({"gated": [*LENET300, "--gates", "--epochs", "40"],
                        "plain": [*LENET300, "--epochs", "40"]}),
    },
    "compensated": {
        "about": "two departures for a width that does not depend on the start, from "
                 "300-100, 600-200 and 1200-400: θ kept inside "
                 "[0.05, 0.95] for the first two epochs (R7, seed 0), the compensated removal "
                 "estimator (R1)–(R6) of docs/derivations/compensated.md (seeds 0–2), and both "
                 "(seeds 0–2), the compensated estimator with θ bound to epoch 5 instead (seed "
                 "0), both with the rule certifying at 1 too ((C10′), seed 0) and without the "
                 "decision rule (seed 0), and the "
                 "compensated estimator at κ = 2 (seed 0); the compensated estimator "
                 "alone and with either bound also from 300-100 at init scales 0.5 and 2, and "
                 "with the bound to epoch 2 at those scales with Adam's step η scaled alike "
                 "(η = 5e-4 and 2e-3, seed 0: does the init scale act through the step's size "
                 "relative to the weights?); the default's runs are the `robustness` grid's",
        "reference": {f"{name}_width{width}": f"{name}_width1"
                      for name in ("bound2", "compensated", "compensated_bound2",
                                   "compensated_bound5", "compensated_bound2_at_one",
                                   "compensated_bound2_no_rule", "compensated_kappa2")
                      for width in ("1", "2", "4")},
        "runs": {name: args for configuration, extra, seeds, starts in (
                     ("bound2", ["--theta-bound-epochs", "2"], (0,), WIDTH_STARTS),
                     ("compensated", ["--estimator", "compensated"], SEEDS, FIVE_STARTS),
                     ("compensated_bound2", ["--estimator", "compensated",
                                             "--theta-bound-epochs", "2"], SEEDS, FIVE_STARTS),
                     ("compensated_bound5", ["--estimator", "compensated",
                                             "--theta-bound-epochs", "5"], (0,), FIVE_STARTS),
                     ("compensated_bound2_at_one", ["--estimator", "compensated",
                                                    "--theta-bound-epochs", "2",
                                                    "--decide-at-one"], (0,), FIVE_STARTS),
                     ("compensated_bound2_no_rule", ["--estimator", "compensated",
                                                     "--theta-bound-epochs", "2",
                                                     "--decide-alpha", "0"], (0,), FIVE_STARTS),
                     ("compensated_kappa2", ["--estimator", "compensated", "--kappa", "2"],
                      (0,), WIDTH_STARTS))
                 for name, args in seeded({
                     f"{configuration}_{start}": [*LENET300, "--gates", *extra, *start_args]
                     for start, start_args in starts.items()}, seeds=seeds).items()}
                | seeded({f"compensated_bound2_scale{scale}_lr{lr}": [
                              *LENET300, "--gates", "--estimator", "compensated",
                              "--theta-bound-epochs", "2", "--init-scale", scale, "--lr", lr]
                          for scale, lr in (("0.5", "5e-4"), ("2", "2e-3"))}, seeds=(0,)),
    },
    "ablation": {
        "about": "no hyper-prior (fixed γ = 0.5) and no decision rule: θ stays inside",
        "runs": seeded({
            "no_hyperprior": [*LENET300, "--gates", "--no-hyperprior", "--decide-alpha", "0"],
        }, seeds=(0,)),
    },
    "trajectories": {
        "about": "the seed-0 runs of the page's θ-trajectory figure, the default and the fixed-γ "
                 "ablation, again with θ recorded five times per epoch (the CLI's default): the "
                 "last hidden layer's gates settle within the first epoch",
        "runs": {"gated_seed0": [*LENET300, "--gates", "--seed", "0"],
                 "no_hyperprior_seed0": [*LENET300, "--gates", "--no-hyperprior",
                                         "--decide-alpha", "0", "--seed", "0"]},
    },
    "audit": {
        "about": "the rule's decisions at 0 audited too: units stay in the arrays (--no-prune)",
        "runs": seeded({"no_prune": [*LENET300, "--gates", "--no-prune"]}, seeds=(0,)),
    },
    "timing": {
        "about": "whole-run wall time, gated (with the default rule, and certifying at both "
                 "vertices) against un-gated, alternated one run at a time on an otherwise idle "
                 "machine (`--jobs 1`)",
        "runs": {**{name: args for seed in (0, 1) for name, args in (
            (f"gated_seed{seed}", [*LENET300, "--gates", "--no-audit", "--seed", str(seed)]),
            (f"gated_at_one_seed{seed}", [*LENET300, "--gates", "--decide-at-one", "--no-audit",
                                          "--seed", str(seed)]),
            (f"plain_seed{seed}", [*LENET300, "--seed", str(seed)]))},
            "lenet5_gated_seed0": [*LENET5, "--gates", "--no-audit", "--seed", "0"],
            "lenet5_plain_seed0": [*LENET5, "--seed", "0"]},
    },
    "lenet5": {
        "about": "gated LeNet-5-Caffe (conv1, conv2 filters, fc1 units) and the un-gated "
                 "baseline; `visits16`: the gated run "
                 "with 16 filters visited per step in conv1 and conv2 (LeNet-300-100's visits) "
                 "instead of LeNet-5's 2 and 4; `bound2`: the gated run with θ kept inside "
                 "[0.05, 0.95] for the first two epochs (R7 of docs/derivations/compensated.md), "
                 "also without the decision rule (seed 0)",
        "runs": {**seeded({"gated": [*LENET5, "--gates"],
                           "gated_visits16": [*LENET5, "--gates", *VISITS16],
                           "plain": LENET5}, seeds=FIVE_SEEDS),
                 **seeded({"gated_visits16_fast_decay_certify_both": [
                     *LENET5, "--gates", *VISITS16, "--theta-decay", "0.5", "--decide-at-one"]},
                          seeds=(0,)),
                 **seeded({"gated_bound2": [*LENET5, "--gates", "--theta-bound-epochs", "2"]},
                          seeds=SEEDS),
                 **seeded({"gated_bound2_no_rule": [*LENET5, "--gates", "--theta-bound-epochs",
                                                    "2", "--decide-alpha", "0"]}, seeds=(0,))},
    },
}
