"""Tutorial 6 (the main job): learn which units LeNet-300-100 needs, with Bernoulli gates.

What you learn
    The whole method, built by hand before the library runs it. On a small gated network
    (784-75-25-10) you write one training step of θ yourself: draw the gate masks, run the
    network, estimate Δ_i by *removal* (the loss with unit i on minus the loss with it off, on
    the same masks), add the price κ/N, fold the estimate into the gate's visit average, and
    take the projected step θ ← clip(θ − η·(n/m)·average, 0, 1), whose n/m scale (49 for the
    input gates) lets the 16 gates visited per step stand for their whole layer. Three such
    steps are checked against the library's step on the same seed; then a unit at θ = 0 is
    removed from the weight arrays and you watch the arrays shrink. Then the library runs the
    full job on MNIST: about 98 % of the θ travel to exactly 0 or exactly 1 (the rest are still
    undecided after 20 epochs), units at 0 leave the arrays
    while the network trains (so epochs get cheaper), the input pixels that survive form the
    digit area, and the final deterministic network is several times smaller, at a test error
    a few tenths of a point above the un-gated network's (docs/RESULTS.md).
Read alongside
    docs/derivations/bernoulli_objective.md — (B1)–(B2) the gated model, (B11) the flattened
    KL = κθ + const, (B15) the price, (B16)–(B18) why the solutions are deterministic, (B20)–(B22) the θ step;
    docs/derivations/estimators.md — (E0)–(E1) the masks, (E4)–(E8) the removal estimator,
    (E10) the θ-gradient; docs/derivations/convergence.md — (C3)–(C7) the step on visit
    averages, (C8)–(C10) the decision rule; docs/derivations/pruning.md — (P1)–(P6) physical
    removal; then minibern/bernoulli/gate.py, estimators.py, theta_step.py (with prices.py and
    averaging.py), rules.py, prune_trigger.py, pruning.py and hook.py, which runs them in that
    order. Measured results over seeds: docs/RESULTS.md; step costs: docs/BENCHMARKS.md.
Figures (in --out, drawn from the run directory alone: `python -m minibern plot DIR` redraws them)
    theta_trajectories.png — θ of 40 random gates per layer over training, each travelling to 0
    or 1; theta_hist.png — θ histograms per layer over the epochs; input_pixels.png — θ of the
    784 input gates as 28 × 28 images and the surviving pixels; units_per_layer.png — kept
    units (θ ≥ ½) and units still in the arrays per epoch; theta_decided.png; val_error.png;
    loss.png; epoch_seconds.png. Also model.npz, the pruned deterministic network that
    tutorial 10 runs with NumPy alone.
You should see (the last line; full run, seed 0; the seconds vary from machine to machine)
        tutorial 6: gated LeNet-300-100, 20 epochs: architecture 192-121-84 from 784-300-100
            (params ×7.7 fewer), epoch 2.5 s → 1.3 s as units were removed, test error 1.97%
            (model.npz: 1.97%), gates decided 98.4% (within 0.01; 25.2% of all gates certified
            at 0 by the decision rule, the rest by the θ step alone); figures in runs/tutorial6
    and with --quick (2 epochs on 5,000 images: N is 11 times smaller, so each unit's price κ/N
    is 11 times larger and the first epochs' estimates come from a barely trained network,
    hence a very different network and error):
        tutorial 6: gated LeNet-300-100, 2 epochs: architecture 291-157-66 from 784-300-100
            (params ×4.7 fewer), epoch 0.2 s → 0.2 s as units were removed, test error 10.94%
            (model.npz: 10.94%), gates decided 95.1% (within 0.01; 2.2% of all gates certified
            at 0 by the decision rule, the rest by the θ step alone); figures in runs/tutorial6
    and before the full job, the hand-written steps agreeing with the library's:
        step 7: hand step = library step after 3 steps: masks, visits and weights identical;
            max |θ_hand − θ_library| = 4.6e-14, max |ḡ_hand − ḡ_library| = 1.1e-16 over 884
            gates (73 left 1)
Time on a 2-core CPU
    one to a few minutes for the 20 epochs (the later ones faster, as units are removed), the
    hand-written steps a few seconds of it; --quick: under half a minute. MNIST is read from
    $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/06_gated_lenet300.py --out runs/tutorial6
"""
# %% [markdown]
# Notation (docs/derivations/bernoulli_objective.md): gate i of a layer multiplies unit i of
# example n by ξ_{n,i} ~ Bern(θ_i); ℓ_n is the loss of example n, N the number of training
# examples, κ the price of keeping one unit. θ learns from Δ_i = E[L | ξ_i = 1] − E[L | ξ_i = 0]
# (B17): negative when unit i helps. Every estimate below is per example, Δ_i/N.

