"""Tutorial 9: robustness — does the learned architecture depend on where training starts?

What you learn
    Whether the kept widths are a property of the task or of the starting point. A pruning
    method that keeps "a fixed fraction" would keep twice as many units from a network twice as
    wide; the Bernoulli gates price every unit at κ (B14)–(B15) and keep the ones whose removal
    costs the loss more than κ (B17); if that is all that decides, then from 300-100, 600-200
    or 1200-400, and from weights initialised at half or twice the usual scale, they land on
    similar widths. This tutorial measures whether they do, and where they do not. You read
    the experiment runner's grid of run directories, pool the seeds of each configuration, and
    compare each layer's kept units with the reference configuration's (±15 % band).
Read alongside
    docs/derivations/bernoulli_objective.md — (B14)–(B17) the price per unit and why a gate ends
    at 0 or 1; docs/derivations/convergence.md — (C3)–(C10) what decides a gate;
    experiments/grids.py (the grid "robustness": every run's arguments) and experiments/sweep.py
    (the runner, the table and the spread this tutorial draws). The 20-epoch numbers over seeds:
    docs/RESULTS.md, grid "robustness". `--grid longer` reads the 40-epoch grid instead, whose
    starts from 600-200 and 1200-400 and at init scales 0.5 and 2 are compared with 600-200
    (docs/derivations/convergence.md §6 says why that reference).
Figures (in --out)
    robustness.png — kept units per gated layer (one panel each) against the configuration:
    every seed's run as a dot, the mean as a bar, the reference's mean ±15 % as a band.
Time on a 2-core CPU
    reading the grid takes seconds; training it (`python experiments/sweep.py run robustness`)
    takes hours. --quick trains its own small grid instead — widths ×0.25 and ×0.5, init scales
    0.5, 1 and 2, three seeds, 3 epochs on 3,000 images, into --out/runs — in under a minute.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/09_robustness.py --out runs/tutorial9
"""
# %% 1. Options; the experiment runner's functions
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import mnist_options, pyplot, save, tutorial_args

from minibern import backend as B

np = B.host
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
from grids import GRIDS  # noqa: E402  (experiments/ is not a package)
from sweep import mean_std, run_dir, train  # noqa: E402


def runs_option(parser):
    parser.add_argument("--runs", type=Path, default=EXPERIMENTS / "runs",
                        help="root of the runner's run directories (default experiments/runs)")
    parser.add_argument("--grid", choices=("robustness", "longer"), default="robustness",
                        help="the runner's grid to read: robustness (20 epochs, default) or "
                             "longer (40 epochs, three seeds from 600-200 and 1200-400)")
    parser.add_argument("--reference", default=None,
                        help="the configuration the others are compared with (default: the "
                             "grid's; for longer, gated_40_epochs_width2, the 600-200 start)")


def default_reference(reference) -> str:
    """A grid's reference: one name, or {configuration: its reference} (the most common)."""
    if isinstance(reference, str):
        return reference
    names = list(reference.values())
    return max(names, key=names.count)


args = tutorial_args(__doc__, quick="train and draw a small grid of its own in --out/runs",
                     out="runs/tutorial9", extra=mnist_options(more=runs_option))
GRID = args.grid
if args.quick and (GRID != "robustness" or args.reference):
    sys.exit("error: --quick trains and draws a small grid of its own; leave out --grid and "
             "--reference, or leave out --quick to read the runner's grid")

# %% 2. The grid: configuration → its runs' arguments (one run per seed, `<config>_seed<k>`)
if args.quick:
    # The same grid, shrunk: widths ×0.25 (75-25) and ×0.5 (150-50), init scales 0.5, 1 and 2.
    BASE = ["--model", "lenet300", "--gates", "--epochs", "3", "--lr-decay", "5",
            "--train-subset", "3000"]
    CONFIGS = {"width0.25_scale1": ["--width-mult", "0.25"],
               "width0.5_scale1": ["--width-mult", "0.5"],
               "width0.25_scale0.5": ["--width-mult", "0.25", "--init-scale", "0.5"],
               "width0.25_scale2": ["--width-mult", "0.25", "--init-scale", "2"]}
    runs = {f"{config}_seed{seed}": [*BASE, *extra, "--seed", str(seed)]
            for config, extra in CONFIGS.items() for seed in (0, 1, 2)}
    reference, root = "width0.25_scale1", args.out / "runs"
