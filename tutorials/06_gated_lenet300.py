"""Tutorial 2: learn which units LeNet-300-100 needs, with Bernoulli gates.

What you learn
    How every input pixel and hidden unit gets a Bernoulli gate whose keep-probability θ is
    learned by projected Robbins–Monro SGD on the variational objective with the flattening
    hyper-prior; how the unbiased removal estimator measures what deleting a unit costs; how θ
    converges to 0 or 1 so the final network is deterministic and smaller.
Read alongside
    docs/derivations/bernoulli_objective.md — (B10) γ*, (B11) the flattened KL = κθ + const,
    (B16)–(B17) why the solutions are deterministic; docs/derivations/estimators.md — (E4)–(E8)
    the removal estimator, (E10) the θ step; then minibern/gates.py and
    minibern/gate_training.py.
Figures
    theta_hist.png (θ of every gate at three moments), theta_decided.png (gates within 0.01 and
    1e-3 of 0 or 1, per epoch), units_per_layer.png (kept units per layer), val_error.png,
    loss.png, epoch_seconds.png — all in --out, with model.npz (the pruned deterministic
    network; tutorial 3 runs it with NumPy alone).
Time on a 2-core CPU
    about 2.3 s per epoch falling to 0.9 s as units are removed (20 epochs: ~35 s); --quick
    (2 epochs on 5,000 images): ~5 s.
    MNIST is read from $MINIBERN_DATA or data/mnist/, and fetched there if missing.

    python tutorials/02_bernoulli_gates_lenet300.py --out runs/tutorial2
"""
import argparse
import sys
from pathlib import Path

import minibern
from minibern.data import load_mnist
from minibern.export import export_and_score
from minibern.gate_training import GateConfig, GateTrainer
from minibern.models import lenet300_100
from minibern.plots import plot_gates, plot_training
from minibern.train import TrainConfig, Trainer, device_splits, run_rngs, write_run_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "cupy", "strict"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--kappa", type=float, default=5.5, help="cost of keeping one unit")
    parser.add_argument("--quick", action="store_true", help="2 epochs on 5,000 images")
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA)")
    parser.add_argument("--out", default="runs/tutorial2")
    args = parser.parse_args(argv)
    if args.backend:
        minibern.set_backend(args.backend)

    # 1. Data and a gated LeNet-300-100: gates on the 784 inputs and on both hidden layers.
    data = load_mnist(args.data)
    config = TrainConfig(model="lenet300", epochs=2 if args.quick else args.epochs,
                         seed=args.seed, train_subset=5000 if args.quick else None, lr_decay=5.0)
    net = lenet300_100(seed=run_rngs(config.seed)[0], gates=True, theta_init=1.0)
    splits = device_splits(data, net.input_shape, config.train_subset)
    # 2. θ learning with the defaults of GateConfig: removal estimator (16 input and 16 h1
    #    gates visited per step, h2 all), κ = 5.5 per unit, θ step 50/(1 + epoch/0.5); gates that
    #    sit within 0.01 of 0 or 1 long enough are snapped there (docs/derivations/
    #    estimators.md), and a unit at θ = 0 for 30 visits leaves the weight arrays
    #    (docs/derivations/pruning.md), so epochs get cheaper as it prunes. With the weights'
    #    rate decayed as 1e-3/(1 + epoch/5) this measured 98.3–98.8 % of gates within 1e-3 of
    #    0/1 after 20 epochs at 1.76–1.93 % test error, ≈ 313-170-91 (seeds 0–4).
    gates = GateTrainer(net, GateConfig(kappa=args.kappa), n_data=splits["train"].size)
    # 3. Train weights (Adam) and θ (projected SGD) together; checkpoint every epoch.
    out = Path(args.out)
    trainer = Trainer(net, splits, config, hooks=[gates], log=print)
    metrics = trainer.fit(out)
    # 4. The final deterministic network as a plain .npz that NumPy alone can run
    #    (tutorials/03_predict_with_numpy_only.py), read back here by the engine: its test error
    #    must equal the network's.
    metrics["export_test_error"] = export_and_score(net, out / "model.npz", data.test_images,
                                                    data.test_labels)
    write_run_files(out, metrics)
    # 5. Figures, drawn from the run directory alone.
    paths = plot_training(out) + plot_gates(out)
    seconds = metrics["epoch_seconds"]
    print(f"tutorial 2: gated LeNet-300-100, {metrics['epochs']} epochs: architecture "
          f"{'-'.join(map(str, metrics['architecture']))} (params "
          f"×{metrics['compression_params']:.1f} fewer), epoch {seconds[0]:.1f} s → "
          f"{seconds[-1]:.1f} s as units were removed, test error "
          f"{100 * metrics['test_error']:.2f}% (model.npz: "
          f"{100 * metrics['export_test_error']:.2f}%), gates decided "
          f"{100 * metrics['decided_1e-2']:.1f}% (within 0.01), "
          f"figures: {', '.join(p.name for p in paths)} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