# %% 1. Options and data
from _common import rule_share, show, tutorial_args

from minibern import backend as B
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.export import export_and_score
from minibern.bernoulli.gate import draw_mask
from minibern.bernoulli.gated_models import lenet300_100
from minibern.bernoulli.hook import GateTrainer
from minibern.bernoulli.pruning import remove_units
from minibern.data import load_mnist
from minibern.losses import softmax_cross_entropy
from minibern.plots import plot_run
from minibern.training.config import make_optimizer
from minibern.training.config import steps_per_epoch as steps_per_epoch_of
from minibern.training.trainer import (Hook, Split, TrainConfig, Trainer, device_splits, run_rngs,
                                       write_run_files)

np = B.host


def options(parser):
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--kappa", type=float, default=GateConfig.kappa,
                        help=f"κ, the cost of keeping one unit (B15); the default "
                             f"{GateConfig.kappa:g} is the results page's; its κ sweep (docs/RESULTS.md, grid kappa) trades "
                             "size against error")
    parser.add_argument("--estimator", choices=("removal", "first-order"), default="removal",
                        help="the full job's estimator of Δ (E3) or (E4)–(E8)")
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA)")


args = tutorial_args(__doc__, quick="2 epochs on 5,000 images", out="runs/tutorial6",
                     extra=options)
data = load_mnist(args.data)  # host arrays; the last 5,000 training images validate
np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% 2. A small gated network and its first batches
# LeNet-300-100 at a quarter of its widths, 784-75-25-10, with a gate on every input pixel and
# every hidden unit (B1); θ starts at 1, where a gate is the identity. We build it twice from
# the same seed: `net` is ours to step by hand, `twin` the library's. float64 weights and images
# make the comparison of step 7 sharp (in float32 θ would agree to ~1e-4 only, for the reason
# given there, and a mask drawn from a slightly different θ could then differ).
# The steps take their batches from the first 300 training images, but κ is priced for the
# N = 55,000 of the full job (B15): a unit's price per example is κ/N.
GATES, SMALL, BATCH, IMAGES, STEPS = ("gate_in", "gate1", "gate2"), 0.25, 100, 300, 3
N = data.train_images.shape[0]
settings = GateConfig(kappa=args.kappa)  # the θ step's settings, read by hand below


def small_network():
    return lenet300_100(SMALL, gates=True, seed=run_rngs(args.seed)[0], dtype="float64")


net, twin = small_network(), small_network()
images = data.train_images[:IMAGES].reshape(IMAGES, 784).astype(np.float64)  # (300, 784), [0, 1]
labels = data.train_labels[:IMAGES]  # (300,) int
_, batch_rng, hook_rng = run_rngs(args.seed)  # the trainer's streams: batch order, hooks
order = batch_rng.permutation(IMAGES)  # the epoch's order; batch t is order[100t:100t + 100]
theta = {name: net[name].theta.copy() for name in GATES}  # θ per layer: (784,) (75,) (25,)
print("step 2: " + "  ".join(f"{name} {tuple(layer.params['W'].shape)}" if "W" in layer.params
                             else name for name, layer in net)
      + f"; θ starts at 1; N = {N:,}, κ/N = {settings.kappa / N:.2e}")

