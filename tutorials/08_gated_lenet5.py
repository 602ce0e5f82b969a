"""Tutorial 8: Bernoulli gates on convolution filters — gated LeNet-5-Caffe.

What you learn
    The method of tutorial 6 on a convolutional network: one gate per *filter* of conv1 and
    conv2 (a gate multiplies a whole H × W feature map, so switching it off removes the filter,
    its bias and the next layer's matching input channel) and one per unit of fc1. The θ of
    every gate travels to 0 or 1 as in tutorial 6; a filter at 0 leaves the weight arrays while
    the network trains; and because conv1 reads the image directly, its 5 × 5 filters can be
    looked at: you see which ones the network kept and which it switched off.
Read alongside
    docs/derivations/bernoulli_objective.md — (B1) the gated model for filters (one gate for all
    positions), (B14)–(B15) the price κ per unit, (B16)–(B17) why θ ends at 0 or 1;
    docs/derivations/estimators.md — (E5a)–(E5b) the removal estimator batched over filters,
    and "Visits per step by model" (why 2 conv1 and 4 conv2 filters per step);
    docs/derivations/pruning.md — (P1)–(P6), removing a filter and, across Flatten, its H·W
    block of fc1's inputs; docs/derivations/layers.md for Conv2D and MaxPool2D. Tutorial 6 is
    the same lesson on LeNet-300-100, step by step. The 20-epoch numbers over seeds:
    docs/RESULTS.md, grid "lenet5".
Figures (in --out, all but conv1_filters.png redrawn by `python -m minibern plot DIR`)
    theta_trajectories.png — θ of (up to) 40 gates per gate layer over training;
    theta_hist.png — θ histograms per layer over the epochs; units_per_layer.png — kept filters
    and units (θ ≥ ½) and those still in the arrays, per epoch; conv1_filters.png — every conv1
    filter as a 5 × 5 image, the kept ones (their final weights) above the switched-off ones
    (their weights when they were removed, or at the end), each with its final θ;
    theta_decided.png; val_error.png; loss.png; epoch_seconds.png.
You should see (the last line; full run, seed 0)
    tutorial 8: gated LeNet-5-Caffe, 20 epochs: architecture 17-33-528-92 from 20-50-800-500
        (conv1 filters / conv2 filters / fc1 inputs / fc1 units; params ×6.7 fewer), 534/570
        gates moved, test error 0.73%, gates decided 94.4% (within 1e-3; 15.6% of all gates
        certified at 0 by the decision rule, the rest by the θ step alone); figures in
        runs/tutorial8
    and with --quick:
    tutorial 8: gated LeNet-5-Caffe, 2 epochs: architecture 8-19-304-88 from 10-25-400-250
        (conv1 filters / conv2 filters / fc1 inputs / fc1 units; params ×3.4 fewer), 218/285
        gates moved, test error 14.33%, gates decided 97.9% (within 1e-3; 33.7% of all gates
        certified at 0 by the decision rule, the rest by the θ step alone); figures in
        runs/tutorial8
Time on a 2-core CPU
    the 20 full-width epochs take about 5 minutes on an otherwise idle machine, twice that
    when other jobs share its cores (convolutions are the costly part, and get cheaper as
    filters are removed); --quick (2 epochs on 3,000 images, half the widths: 10-25-250):
    about 6 seconds.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/08_gated_lenet5.py --out runs/tutorial8
"""
# %% 1. Options, data and the run's settings (tutorial 6's, at half the widths in --quick)
from _common import gated_run, pyplot, rule_share, save, show, training_tutorial

from minibern import backend as B
from minibern.bernoulli.config import gate_config_for
from minibern.bernoulli.run import build_network
from minibern.plots import load_run, plot_run
from minibern.training.trainer import Hook

np = B.host
# --quick halves the widths, not quarters them: at 5 filters conv1 is too small a picture.
args, data, width, config = training_tutorial(__doc__, out="runs/tutorial8", model="lenet5",
                                              quick_epochs=2, quick_subset=3000)

# %% 2. A gated LeNet-5-Caffe: conv1 → pool → relu → gate, conv2 → pool → relu → gate, fc1 → gate
# A filter's gate multiplies its whole feature map: ξ_i h_{i,:,:} (B1). Its price κ is per
# unit, filter or hidden unit alike (B14).
gate_config = gate_config_for("lenet5")  # fewer filters visited per step (see step 4)
net = build_network(config, gate_config)
for name, layer in net:
    shapes = {key: tuple(value.shape) for key, value in layer.params.items()}
    if shapes or "gate" in name:
        print(f"step 2: {name:10s} {type(layer).__name__:14s} "
              f"{shapes or f'{layer.n_units} gates, θ = 1 (a gate at 1 draws nothing)'}")
# One gate per output filter of a convolution (W is (F, C, KH, KW)) and per unit of fc1
# (W is (inputs, units)): the gate counts must match the weights' shapes.
expected = [net["conv1"].params["W"].shape[0], net["conv2"].params["W"].shape[0],
            net["fc1"].params["W"].shape[1]]
got = [net[name].n_units for name in ("gate_conv1", "gate_conv2", "gate_fc1")]
print(f"step 2: gates per layer should be {expected} (filters, filters, units): got {got}")
assert got == expected


