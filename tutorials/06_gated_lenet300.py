"""Tutorial 6 (the main job): learn which units LeNet-300-100 needs, with Bernoulli gates.

What you learn
    The method at full scale, on MNIST: a Bernoulli gate on every input pixel and hidden unit of
    LeNet-300-100, its keep-probability θ learned by projected Robbins–Monro SGD on the
    variational objective with the flattening hyper-prior (tutorial 4), Δ estimated by the
    unbiased removal estimator (tutorial 5), the weights trained by Adam at the same time. You
    watch each θ travel to exactly 0 or exactly 1, units at 0 leave the weight arrays while the
    network trains (so epochs get cheaper), the input pixels that survive form the digit area,
    and the final deterministic network is several times smaller, at a test error a few tenths
    of a point above the un-gated network's (docs/RESULTS.md).
Read alongside
    docs/derivations/bernoulli_objective.md — (B1)–(B2) the gated model, (B11) the flattened
    KL = κθ + const, (B15)–(B17) why the solutions are deterministic, (B20)–(B22) the θ step;
    docs/derivations/estimators.md — (E4)–(E8) the removal estimator, (E10) the θ-gradient;
    docs/derivations/convergence.md — (C3)–(C7) the step on visit averages, (C8)–(C10) the
    decision rule, (C11)–(C12) the audit; docs/derivations/pruning.md — (P1)–(P6) physical
    removal; then minibern/bernoulli/gate.py, estimators.py, theta_step.py (with prices.py and
    averaging.py), rules.py, prune_trigger.py and hook.py, which runs them in that order. Measured
    results over seeds, with and without the decision rule: docs/RESULTS.md; step costs:
    docs/BENCHMARKS.md.
Figures (in --out, drawn from the run directory alone: `python -m minibern plot DIR` redraws them)
    theta_trajectories.png — θ of 40 random gates per layer over training, each travelling to 0
    or 1; theta_hist.png — θ histograms per layer over the epochs; input_pixels.png — θ of the
    784 input gates as 28 × 28 images and the surviving pixels; units_per_layer.png — kept
    units (θ ≥ ½) and units still in the arrays per epoch; theta_decided.png; val_error.png;
    loss.png; epoch_seconds.png. Also model.npz, the pruned deterministic network that
    tutorial 10 runs with NumPy alone.
Time on a 2-core CPU
    about a minute for the 20 epochs (the later ones faster, as units are removed); --quick
    (2 epochs on 5,000 images): under half a minute.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/06_gated_lenet300.py --out runs/tutorial6
"""
# %% 1. Options and data
from _common import rule_share, show, tutorial_args

from minibern.bernoulli.export import export_and_score
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.gated_models import lenet300_100
from minibern.bernoulli.hook import GateTrainer
from minibern.data import load_mnist
from minibern.plots import plot_run
from minibern.training.config import steps_per_epoch as steps_per_epoch_of
from minibern.training.trainer import TrainConfig, Trainer, device_splits, run_rngs, write_run_files


def options(parser):
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--kappa", type=float, default=GateConfig.kappa,
                        help="κ, the cost of keeping one unit (B15)")
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA)")


args = tutorial_args(__doc__, quick="2 epochs on 5,000 images", out="runs/tutorial6",
                     extra=options)
data = load_mnist(args.data)  # host arrays; the last 5,000 training images validate

# %% 2. A gated LeNet-300-100: gates on the 784 inputs and on both hidden layers (B1)
# Each gate multiplies its unit by ξ ~ Bern(θ), drawn per example (E1); θ starts at 1, where a
# gate is the identity and draws nothing. The output layer is never gated.
config = TrainConfig(model="lenet300", epochs=2 if args.quick else args.epochs, seed=args.seed,
                     train_subset=5000 if args.quick else None, lr_decay=5.0)
net = lenet300_100(seed=run_rngs(config.seed)[0], gates=True, theta_init=1.0)
splits = device_splits(data, net.input_shape, config.train_subset)
print("step 2: " + "  ".join(f"{name} {type(layer).__name__}" for name, layer in net))

# %% 3. How θ learns: the defaults of GateConfig (docs/derivations/convergence.md)
# Per step, the removal estimator measures Δ for the last hidden layer's gates and for 16 random
# gates of each earlier layer (E4)–(E8). Each visited gate folds its estimate Δ/N + κ/N (E10)
# into its average over its last ~40 visits (C3), and θ takes the projected step on that average,
# θ ← clip(θ − η_t · average, 0, 1) with η_t = 50/(1 + epoch/5) (C6), (B20)–(B21): θ stays exactly
# on 0 or 1 while the average points there (C7). A gate at 0 whose average is confidently
# positive is certified and frozen (C10); a unit at θ = 0 for 30 visits leaves the arrays (P6).
# snapshot_every records θ of every gate five times per epoch, for the trajectories.
steps_per_epoch = steps_per_epoch_of(splits["train"].size, config.batch_size)  # ⌈N / B⌉
gate_config = GateConfig(kappa=args.kappa, snapshot_every=max(1, steps_per_epoch // 5))
gates = GateTrainer(net, gate_config, n_data=splits["train"].size)
print(f"step 3: κ = {gate_config.kappa} per unit, estimator {gate_config.estimator}, "
      f"θ step {gate_config.theta_lr}/(1 + epoch/{gate_config.theta_decay}), "
      f"θ snapshot every {gate_config.snapshot_every} of {steps_per_epoch} steps per epoch")

# %% 4. Train weights (Adam, rate 1e-3/(1 + epoch/5)) and θ together; checkpoint every epoch
# Each epoch's log line counts the gates at 0 / at 1 / undecided per layer.
trainer = Trainer(net, splits, config, hooks=[gates], log=print)
metrics = trainer.fit(args.out)

# %% 5. The deterministic network, exported as plain arrays (X1)–(X4)
# Every gate becomes 1[θ ≥ ½], folded into the next layer; units at 0 are dropped. Read back by
# the engine, model.npz must score exactly the network's test error.
metrics["export_test_error"] = export_and_score(net, args.out / "model.npz", data.test_images,
                                                data.test_labels)
write_run_files(args.out, metrics)
for gate in metrics["gates"]:
    print(f"step 5: {gate['name']:8s} {gate['total']:4d} gates: {gate['at_one']:4d} at 1, "
          f"{gate['at_zero']:4d} at 0 ({gate['removed']} removed from the arrays), "
          f"{gate['undecided']:4d} undecided")

# %% 6. Figures, drawn from the run directory alone
paths = show(plot_run(args.out))
print(f"step 6: {len(paths)} figures: {', '.join(p.name for p in paths)}")

# %% Result
seconds = metrics["epoch_seconds"]
print(f"tutorial 6: gated LeNet-300-100, {metrics['epochs']} epochs: architecture "
      f"{'-'.join(map(str, metrics['architecture']))} from "
      f"{'-'.join(map(str, metrics['architecture_start']))} (params "
      f"×{metrics['compression_params']:.1f} fewer), epoch {seconds[0]:.1f} s → "
      f"{seconds[-1]:.1f} s as units were removed, test error "
      f"{100 * metrics['test_error']:.2f}% (model.npz: "
      f"{100 * metrics['export_test_error']:.2f}%), gates decided "
      f"{100 * metrics['decided_1e-2']:.1f}% (within 0.01; {rule_share(metrics)}); figures in "
      f"{args.out}")