# %% 3. Masks and the forward pass, by hand (E0)–(E1), (B1)
# Every example draws its own ξ_{n,i} ~ Bern(θ_i) (B2). `draw_mask` is the gate layer's draw:
# one random byte per draw (E0), and none at all for a gate with θ ∈ {0, 1}, so the first step
# (θ = 1 everywhere) draws nothing. The forward pass is (B1) written out: gate, layer, ReLU.


def draw_masks(rng, batch):
    """{layer: ξ (batch, n)} for the current θ, from the hooks' stream as the gates draw it."""
    return {name: draw_mask(theta[name], rng, batch, np.float64) for name in GATES}  # (E0)


def weights_of(network):
    return {f"{name}.{key}": B.to_numpy(value) for name in ("fc1", "fc2", "fc3")
            for key, value in network[name].params.items()}


def logits_of(w, x, xi):
    """The gated network's logits (B, 10) for images x (B, 784) under the masks xi."""
    h = x * xi["gate_in"]  # (B, 784)                                              (E1)
    h = np.maximum(h @ w["fc1.W"] + w["fc1.b"], 0) * xi["gate1"]  # (B, 75)         (B1)
    h = np.maximum(h @ w["fc2.W"] + w["fc2.b"], 0) * xi["gate2"]  # (B, 25)         (B1)
    return h @ w["fc3.W"] + w["fc3.b"]  # (B, 10)


def losses_of(logits, y):
    """ℓ_n = logsumexp(z_n) − z_n[y_n] per example (L18), (B,)."""
    top = logits.max(axis=1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            - logits[np.arange(len(y)), y])


x, y = images[order[:BATCH]], labels[order[:BATCH]]  # step 1's batch: (100, 784), (100,)
xi = draw_masks(hook_rng, BATCH)
our_masks = [xi]  # every step's masks, to compare with the library's in step 7
w = weights_of(net)
loss = losses_of(logits_of(w, x, xi), y).mean()
print(f"step 3: masks {', '.join(f'{k} {v.shape}' for k, v in xi.items())}, all ones at θ = 1: "
      f"{all(v.min() == 1 for v in xi.values())}; batch loss of the untrained network "
      f"{loss:.3f} (about ln 10 = {np.log(10):.2f})")

# %% 4. The removal estimate of Δ, by hand (E4)–(E8)
# Which gates does a step measure? The last gate layer's are cheap (only the output layer
# follows): all of them. Of the others, 16 drawn at random (GateConfig.first_subset, .subset):
# a visit to an input pixel costs a forward through everything after it.
# For a visited gate i, keep every other ξ as drawn and run the network twice: with ξ_{n,i} = 1
# and with ξ_{n,i} = 0 for every example. The difference d_{n,i} = ℓ_n(ξ_i = 1) − ℓ_n(ξ_i = 0)
# is minus what removing unit i costs example n: negative when the unit helps, like Δ (E4).
# Its batch mean is an unbiased estimate of Δ_i/N (E8), because the other gates were drawn
# from their own Bern(θ). (The library gets the same
# numbers without re-running the network: the flip adds one row of the next layer's weights to
# a stored pre-activation (E5), and only pairs with a non-zero activation are computed.)


def draw_visits(rng, movable):
    """{layer: sorted indices of the gates visited this step} among the movable ones."""
    subsets = {"gate_in": settings.first_subset, "gate1": settings.subset, "gate2": None}
    visits = {}
    for name in GATES:
        pool = np.flatnonzero(movable[name])
        size = subsets[name]
        if size is None or size >= pool.size:
            visits[name] = pool  # the last gate layer: every movable gate
        else:
            visits[name] = np.sort(rng.choice(pool, size=size, replace=False))
    return visits


