"""Tutorial 1: train LeNet-300-100 on MNIST with the hand-derived engine.

What you learn
    How a network is assembled from layers whose backward passes are derived by hand, how the
    training loop draws seeded minibatches, and what a run directory holds (metrics.json,
    history.npz, checkpoint.npz, train.log) so every figure can be redrawn later.
Read alongside
    docs/derivations/layers.md — (L1)–(L4) dense, (L5)–(L6) ReLU, (L18)–(L19) the loss,
    (O2) Adam; then minibern/layers/dense.py and minibern/train.py.
Figures
    loss.png, val_error.png, epoch_seconds.png in --out.
Time on a 2-core CPU
    about 2 s per epoch (3 epochs by default: ~10 s with data loading); --quick: ~3 s.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/01_mnist_lenet300.py --out runs/tutorial1
"""
import argparse
import sys
from pathlib import Path

import minibern
from minibern.data import load_mnist
from minibern.models import lenet300_100
from minibern.plots import plot_training
from minibern.train import TrainConfig, Trainer, device_splits, run_rngs, write_run_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "cupy", "strict"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 epoch on 5,000 images")
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA)")
    parser.add_argument("--out", default="runs/tutorial1")
    args = parser.parse_args(argv)
    if args.backend:
        minibern.set_backend(args.backend)

    # 1. Data: host arrays, fixed split (last 5,000 training images validate).
    data = load_mnist(args.data)
    # 2. Model: 784-300-100-10, He-initialised from the run's seeded init stream.
    config = TrainConfig(model="lenet300", epochs=1 if args.quick else args.epochs,
                         seed=args.seed, optimizer="adam", lr=1e-3,
                         train_subset=5000 if args.quick else None)
    net = lenet300_100(seed=run_rngs(config.seed)[0])
    # 3. Train: forward, loss, backward, Adam, validation each epoch, checkpoint each epoch.
    splits = device_splits(data, net.input_shape, config.train_subset)
    out = Path(args.out)
    trainer = Trainer(net, splits, config, log=print)
    metrics = trainer.fit(out)
    write_run_files(out, metrics)
    # 4. Figures, drawn from the run directory alone.
    paths = plot_training(out)
    print(f"tutorial 1: LeNet-300-100, {metrics['epochs']} epochs, test error "
          f"{100 * metrics['test_error']:.2f}%, {sum(metrics['epoch_seconds']) / metrics['epochs']:.2f} "
          f"s/epoch, figures: {', '.join(p.name for p in paths)} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
