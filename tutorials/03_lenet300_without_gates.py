"""Tutorial 3: train LeNet-300-100 on MNIST with the hand-derived engine, without gates.

What you learn
    How a network is assembled from the layers of tutorials 1–2, how the training loop draws
    seeded minibatches and runs forward, loss, backward and Adam, and what a run directory holds
    (metrics.json, history.npz, checkpoint.npz) so every figure can be redrawn later. This is
    the un-gated baseline that tutorial 6 prunes.
Read alongside
    docs/derivations/layers.md — (L0) the chain rule, (L1)–(L4) dense, (L5)–(L6) ReLU,
    (L18)–(L19) the loss, (O2) Adam; then minibern/models.py, minibern/training/config.py and
    minibern/training/trainer.py.
Figures (in --out)
    loss.png, val_error.png, epoch_seconds.png (`python -m minibern plot DIR` redraws them).
Time on a 2-core CPU
    under a minute for the 3 epochs with data loading; --quick (2 epochs on 5,000 images):
    well under half a minute. MNIST is read from $MINIBERN_DATA or data/mnist/, fetched there if missing.

    python tutorials/03_lenet300_without_gates.py --out runs/tutorial3
"""
# %% 1. Options and data
from _common import show, tutorial_args

from minibern.data import load_mnist
from minibern.models import lenet300_100
from minibern.plots import plot_run
from minibern.training.trainer import TrainConfig, Trainer, device_splits, run_rngs, write_run_files


def options(parser):
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA)")


args = tutorial_args(__doc__, quick="2 epochs on 5,000 images", out="runs/tutorial3",
                     extra=options)
data = load_mnist(args.data)  # host arrays; the last 5,000 training images validate
print(f"step 1: MNIST train {data.train_images.shape}, validation {data.val_images.shape}, "
      f"test {data.test_images.shape}")

# %% 2. The model: 784-300-100-10, He-initialised from the run's seeded init stream
config = TrainConfig(model="lenet300", epochs=2 if args.quick else args.epochs, seed=args.seed,
                     optimizer="adam", lr=1e-3, train_subset=5000 if args.quick else None)
net = lenet300_100(seed=run_rngs(config.seed)[0])
print(f"step 2: {net.num_parameters():,} parameters: "
      + "  ".join(f"{name} {type(layer).__name__}" for name, layer in net))

# %% 3. Train: per step forward, softmax cross-entropy (L18), backward (L19)…(L2), Adam (O2);
# per epoch the validation error and a checkpoint. The loss printed per epoch should fall.
splits = device_splits(data, net.input_shape, config.train_subset)
trainer = Trainer(net, splits, config, log=print)
metrics = trainer.fit(args.out)
write_run_files(args.out, metrics)
losses = metrics["train_loss"]
print("step 3: mean training loss per epoch: " + " → ".join(f"{v:.4f}" for v in losses))

# %% 4. Figures, drawn from the run directory alone
paths = show(plot_run(args.out))

# %% Result
print(f"tutorial 3: LeNet-300-100, {metrics['epochs']} epochs, training loss {losses[0]:.4f} → "
      f"{losses[-1]:.4f}, test error {100 * metrics['test_error']:.2f}%, "
      f"{sum(metrics['epoch_seconds']) / metrics['epochs']:.2f} s/epoch, figures: "
      f"{', '.join(p.name for p in paths)} in {args.out}")