def removal_estimates(w, x, y, xi, visits):
    """{layer: Δ̂_i/N (m,)} for the visited gates: the batch mean of ℓ_n(ξ_i = 1) − ℓ_n(ξ_i = 0)."""
    found = {}
    for name, visit in visits.items():
        found[name] = np.empty(visit.size)
        for k, i in enumerate(visit):
            on, off = xi[name].copy(), xi[name].copy()
            on[:, i], off[:, i] = 1, 0
            d = (losses_of(logits_of(w, x, {**xi, name: on}), y)
                 - losses_of(logits_of(w, x, {**xi, name: off}), y))  # d_{n,i}, (B,)   (E4)
            found[name][k] = d.mean()  # (E8)
    return found


movable = {name: np.ones(theta[name].size, dtype=bool) for name in GATES}  # nothing frozen yet
visits = draw_visits(hook_rng, movable)
delta = removal_estimates(w, x, y, xi, visits)
black = visits["gate_in"][(x[:, visits["gate_in"]] == 0).all(axis=0)]
print(f"step 4: visited {', '.join(f'{k} {v.size}' for k, v in visits.items())} gates; "
      f"Δ̂/N of gate2's first five: {delta['gate2'][:5]}")
print(f"        visited pixels black in all {BATCH} images: {black.tolist()}, their Δ̂/N: "
      f"{delta['gate_in'][np.isin(visits['gate_in'], black)]} (expected exactly 0: removing a "
      "black pixel changes nothing)")

# %% 5. The price, the visit average and the projected step, by hand (E10), (C3), (C6)
# The gradient of the cost in θ_i is (Δ_i + κ)/N (B17), (B15): the estimate plus the price,
# ĝ_i = Δ̂_i/N + κ/N (E10). θ steps not on ĝ but on the average ḡ of the gate's own visits,
# ḡ ← ḡ + β(ĝ − ḡ), β = max(1/k, 1/W) at visit k (C3): the plain mean of the first W = 20
# visits, then an exponential average, so once a gate has a few visits one noisy batch cannot
# throw it off its vertex (at its first visit, ḡ is that one estimate).
# The step is θ ← clip(θ − η_t·(n/m)·ḡ, 0, 1) (C6), (B20)–(B22), on the visited gates only,
# with η_t = 50/(1 + t/5) and t the epoch clock (B21). Why n/m: a layer of n movable gates of
# which m are visited moves each gate on m/n of the steps, so it takes n/m times the step; in
# expectation every gate then moves by η ḡ per step, whatever its layer's width. For the input
# gates that is 784/16 = 49. The clip is what puts θ exactly on 0 or 1, and keeps it there while
# ḡ points outwards (C7). Steps this large at untrained weights put some gates on 0 at once:
# that is what the library does too, and why a unit is removed only after 30 visits at 0 (P6):
# while it waits, a gate the decision rule has not certified is still measured, and θ climbs
# back as soon as its average ḡ turns negative (C7). A gate the rule certified (C10) is frozen
# and no longer measured; its 30 visits are then a count of steps (pruning.md, (P6)).
count = {name: np.zeros(theta[name].size, dtype=np.int64) for name in GATES}  # visits k
average = {name: np.zeros(theta[name].size) for name in GATES}  # ḡ (C3)


def theta_step(visits, delta, clock):
    """Fold the estimates into the visit averages and step θ of the visited gates."""
    eta = settings.theta_lr / (1 + clock / settings.theta_decay)  # (B21)
    for name, visit in visits.items():
        g = delta[name] + settings.kappa / N  # ĝ = Δ̂/N + κ/N, (m,)                  (E10)
        count[name][visit] += 1
        beta = np.maximum(1.0 / count[name][visit], 1.0 / settings.average_visits)  # (C3)
        average[name][visit] += beta * (g - average[name][visit])  # (C3)
        scale = movable[name].sum() / visit.size  # n/m                                (C6)
        theta[name][visit] = np.clip(theta[name][visit] - eta * (scale * average[name][visit]),
                                     0.0, 1.0)  # (B20), (B22), (C6)
    return eta


eta = theta_step(visits, delta, clock=0.0)
for name in GATES:
    visit = visits[name]
    print(f"step 5: {name:7s} n = {movable[name].sum():3d}, m = {visit.size:2d}, n/m = "
          f"{movable[name].sum() / visit.size:5.2f}: of the visited, "
          f"{int((theta[name][visit] == 1).sum()):2d} stay at 1 (ḡ < 0), "
          f"{int((theta[name][visit] == 0).sum()):2d} fall to 0, the rest move inside")
