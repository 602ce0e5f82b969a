"""Tutorial 3: train LeNet-300-100 on MNIST, first with a loop you write, then with `Trainer`.

What you learn
    How the layers of tutorials 1–2 become a trained network: a seeded minibatch order, a
    forward pass through each layer, the softmax cross-entropy and its gradient, a backward
    pass through each layer in reverse, and an Adam update — each written out here, a few
    lines apiece. Then that the package's `Trainer` runs exactly those steps: on the same seed
    it ends the epoch with bit-for-bit the same weights. Then `Trainer` at scale, and what its
    run directory holds (metrics.json, history.npz, checkpoint.npz) so that every figure can
    be redrawn later. This is the un-gated baseline that tutorial 6 prunes.
Read alongside
    docs/derivations/layers.md — (L0) the chain rule, (L1)–(L4) dense, (L5)–(L6) ReLU,
    (L18)–(L19) the loss, (O2) Adam; then minibern/models.py, minibern/training/config.py and
    the step in ``Trainer.train_epoch`` of minibern/training/trainer.py.
Figures (in --out)
    hand_loop_loss.png — the loss of every step of the hand-written loop, against ln 10;
    loss.png, val_error.png, epoch_seconds.png of the Trainer's run
    (`python -m minibern plot DIR` redraws these three from the run directory).
You should see (the last line; full run, seed 0)
    tutorial 3: LeNet-300-100: the hand-written loop and Trainer agree bit for bit after 550
    steps; Trainer, 3 epochs: training loss 0.2507 → 0.0645, test error 2.47%, ...
    and with --quick: tutorial 3: LeNet-300-100: the hand-written loop and Trainer agree bit
    for bit after 50 steps; Trainer, 2 epochs: training loss 0.7355 → 0.2568, test error
    7.94%, ...
Time on a 2-core CPU
    one to two minutes: one epoch by hand, the same epoch by Trainer, then Trainer's 3 epochs
    (55,000 images each); --quick (5,000 images, 2 epochs at scale): about ten seconds.
    MNIST is read from $MINIBERN_DATA or data/mnist/, fetched there if missing.

    python tutorials/03_lenet300_without_gates.py --out runs/tutorial3
"""
# %% [markdown]
# Notation (docs/derivations/layers.md): a minibatch of N = 100 images x (N, 784), K = 10
# classes, logits z (N, K); for any array A, G_A = ∂ℓ/∂A has A's shape.

# %% 1. Options and data
from dataclasses import replace
from math import log

from _common import mnist_options, pyplot, save, show, tutorial_args

from minibern import backend as B
from minibern.data import load_mnist
from minibern.models import lenet300_100
from minibern.plots import plot_run
from minibern.training.trainer import TrainConfig, Trainer, device_splits, run_rngs, write_run_files

args = tutorial_args(__doc__, quick="5,000 training images, 2 epochs at scale",
                     out="runs/tutorial3", extra=mnist_options(epochs=3))
data = load_mnist(args.data)  # host arrays; the last 5,000 training images validate
print(f"step 1: MNIST train {data.train_images.shape}, validation {data.val_images.shape}, "
      f"test {data.test_images.shape}")

# %% 2. The model and the run's random streams
# One seed makes three independent streams (run_rngs): the initial weights, the batch order,
# and one the gates of tutorial 6 draw from. Drawing them the way Trainer does is what lets us
# compare with it bit for bit in step 8.
config = TrainConfig(model="lenet300", epochs=2 if args.quick else args.epochs, seed=args.seed,
                     optimizer="adam", lr=1e-3, batch_size=100,
                     train_subset=5000 if args.quick else None)
init_rng, batch_rng, _ = run_rngs(config.seed)
net = lenet300_100(seed=init_rng)  # fc1 W (784, 300), fc2 W (300, 100), fc3 W (100, 10), He init
splits = device_splits(data, net.input_shape, config.train_subset)  # on the current backend
train = splits["train"]  # images (N_train, 784) in [0, 1], labels (N_train,)
print(f"step 2: {net.num_parameters():,} parameters: "
      + "  ".join(f"{name} {type(layer).__name__}" for name, layer in net))

# %% 3. Forward: each layer in turn (L1), (L5)
# The network is a list of layers; the forward pass hands each one the previous one's output.
# Each layer keeps what its backward will need (its input, or ReLU's mask).
def forward(x):
    for name, layer in net:  # fc1 (L1) → relu1 (L5) → fc2 (L1) → relu2 (L5) → fc3 (L1)
        x = layer.forward(x)
    return x  # logits (N, 10)


# The same walk once by hand on the first 100 training images, printing each output's shape:
h = train.images[:100]  # (100, 784)
shapes = [tuple(h.shape)]
for name, layer in net:
    h = layer.forward(h)
    shapes.append(tuple(h.shape))
