"""Tutorial 9: robustness — does the learned architecture depend on where training starts?

What you learn
    Whether the kept widths are a property of the task or of the starting point. A pruning
    method that keeps "a fixed fraction" would keep twice as many units from a network twice as
    wide; the Bernoulli gates price every unit at κ (B14)–(B15) and keep the ones whose removal
    costs the loss more than κ (B17); if that is all that decides, then from 300-100, 600-200
    or 1200-400, and from weights initialised at half or twice the usual scale, they land on
    similar widths. This tutorial measures whether they do, and where they do not. You read
    the run directories of the repository's grid "robustness" (three seeds per starting point),
    pool the seeds of each configuration, and compare each layer's kept units with the
    reference configuration's (±15 % band).
Read alongside
    docs/derivations/bernoulli_objective.md — (B14)–(B17) the price per unit and why a gate ends
    at 0 or 1; docs/derivations/convergence.md — (C3)–(C10) what decides a gate;
    minibern/bernoulli/run.py (how a run is built: the network, its splits, the gate hook, the
    trainer). The 20-epoch numbers over seeds: docs/RESULTS.md, grid "robustness", whose runs
    lie in experiments/runs/robustness/<configuration>_seed<k>/ (metrics.json, history.npz).
    `--grid longer` reads the 40-epoch runs of experiments/runs/longer/ instead, whose starts
    from 600-200 and 1200-400 and at init scales 0.5 and 2 are compared with 600-200
    (docs/derivations/convergence.md §6 says why that reference).
Figures (in --out)
    robustness.png — kept units per gated layer (one panel each) against the configuration:
    every seed's run as a dot, the mean as a bar, the reference's mean ±15 % as a band.
    kept_per_epoch.png — each configuration's kept units per layer after every epoch (mean
    over its seeds): where the widths part or meet during training.
Time on a 2-core CPU
    reading the runs takes seconds (training the 20-epoch grid took hours). --quick trains a
    small grid of its own instead — widths ×0.25 and ×0.5, init scales 0.5, 1 and 2, three
    seeds, 3 epochs on 3,000 images, into --out/runs — in about a minute.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/09_robustness.py --out runs/tutorial9
"""
# %% 1. Options
import sys
from pathlib import Path

from _common import mnist_options, pyplot, save, tutorial_args

from minibern import backend as B
from minibern.plots import load_run

np = B.host
RUNS = Path(__file__).resolve().parents[1] / "experiments" / "runs"


def runs_option(parser):
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help="folder holding the grids' run directories (default "
                             "experiments/runs)")
    parser.add_argument("--grid", choices=("robustness", "longer"), default="robustness",
                        help="the runs to read: robustness (20 epochs, default) or longer "
                             "(40 epochs, three seeds from 600-200 and 1200-400)")
    parser.add_argument("--reference", default=None,
                        help="the configuration the others are compared with (default: "
                             "width1_scale1, the 300-100 start; for longer, "
                             "gated_40_epochs_width2, the 600-200 start)")


args = tutorial_args(__doc__, quick="train and draw a small grid of its own in --out/runs",
                     out="runs/tutorial9", extra=mnist_options(more=runs_option))
if args.quick and (args.grid != "robustness" or args.reference):
    sys.exit("error: --quick trains and draws a small grid of its own; leave out --grid and "
             "--reference, or leave out --quick to read the repository's runs")

# %% 2. The configurations: a starting point each, run once per seed as `<config>_seed<k>`
# Each is LeNet-300-100 with the default gates, trained with Adam at 1e-3/(1 + epoch/5); only
# the starting width (--width-mult: ×1 = 300-100, ×2 = 600-200, ×4 = 1200-400) and the scale of
# the initial weights (--init-scale, ×He's) change. If the gates decide by the price κ alone,
# the kept widths should not follow the starting width.
GRIDS = {
    "robustness": {  # 20 epochs; against the 300-100 start
        "reference": "width1_scale1",
        "configs": {"width1_scale1": (1, 1), "width2_scale1": (2, 1), "width4_scale1": (4, 1),
                    "width1_scale0.5": (1, 0.5), "width1_scale2": (1, 2)}},
    "longer": {  # 40 epochs; against 600-200 (the 300-100 start has one seed)
        "reference": "gated_40_epochs_width2",
        "configs": {"gated_40_epochs": (1, 1), "gated_40_epochs_width2": (2, 1),
                    "gated_40_epochs_width4": (4, 1), "gated_40_epochs_width2_scale0.5": (2, 0.5),
                    "gated_40_epochs_width2_scale2": (2, 2)}},
}
if args.quick:  # the same question, shrunk: 75-25 and 150-50, init scales 0.5, 1 and 2
    GRIDS["robustness"] = {
        "reference": "width0.25_scale1",
        "configs": {"width0.25_scale1": (0.25, 1), "width0.5_scale1": (0.5, 1),
                    "width0.25_scale0.5": (0.25, 0.5), "width0.25_scale2": (0.25, 2)}}
grid = GRIDS[args.grid]
configs, reference = grid["configs"], args.reference or grid["reference"]
root = (args.out / "runs" if args.quick else args.runs) / args.grid
if reference not in configs:
    sys.exit(f"error: --reference {reference!r} is not a configuration of the grid "
             f"{args.grid!r}; choose one of {', '.join(configs)}")