i, scale = (black[0] if black.size else visits["gate_in"][0]), 784 / visits["gate_in"].size
print(f"        pixel {i}: ḡ = Δ̂/N + κ/N = {average['gate_in'][i]:.2e}, θ = 1 − η·(n/m)·ḡ = "
      f"1 − {eta:g}·{scale:g}·{average['gate_in'][i]:.2e} = {theta['gate_in'][i]:.4f} (without "
      f"n/m: {max(0.0, 1 - eta * average['gate_in'][i]):.4f})")

# %% 6. Steps 2 and 3 by hand, with the weights trained in between
# The weights learn as in tutorial 3: forward with the masks we drew, backward, Adam. After
# step 1 some θ are inside (0, 1), so from now on those gates draw their masks.
optimizer = make_optimizer(TrainConfig())  # Adam, rate 1e-3 (epoch 0 of 1e-3/(1 + epoch/5))


def weight_step(x, y, xi):
    for name in GATES:
        net[name].inject_mask(xi[name])  # the masks we drew, not fresh ones
    _, dlogits = softmax_cross_entropy(net.forward(B.asarray(x)), B.asarray(y))
    net.backward(dlogits)
    optimizer.step(net)


weight_step(x, y, xi)  # step 1's weights
for step in range(1, STEPS):
    batch = order[step * BATCH:(step + 1) * BATCH]
    x, y = images[batch], labels[batch]
    drawing = {name: (theta[name] > 0) & (theta[name] < 1) for name in GATES}  # draw ξ
    xi = draw_masks(hook_rng, BATCH)
    our_masks.append(xi)
    print(f"step 6: step {step + 1}: gates drawing masks "
          f"{ {name: int(drawing[name].sum()) for name in GATES} }; over gate_in's, mean ξ "
          f"{xi['gate_in'][:, drawing['gate_in']].mean():.3f} against mean θ "
          f"{theta['gate_in'][drawing['gate_in']].mean():.3f} (equal up to sampling noise)")
    visits = draw_visits(hook_rng, movable)
    delta = removal_estimates(weights_of(net), x, y, xi, visits)
    theta_step(visits, delta, clock=step / (IMAGES // BATCH))  # t = epochs done, fractionally
    weight_step(x, y, xi)

# %% 7. The library's steps on the twin network, same seed: they must agree
# GateTrainer is the hook that runs estimator → θ step → decision rule → pruning trigger after
# every backward pass; the Trainer runs the batches, the masks and Adam. A 1-epoch run on the
# same 300 images is exactly our 3 steps. The masks, the visits and the weights must be equal
# bit for bit; θ and ḡ only to rounding, since the library computes the flipped losses from a
# stored pre-activation (E5) instead of re-running the network: float64 rounding (~1e-16) times
# η·n/m ≈ 2,500 leaves differences far below 1e-9. (The decision rule needs 10 visits and the
# pruning trigger 30: neither acts in 3 steps.)
config = TrainConfig(model="lenet300", epochs=1, seed=args.seed, width_mult=SMALL,
                     train_subset=IMAGES, lr_decay=5.0)
hook = GateTrainer(twin, settings, n_data=N)


class MaskRecorder(Hook):
    """Keeps the masks the twin's gates drew at every step (a hook runs after backward)."""

    def __init__(self):
        self.masks = []

    def after_backward(self, trainer):
        self.masks.append({name: B.to_numpy(twin[name].mask) for name in GATES})


recorder = MaskRecorder()
def float64_split(split_images, split_labels):
    return Split(B.asarray(split_images.reshape(len(split_images), 784).astype(np.float64)),
                 B.asarray(split_labels))


small_splits = {"train": float64_split(images, labels),  # our 300 images; 1,000 to validate
                "val": float64_split(data.val_images[:1000], data.val_labels[:1000]),
                "test": float64_split(data.test_images[:1000], data.test_labels[:1000])}
Trainer(twin, small_splits, config, hooks=[recorder, hook], log=lambda line: None).fit()
assert len(recorder.masks) == STEPS and all(
    np.array_equal(theirs[name], ours[name]) for theirs, ours in zip(recorder.masks, our_masks)
    for name in GATES), "the hand-drawn masks differ from the library's"
for name in GATES:
    assert np.array_equal(hook.states[name].visits, count[name]), f"{name}: visits differ"
    assert not hook.states[name].frozen.any(), f"{name}: the library froze a gate"
assert all(np.array_equal(value, weights_of(twin)[key]) for key, value in
           weights_of(net).items()), "the weights differ from the library's"
theta_gap = max(np.abs(twin[name].theta - theta[name]).max() for name in GATES)
average_gap = max(np.abs(hook.states[name].mean - average[name]).max() for name in GATES)
assert theta_gap < 1e-9 and average_gap < 1e-12, \
    f"θ differs from the library's by {theta_gap:.1e}, ḡ by {average_gap:.1e}"
moved = sum(int((theta[name] < 1).sum()) for name in GATES)
print(f"step 7: hand step = library step after {STEPS} steps: masks, visits and weights "
      f"identical; max |θ_hand − θ_library| = {theta_gap:.1e}, max |ḡ_hand − ḡ_library| = "
      f"{average_gap:.1e} over {sum(t.size for t in theta.values())} gates ({moved} left 1)")

# %% 8. Removing a unit at θ = 0 from the arrays (P1)–(P6)
# At θ_j = 0 every example draws ξ_j = 0, so unit j's column of fc1.W and entry of fc1.b feed
# nothing (P1), and its row of fc2.W only ever multiplies 0 (P2). Deleting them changes no
# output. In training the hook waits until θ_j has been exactly 0 for 30 visits (P6); here we
# put the unit of gate1 with the smallest θ at 0 ourselves, and remove it, by hand and then with
# the library, which also slices Adam's moment buffers (P5) and the gate's θ.
j = int(np.argmin(theta["gate1"]))
theta["gate1"][j], xi["gate1"][:, j] = 0.0, 0.0
keep = np.arange(theta["gate1"].size) != j  # (75,) bool
w = weights_of(net)
sliced = {**w, "fc1.W": w["fc1.W"][:, keep], "fc1.b": w["fc1.b"][keep],  # (P1)
          "fc2.W": w["fc2.W"][keep]}  # (P2)
change = np.abs(logits_of(w, x, xi) - logits_of(sliced, x, {**xi, "gate1": xi["gate1"][:, keep]}))
net["gate1"].theta[:] = theta["gate1"]
before = {key: value.shape for key, value in w.items()}
remove_units(net, "gate1", keep, optimizer)  # (P1)–(P5)
after = weights_of(net)
assert all(np.array_equal(after[key], sliced[key]) for key in sliced)
print(f"step 8: unit {j} of gate1 removed: " + ", ".join(
    f"{key} {before[key]} → {after[key].shape}" for key in ("fc1.W", "fc1.b", "fc2.W"))
    + f", θ (75,) → {net['gate1'].theta.shape}, Adam's m of fc2.W "
    f"{tuple(optimizer.state['fc2.W']['m'].shape)}; the logits changed by at most "
    f"{change.max():.1e} (expected 0 up to rounding)")

# %% [markdown]
# ## The full job, by the library
# The same pieces, at full width (784-300-100-10) on all 55,000 images (--quick: 5,000), for 20
# epochs: GateTrainer does after every backward pass what steps 4–5 did by hand, and adds the
# decision rule (C8)–(C10): a gate at 0 whose average is confidently positive is certified and
# frozen; and after every weight step the removal of step 8, for each unit at 0 for 30 visits.

# %% 9. A gated LeNet-300-100 and the θ settings (the defaults of GateConfig)
config = TrainConfig(model="lenet300", epochs=2 if args.quick else args.epochs, seed=args.seed,
                     train_subset=5000 if args.quick else None, lr_decay=5.0)
full = lenet300_100(seed=run_rngs(config.seed)[0], gates=True, theta_init=1.0)
splits = device_splits(data, full.input_shape, config.train_subset)
steps_per_epoch = steps_per_epoch_of(splits["train"].size, config.batch_size)  # ⌈N / B⌉
gate_config = GateConfig(kappa=args.kappa, estimator=args.estimator,
                         snapshot_every=max(1, steps_per_epoch // 5))  # θ recorded 5× an epoch
gates = GateTrainer(full, gate_config, n_data=splits["train"].size)
print(f"step 9: κ = {gate_config.kappa} per unit, estimator {gate_config.estimator}, θ step "
      f"{gate_config.theta_lr}/(1 + epoch/{gate_config.theta_decay})·(n/m), "
      f"{steps_per_epoch} steps per epoch")

# %% 10. Train weights (Adam, rate 1e-3/(1 + epoch/5)) and θ together; checkpoint every epoch
# Each epoch's log line counts the gates at 0 / at 1 / undecided per layer (within 1e-3 of a
# vertex), then the share decided within 1e-2. After the last epoch the audit (C11)–(C12)
# checks each decision against the gradient on the whole training set, at the final weights;
# it sees only units still in the arrays (removed ones cannot be audited), so its counts of
# rule-certified gates are small even when the rule certified a quarter of all gates.
trainer = Trainer(full, splits, config, hooks=[gates], log=print)
metrics = trainer.fit(args.out)

# %% 11. The deterministic network, exported as plain arrays (X1)–(X4)
# Every gate becomes 1[θ ≥ ½], folded into the next layer; units at 0 are dropped. Read back by
# the engine, model.npz must score exactly the network's test error.
metrics["export_test_error"] = export_and_score(full, args.out / "model.npz", data.test_images,
                                                data.test_labels)
write_run_files(args.out, metrics)
kept = dict(zip((gate["name"] for gate in metrics["gates"]), metrics["architecture"]))
for gate in metrics["gates"]:  # at 0 / at 1 / undecided: within 1e-3; kept: θ ≥ ½
    print(f"step 11: {gate['name']:8s} {gate['total']:4d} gates: {gate['at_one']:4d} at 1, "
          f"{gate['at_zero']:4d} at 0 ({gate['removed']} removed from the arrays), "
          f"{gate['undecided']:4d} undecided; kept {kept[gate['name']]:4d} (θ ≥ ½)")

# %% 12. Figures, drawn from the run directory alone
paths = show(plot_run(args.out))
print(f"step 12: {len(paths)} figures: {', '.join(p.name for p in paths)}")

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

# %% [markdown]
# ## Exercises
# 1. **Drop the n/m scale.** In step 5, replace `scale = movable[name].sum() / visit.size` by
#    `scale = 1.0` and run `python tutorials/06_gated_lenet300.py --quick`. Before you run it,
#    predict: how far does the pixel of step 5 move now, which check of step 7 stops the script,
#    and in the library's full job, how many steps would an input gate priced at κ/N alone need
#    to fall from 1 to 0 without the scale (each is visited once in 49 steps)?
# 2. **Halve κ.** Run `python tutorials/06_gated_lenet300.py --kappa 2.75`. Before you run it,
#    predict: is the final architecture wider or narrower than with κ = 5.5, which layer changes
#    most, and does the test error go up or down? (κ is what a unit must be worth to stay: it
#    stays when −Δ_i > κ, (B17).)
# 3. **Switch the estimator to first-order.** Run `python tutorials/06_gated_lenet300.py --quick
#    --estimator first-order`. Before you run it, predict: does the decided share rise or fall,
#    and where do the undecided θ stall? (The first-order estimate is the slope of the loss in a
#    continuous ξ at the sampled point, not the removal cost (E3); at θ = 1 it is near 0 for a
#    trained unit.) Compare theta_hist.png with the removal run's.