print("step 3: shapes along the forward pass: " + " → ".join(map(str, shapes)))

# %% 4. The loss (L18) and its gradient (L19), and the first sanity check
# Subtracting each row's maximum before exp keeps every exponent ≤ 0 (no overflow). The
# gradient is softmax minus the one-hot label, divided by N because the loss is a mean.
def cross_entropy(logits, labels):
    """(mean loss, G_z) for logits (N, K) and integer labels (N,)."""
    xp = B.get_array_module(logits)
    rows = xp.arange(logits.shape[0])
    shifted = logits - logits.max(axis=1, keepdims=True)  # z − m, every entry ≤ 0
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, labels].mean()  # (L18)
    g_z = xp.exp(log_probs)  # softmax(z)
    g_z[rows, labels] -= 1
    g_z /= logits.shape[0]  # (L19)
    return loss, g_z


# Before any training the network knows nothing, so it should put about 1/10 on each class:
# the loss of a guess is −ln(1/10) = ln 10. Far above that, the initial weights are too large
# (or the loss is wrong); this is the cheapest bug check there is.
first_loss = B.to_float(cross_entropy(h, train.labels[:100])[0])  # h: those images' logits
print(f"step 4: initial loss should be about ln 10 = {log(10):.2f}: got {first_loss:.2f}")

# %% 5. Backward: each layer in reverse (L0), from G_z back to the first layer's weights
# Each backward takes ∂ℓ/∂(its output) and returns ∂ℓ/∂(its input), filling its own grads
# (W: (L2), b: (L3)) on the way. The first layer's input is the data: nobody needs ∂ℓ/∂x,
# so fc1 runs param_backward, which skips the (L4) product (as Trainer does).
def backward(g_z):
    layers = [layer for _, layer in net]
    g = g_z  # (N, 10)
    for layer in reversed(layers[1:]):  # fc3 (L2)–(L4), relu2 (L6), fc2 (L2)–(L4), relu1 (L6)
        g = layer.backward(g)  # (N, 100), (N, 100), (N, 300), (N, 300)
    layers[0].param_backward(g)  # fc1: G_W (784, 300) and G_b (300,) only


# %% 6. Adam (O2), written out
# Per parameter p with gradient g: running means of g and g², each corrected for starting at
# zero (the 1 − βᵗ), then a step of about η in every coordinate. The arithmetic stays in
# float32 (f = p's dtype) and follows minibern/optim.py line by line, in the same order:
# floating-point rounding depends on the order, and step 8 compares bit for bit.
beta1, beta2, eps = 0.9, 0.999, 1e-8
xp = B.get_array_module(train.images)
m = {name: xp.zeros_like(p) for name, p in net.named_parameters().items()}
v = {name: xp.zeros_like(p) for name, p in net.named_parameters().items()}


def adam_step(t):
    """One (O2) update of every parameter, in place; t = 1, 2, ... counts the steps."""
    grads = net.named_gradients()  # {"fc1.W": G_W, "fc1.b": G_b, ...} from backward
    for name, p in net.named_parameters().items():
        g, f = grads[name], p.dtype.type
        m[name] *= f(beta1)  # m ← β₁ m + (1 − β₁) g
        m[name] += f(1 - beta1) * g
        v[name] *= f(beta2)  # v ← β₂ v + (1 − β₂) g²
        v[name] += f(1 - beta2) * g * g
        step = f(config.lr / (1 - beta1 ** t))  # η / (1 − β₁ᵗ)
        denom = xp.sqrt(v[name] * f(1 / (1 - beta2 ** t)))  # √(v / (1 − β₂ᵗ))
        denom += f(eps)
        p -= step * m[name] / denom  # (O2), into the layer's own array