print(f"step 2: grid {args.grid!r} under {root}: {len(configs)} configurations, reference "
      f"configuration {reference!r}")

# %% 3. --quick: train the small grid with the package's run builder (a finished run is kept)
# build_run makes the run the CLI would make with these settings: the network drawn from the
# seed's weight stream, gated, its splits on the backend, the gate hook priced for N (B15).
if args.quick:
    from minibern.bernoulli.config import GateConfig
    from minibern.bernoulli.run import build_run
    from minibern.data import load_mnist
    from minibern.training.trainer import TrainConfig, write_run_files

    data = load_mnist(args.data)  # host arrays; the last 5,000 training images validate
    trained = 0
    for config, (width, scale) in configs.items():
        for seed in range(args.seed, args.seed + 3):
            out = root / f"{config}_seed{seed}"
            if (out / "metrics.json").exists():
                continue
            run = TrainConfig(model="lenet300", epochs=3, seed=seed, lr_decay=5.0,
                              width_mult=width, init_scale=scale, train_subset=3000)
            trainer = build_run(run, data, GateConfig(), log=lambda message: None)
            write_run_files(out, trainer.fit(out))  # checkpoint, history.npz, metrics.json
            trained += 1
    print(f"step 3: {trained} runs trained, {3 * len(configs) - trained} already there")

# %% 4. Read every run's kept architecture (metrics.json) and kept units per epoch
# (history.npz); pool the seeds of each configuration
kept, per_epoch, layers = {}, {}, None
for config in configs:
    directories = sorted(root.glob(f"{config}_seed*"),
                         key=lambda path: int(path.name.rsplit("_seed", 1)[1]))
    for directory in (d for d in directories if (d / "metrics.json").exists()):
        metrics, history = load_run(directory)
        layers = layers or [gate["name"] for gate in metrics["gates"]]
        kept.setdefault(config, []).append(metrics["architecture"])
        per_epoch.setdefault(config, []).append([history[f"kept_{name}"] for name in layers])
if reference not in kept:
    sys.exit(f"error: no run of the reference {reference!r} under {root} (no "
             f"{reference}_seed<k>/metrics.json); pass --runs with the folder that holds "
             f"{args.grid}/, or pass --quick to train a small grid")
stats = {config: [(np.mean(layer), np.std(layer, ddof=1) if len(layer) > 1 else 0.0)
                  for layer in zip(*archs)] for config, archs in kept.items()}  # over seeds
for config, archs in kept.items():
    print(f"step 4: {config:20s} {len(archs)} seed(s): kept "
          + "  ".join(f"{layer} {m:6.1f} ± {sd:5.1f}" for layer, (m, sd) in zip(layers,
                                                                               stats[config])))

# %% 5. The spread: each configuration's mean kept units against the reference's, per layer
# A starting point that leaves a layer outside ±15 % of the reference's mean is one where the
# start, not the price κ, decided that layer's width.
base = [m for m, _ in stats[reference]]
spreads = {}
for config in kept:
    if config != reference:
        spreads[config] = [100 * (m / b - 1) for (m, _), b in zip(stats[config], base)]
        print(f"step 5: spread {config:20s} "
              + "  ".join(f"{layer} {s:+6.1f} %" for layer, s in zip(layers, spreads[config])))

# %% 6. The figures: kept units against the start, one panel per gated layer; and per epoch
plt = pyplot()
names = list(kept)
fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6))
for i, (ax, layer) in enumerate(zip(np.atleast_1d(axes), layers)):
    ax.axhspan(0.85 * base[i], 1.15 * base[i], color="C2", alpha=0.2,
               label=f"{reference} ±15 %")
    for x, config in enumerate(names):
        values = [a[i] for a in kept[config]]
        ax.bar(x, np.mean(values), width=0.6, color="0.8", edgecolor="0.4")
        ax.plot(x + np.linspace(-0.15, 0.15, len(values)), values, "o", color="C0", ms=4)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"{layer}: kept units (θ ≥ ½)")
    ax.set_title(f"{layer}: bars the mean, dots the seeds", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
figure = save(fig, args.out / "robustness.png")

fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.4))
for i, (ax, layer) in enumerate(zip(np.atleast_1d(axes), layers)):
    for config in names:
        counts = np.mean([np.asarray(run[i], dtype=float) for run in per_epoch[config]], axis=0)
        ax.plot(np.arange(1, len(counts) + 1), counts, marker=".", label=config,
                lw=2.5 if config == reference else 1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{layer}: kept units (θ ≥ ½)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
np.atleast_1d(axes)[0].legend(fontsize=6)
epochs_figure = save(fig, args.out / "kept_per_epoch.png")
print(f"step 6: {figure.name}, {epochs_figure.name}")

# %% Result
worst = max(((abs(s), config, layer) for config, values in spreads.items()
             for layer, s in zip(layers, values)), default=(0.0, reference, layers[0]))
inside = sum(abs(s) <= 15 for values in spreads.values() for s in values)
print(f"tutorial 9: {len(kept)} configurations, {sum(map(len, kept.values()))} runs; "
      f"{inside} of {len(spreads) * len(layers)} layer means within ±15 % of {reference}, "
      f"largest spread {worst[0]:.1f} % ({worst[1]}, {worst[2]}); figure {figure}")
