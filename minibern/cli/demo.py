"""A one-minute demo: train a small dense ReLU network on synthetic data, print its accuracy.

The data are K Gaussian clusters in D dimensions, labelled by cluster, with enough overlap that a
linear model is not perfect. Everything is seeded: same seed and backend, same numbers.
"""
from __future__ import annotations

import argparse
import time

from minibern import backend as B
from minibern import layers as L
from minibern.losses import accuracy, softmax_cross_entropy
from minibern.optim import Adam


def make_clusters(rng, n: int, classes: int = 4, dim: int = 10, spread: float = 1.6):
    """Host arrays (x float32 (n, dim), y int64 (n,)); cluster means fixed by ``rng``."""
    np = B.host
    means = rng.standard_normal((classes, dim)) * 1.5
    labels = rng.integers(0, classes, size=n)
    x = means[labels] + spread * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels.astype(np.int64)


def run_demo(seed: int = 0, epochs: int = 20, batch_size: int = 50, backend: str | None = None,
             log=print) -> dict:
    """Train 10-64-64-4 with Adam; returns ``{"train_accuracy", "test_accuracy", "seconds"}``.
    ValueError names a bad argument: ``seed`` >= 0, ``epochs`` and ``batch_size`` >= 1."""
    for name, value, least in (("seed", seed, 0), ("epochs", epochs, 1),
                               ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if backend is not None:
        B.set_backend(backend)
    rng = B.make_rng(seed)
    data_rng = B.make_rng(12345)  # the data set is the same for every seed
    x_all, y_all = make_clusters(data_rng, 3000)
    x_train, y_train = B.asarray(x_all[:2000]), B.asarray(y_all[:2000])
    x_test, y_test = B.asarray(x_all[2000:]), B.asarray(y_all[2000:])
    net = L.Sequential(L.Dense(10, 64, rng=rng), L.ReLU(), L.Dense(64, 64, rng=rng), L.ReLU(),
                       L.Dense(64, 4, rng=rng))
    optimizer = Adam(lr=3e-3)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = B.asarray(B.random_permutation(rng, 2000))
        total = 0.0
        for i in range(0, 2000, batch_size):
            batch = order[i:i + batch_size]
            loss, dlogits = softmax_cross_entropy(net.forward(x_train[batch]), y_train[batch])
            net.backward(dlogits, input_grad=False)  # no one needs ∂L/∂x of the data
            optimizer.step(net)
            total += B.to_float(loss)
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            log(f"epoch {epoch:3d}  train loss {total / (2000 // batch_size):.4f}")
    result = {"train_accuracy": accuracy(net.forward(x_train), y_train),
              "test_accuracy": accuracy(net.forward(x_test), y_test),
              "seconds": time.perf_counter() - start}
    log(f"demo: backend {B.get_backend().name}, seed {seed}: train accuracy "
        f"{result['train_accuracy']:.3f}, test accuracy {result['test_accuracy']:.3f} "
        f"({result['seconds']:.1f} s)")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minibern demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backend", choices=B.BACKEND_NAMES, default=None)
    args = parser.parse_args(argv)
    try:
        run_demo(args.seed, args.epochs, backend=args.backend)
    except (ValueError, RuntimeError) as error:  # a bad argument; a backend that cannot start
        parser.error(str(error))
    return 0