else:
    runs, root = GRIDS[GRID]["runs"], args.runs
    reference = args.reference or default_reference(GRIDS[GRID]["reference"])
    configurations = {name.rsplit("_seed", 1)[0] for name in runs}
    if reference not in configurations:
        sys.exit(f"error: --reference {reference!r} is not a configuration of the grid {GRID!r}; "
                 f"choose one of {', '.join(sorted(configurations))}")
print(f"step 2: grid {GRID!r} under {root}: {len(runs)} runs, reference configuration "
      f"{reference!r}")
for name, run_args in list(runs.items())[:2]:
    print(f"        e.g. {name}: python -m minibern train {' '.join(run_args)}")

# %% 3. --quick: train the small grid, two runs at a time (the runner's `train`: finished runs
# are skipped, a killed one resumed, each with one BLAS thread)
if args.quick:
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda item: train(root, GRID, *item, args.data), runs.items()))
    print(f"step 3: {done.count('trained')} runs trained, {done.count('skipped')} already there")

# %% 4. Read every finished run's kept architecture; pool the seeds per configuration
kept, layers = {}, None
for name in runs:
    path = run_dir(root, GRID, name) / "metrics.json"
    if path.exists():
        metrics = json.loads(path.read_text())
        layers = layers or [gate["name"] for gate in metrics["gates"]]
        kept.setdefault(name.rsplit("_seed", 1)[0], []).append(metrics["architecture"])
if reference not in kept:
    sys.exit(f"error: no finished run of the reference {reference!r} under {root / GRID}; train "
             f"the grid with `python experiments/sweep.py run {GRID}` (hours), or pass --quick")
stats = {config: [mean_std([a[i] for a in archs]) for i in range(len(layers))]
         for config, archs in kept.items()}  # (mean, sample std over the seeds) per layer
for config, archs in kept.items():
    print(f"step 4: {config:20s} {len(archs)} seed(s): kept "
          + "  ".join(f"{layer} {m:6.1f} ± {sd:5.1f}" for layer, (m, sd) in zip(layers,
                                                                               stats[config])))

# %% 5. The spread: each configuration's mean kept units against the reference's, per layer
base = [m for m, _ in stats[reference]]
spreads = {}
for config in kept:
    if config != reference:
        spreads[config] = [100 * (m / b - 1) for (m, _), b in zip(stats[config], base)]
        print(f"step 5: spread {config:20s} "
              + "  ".join(f"{layer} {s:+6.1f} %" for layer, s in zip(layers, spreads[config])))

# %% 6. The figure: one panel per gated layer, configurations along x
plt = pyplot()
fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6))
configs = list(kept)
for i, (ax, layer) in enumerate(zip(np.atleast_1d(axes), layers)):
    ax.axhspan(0.85 * base[i], 1.15 * base[i], color="C2", alpha=0.2,
               label=f"{reference} ±15 %")
    for x, config in enumerate(configs):
        values = [a[i] for a in kept[config]]
        ax.bar(x, np.mean(values), width=0.6, color="0.8", edgecolor="0.4")
        ax.plot(x + np.linspace(-0.15, 0.15, len(values)), values, "o", color="C0", ms=4)
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels(configs, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"{layer}: kept units (θ ≥ ½)")
    ax.set_title(f"{layer}: bars the mean, dots the seeds", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
figure = save(fig, args.out / "robustness.png")
print(f"step 6: {figure.name}")

# %% Result
worst = max(((abs(s), config, layer) for config, values in spreads.items()
             for layer, s in zip(layers, values)), default=(0.0, reference, layers[0]))
inside = sum(abs(s) <= 15 for values in spreads.values() for s in values)
print(f"tutorial 9: {len(kept)} configurations, {sum(map(len, kept.values()))} runs; "
      f"{inside} of {len(spreads) * len(layers)} layer means within ±15 % of {reference}, "
      f"largest spread {worst[0]:.1f} % ({worst[1]}, {worst[2]}); figure {figure}")
