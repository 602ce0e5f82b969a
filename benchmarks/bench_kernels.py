"""NumPy traps the engine avoids, measured: each row times the slow form against the one used.

Every row runs both forms on the same arrays in one process, alternating, and prints the median
over ``--rounds`` rounds (each the mean of ``--repeat`` calls) and the ratio slow / used::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_kernels.py

| trap | where the engine avoids it |
|---|---|
| ``maximum(x, 0)`` against a scalar | ReLU, the removal estimator: ``backend.shared_zeros_like`` |
| a reduction over a short inner axis (K = 10 classes) | ``losses.per_example_cross_entropy`` |
| 2-D ``nonzero`` | the removal estimator's pairs: ``flatnonzero`` and ``divmod`` |
| one float32 uniform per Bernoulli draw | ``gates.bernoulli_bytes`` (E0): one byte |
"""
import argparse
import statistics
import sys
import time

import numpy as np

from minibern import backend as B
from minibern.bernoulli.gate import bernoulli_bytes
from minibern.losses import per_example_cross_entropy


def seconds(function, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def old_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return log_norm - shifted[np.arange(logits.shape[0]), labels]


def cases(rng):
    conv_act = rng.standard_normal((100, 20, 24, 24)).astype(np.float32)
    hidden = rng.standard_normal((2250, 100)).astype(np.float32)
    logits = rng.standard_normal((2250, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 2250)
    active = rng.random((100, 32)) < 0.7
    theta = rng.random(784)
    gen = np.random.default_rng(0)
    yield ("ReLU (100, 20, 24, 24): maximum with a scalar / with shared zeros",
           lambda: np.maximum(conv_act, np.float32(0)),
           lambda: np.maximum(conv_act, B.shared_zeros_like(conv_act)))
    yield ("ReLU (2250, 100): maximum with a scalar / with shared zeros",
           lambda: np.maximum(hidden, np.float32(0)),
           lambda: np.maximum(hidden, B.shared_zeros_like(hidden)))
    yield ("cross-entropy per example (2250, 10): rows / classes first",
           lambda: old_cross_entropy(logits, labels),
           lambda: per_example_cross_entropy(logits, labels))
    yield ("pairs of a (100, 32) bool: nonzero / flatnonzero + divmod",
           lambda: np.nonzero(active),
           lambda: np.divmod(np.flatnonzero(active), active.shape[1]))
    yield ("Bern(θ) masks (100, 784): float32 uniforms / bytes (E0)",
           lambda: (gen.random((100, 784), dtype=np.float32) < theta.astype(np.float32)
                    ).astype(np.float32),
           lambda: bernoulli_bytes(gen, theta, 100))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"NumPy {np.__version__}; {args.rounds} rounds of {args.repeat} calls, alternated; "
          "milliseconds per call, median (min–max)")
    print("| kernel: slow form / form used | slow ms | used ms | slow / used |")
    print("|---|---|---|---|")
    for name, slow, used in cases(np.random.default_rng(0)):
        slow(), used()  # warm up (and grow the shared zero buffer)
        times = {"slow": [], "used": []}
        for _ in range(args.rounds):
            times["slow"].append(seconds(slow, args.repeat) * 1e3)
            times["used"].append(seconds(used, args.repeat) * 1e3)
        a, b = (statistics.median(times[k]) for k in ("slow", "used"))
        print(f"| {name} | {a:.4f} ({min(times['slow']):.4f}–{max(times['slow']):.4f}) | "
              f"{b:.4f} ({min(times['used']):.4f}–{max(times['used']):.4f}) | {a / b:.1f}× |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