# %% 7. The loop: one epoch, a fresh random order, batches of 100
# Trainer draws one permutation of the training images per epoch from the batch stream and
# walks it 100 at a time (the last batch may be short). Per step: forward, loss, backward,
# Adam. The loss should fall from about ln 10 fast, then slowly.
order = B.asarray(batch_rng.permutation(train.size))  # (N_train,) image indices
n_steps = -(-train.size // config.batch_size)  # ⌈N_train / 100⌉
every = max(n_steps // 5, 1)
step_losses = []
for step in range(n_steps):
    index = order[step * config.batch_size:(step + 1) * config.batch_size]
    loss, g_z = cross_entropy(forward(train.images[index]), train.labels[index])
    backward(g_z)
    adam_step(t=step + 1)
    step_losses.append(B.to_float(loss))
    if (step + 1) % every == 0 or step + 1 == n_steps:
        recent = step_losses[-every:]
        print(f"step 7: step {step + 1:3d}/{n_steps}: mean loss of the last {len(recent)} "
              f"steps {sum(recent) / len(recent):.4f}")
hand_mean = sum(step_losses) / n_steps  # summed in step order, as Trainer sums

plt = pyplot()
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(range(1, n_steps + 1), step_losses, lw=0.8, label="loss of each minibatch (L18)")
ax.axhline(log(10), color="C3", ls="--", lw=0.8, label="ln 10: a uniform guess")
ax.set_xlabel("step (minibatch of 100)")
ax.set_ylabel("softmax cross-entropy (nats)")
ax.set_title("Does the hand-written loop learn within its first epoch?", fontsize=10)
ax.legend()
ax.grid(alpha=0.3)
hand_figure = save(fig, args.out / "hand_loop_loss.png")

# %% 8. Trainer runs the same steps: same seed, one epoch, the same weights bit for bit
# A fresh network from the same seed, and Trainer for one epoch (no run directory). If the
# loop above is the loop Trainer runs, every weight matches exactly — not just closely: the
# same float32 operations in the same order round the same way. Reorder one line of
# adam_step and the weights differ in their last bits after the first step, and the
# differences grow from there (exercise 2).
library = Trainer(lenet300_100(seed=run_rngs(config.seed)[0]), splits,
                  replace(config, epochs=1), log=lambda line: None)
library_mean = library.fit()["train_loss"][0]
mine, theirs = net.named_parameters(), library.net.named_parameters()
differences = {name: float(abs(B.to_numpy(mine[name]) - B.to_numpy(theirs[name])).max())
               for name in mine}
worst = max(differences.values())
print(f"step 8: hand loop against Trainer after {n_steps} steps: max |weight difference| "
      f"{worst:.1e} over {len(differences)} arrays; mean loss {hand_mean:.6f} against "
      f"{library_mean:.6f}")
agree = worst == 0.0 and hand_mean == library_mean
if not agree:
    raise SystemExit("the hand-written loop and Trainer disagree; check steps 3–7")

# %% 9. Trainer at scale, with a run directory
# Now let the library do it for all the epochs: it also measures the validation error after
# every epoch, writes a checkpoint (so a run can resume), history.npz and metrics.json, and
# the test error after every epoch (recorded, never used to choose anything; the run's
# test_error is the last epoch's). The figures are drawn from those files alone.
trainer = Trainer(lenet300_100(seed=run_rngs(config.seed)[0]), splits, config, log=print)
metrics = trainer.fit(args.out)
write_run_files(args.out, metrics)
losses = metrics["train_loss"]
print("step 9: mean training loss per epoch: " + " → ".join(f"{v:.4f}" for v in losses))
paths = [hand_figure, *show(plot_run(args.out))]

# %% Result
same = "agree bit for bit" if agree else f"differ by up to {worst:.1e}"
print(f"tutorial 3: LeNet-300-100: the hand-written loop and Trainer {same} after "
      f"{n_steps} steps; Trainer, {metrics['epochs']} epochs: training loss {losses[0]:.4f} → "
      f"{losses[-1]:.4f}, test error {100 * metrics['test_error']:.2f}%, "
      f"{sum(metrics['epoch_seconds']) / metrics['epochs']:.2f} s/epoch, figures: "
      f"{', '.join(p.name for p in paths)} in {args.out}")

# %% [markdown]
# ## Exercises
# 1. **Plant a wrong sign in (L19).** In `cross_entropy`, write `g_z[rows, labels] += 1`.
#    Before you run `python tutorials/03_lenet300_without_gates.py --quick`, predict: does the
#    initial-loss check of step 4 notice? What does the loss do in step 7, and which line of
#    step 8 stops the script? (The loss is computed before the gradient: only training shows
#    it.)
# 2. **Round differently.** In `adam_step`, replace the last four lines by the textbook form
#    `p -= config.lr * (m[name] / (1 - beta1 ** t)) / (xp.sqrt(v[name] / (1 - beta2 ** t)) + eps)`
#    (the same (O2) on paper) and delete the `raise SystemExit` line of step 8 (keep the `if`
#    with `pass`). Predict the max weight difference of step 8 with --quick (50 steps):
#    exactly 0, about 1e-7 (a few float32 roundings) or larger? Then run the 550 steps of
#    `--epochs 1` without --quick: does the difference stay at rounding level, and does the
#    mean loss still agree to six decimals?
# 3. **Break the symmetry.** Set every weight to zero before the loop: add
#    `for p in net.named_parameters().values(): p[...] = 0` after step 2. Predict the initial
#    loss in step 4 and what the loss of step 7 does, then explain it with (L2)–(L4): what is
#    G_W of fc1 when fc2's W is zero?