# %% 3. Keep a picture of every conv1 filter, also of those that will be removed
# A hook sees the network after every weight step; placed before the gate trainer, it sees a
# filter one last time before the step that removes it. gate.unit_index maps the rows still in
# the arrays to the original filter numbers.
class Conv1Filters(Hook):
    """The latest weights (KH, KW) of each original conv1 filter, as host arrays."""

    def __init__(self, net):
        self.conv, self.gate, self.latest = net["conv1"], net["gate_conv1"], {}

    def after_step(self, trainer):
        weights = B.to_numpy(self.conv.params["W"])[:, 0]  # (F, KH, KW), one input channel
        for row, original in enumerate(self.gate.unit_index):
            self.latest[int(original)] = weights[row]


filters = Conv1Filters(net)
print(f"step 3: conv1 has {net['gate_conv1'].n_units} filters of "
      f"{'×'.join(map(str, net['conv1'].params['W'].shape[2:]))}")

# %% 4. Train weights and θ together (tutorial 6's steps 9–10, LeNet-5's default GateConfig:
# fewer filters visited per step than LeNet-300-100's pixels, gate_config_for)
# Removal estimator, θ step on the visit averages, decision rule, filters at 0 removed after
# 30 visits; θ of every gate recorded five times per epoch. The log line per epoch counts the
# gates at 0 / at 1 / undecided per layer.
metrics, trainer = gated_run(data, config, gate_config, args.out, net=net, hooks=[filters])
for gate in metrics["gates"]:
    print(f"step 4: {gate['name']:10s} {gate['at_one']:4d} of {gate['total']:4d} at 1, "
          f"{gate['at_zero']:4d} at 0 ({gate['removed']} removed), {gate['undecided']} undecided")

# %% 5. How far did θ travel from its start at 1? (a gate that never left 1 learned nothing)
# A removed filter left the arrays at θ = 0 exactly (P6); the snapshots keep it at 0.
_, history = load_run(args.out)
snaps = history["theta_snapshots"]
moved = snaps.min(axis=0) < 1.0
print(f"step 5: {int(moved.sum())} of {snaps.shape[1]} gates left θ = 1 at some snapshot; "
      f"mean 1 − θ at the end = {(1 - snaps[-1]).mean():.3f}")
removed = sum(gate["removed"] for gate in metrics["gates"])
print(f"step 5: gates exactly at 0 at the end should be at least the {removed} removed units: "
      f"got {int((snaps[-1] == 0).sum())}")

# %% 6. The conv1 filters, kept (θ ≥ ½ at the end) and switched off
theta_conv1 = net["gate_conv1"].full_theta()  # over the original filters, 0 where removed
kept = [i for i in sorted(filters.latest) if theta_conv1[i] >= 0.5]
off = [i for i in sorted(filters.latest) if theta_conv1[i] < 0.5]
print(f"step 6: conv1 filters kept {kept}, switched off {off}")
print(f"step 6: kept + switched off should be all {net['gate_conv1'].n_units} conv1 filters: "
      f"got {len(kept) + len(off)}")
plt = pyplot()
columns = max(len(kept), len(off), 1)
fig, axes = plt.subplots(2, columns, figsize=(1.3 * columns + 0.6, 3.2), squeeze=False)
limit = max(np.abs(w).max() for w in filters.latest.values())
for row, (group, what) in enumerate(((kept, "kept"), (off, "off"))):
    for col in range(columns):
        ax = axes[row, col]
        ax.set_xticks([])
        ax.set_yticks([])
        if col < len(group):
            i = group[col]
            ax.imshow(filters.latest[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"#{i} θ={theta_conv1[i]:.2f}", fontsize=7)
        else:
            ax.axis("off")
    axes[row, 0].set_ylabel(f"{what} ({len(group)})", fontsize=8)
fig.suptitle("Which conv1 filters did the gates keep? 5×5 weights (red > 0 > blue): kept "
             "above, switched off below", fontsize=9)
figures = show(plot_run(args.out)) + [save(fig, args.out / "conv1_filters.png")]
print(f"step 6: {len(figures)} figures: {', '.join(p.name for p in figures)}")

# %% Result
print(f"tutorial 8: gated LeNet-5-Caffe, {metrics['epochs']} epochs: architecture "
      f"{'-'.join(map(str, metrics['architecture']))} from "
      f"{'-'.join(map(str, metrics['architecture_start']))} (conv1 filters / conv2 filters / "
      f"fc1 inputs / fc1 units; params ×{metrics['compression_params']:.1f} fewer), "
      f"{int(moved.sum())}/{snaps.shape[1]} gates moved, test error "
      f"{100 * metrics['test_error']:.2f}%, gates decided {100 * metrics['decided_1e-3']:.1f}% "
      f"(within 1e-3; {rule_share(metrics)}); figures in {args.out}")

# %% [markdown]
# ## Exercises
# 1. **Visit more filters per step.** LeNet-5's default visits 2 conv1 and 4 conv2 filters per
#    step (`gate_config_for`), LeNet-300-100 16. In step 2 use `GateConfig()` (from
#    minibern.bernoulli.config: 16 per step) instead
#    and run `python tutorials/08_gated_lenet5.py --quick --out runs/tutorial8_visits16`.
#    Predict before you run it: do the epochs get slower, and do more conv1 filters reach 0?
#    (docs/RESULTS.md compares the two over five seeds: grid "lenet5", rows `gated` and
#    `gated_visits16`.)
# 2. **Halve κ.** Set `gate_config.kappa = 2.75` after step 2's `gate_config_for`. Predict: how
#    does the architecture in the final line change, layer by layer, and does the test error
#    rise or fall? Which layer moves most, the one with the most units or with the fewest?
# 3. **Read the filters.** Run the full 20 epochs and open conv1_filters.png. Before you look,
#    predict how a switched-off filter differs from a kept one (hint: a removed filter's
#    picture is its weights when it left the arrays; how many weight steps had it had?).
