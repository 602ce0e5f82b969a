"""The estimator table: gated LeNet-300-100 on MNIST under each Δ estimator and setting.

Trains every row with ``python -m minibern train`` (20 epochs by default, one run directory per
row and seed under --out) and prints one Markdown table from the runs' metrics.json: gates
decided within 1e-3 and 1e-2 of 0 or 1, the kept architecture, parameters, test error of the
final epoch, and seconds per epoch (mean, first, last: pruning makes the last ones cheaper).
Rows already trained are read, not retrained, so the table can be redrawn at any time::

    python benchmarks/estimator_table.py --out runs/estimators --seeds 0 1 2

About 1–2 minutes per gated run and 30 s per un-gated one on a 2-core CPU.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROWS = {
    "removal (default: 16 input, 16 hidden gates per step)": ["--gates"],
    "removal, 16 input, 32 hidden gates per step": ["--gates", "--subset", "32"],
    "removal, 32 input, 32 hidden gates per step": ["--gates", "--subset", "32",
                                                    "--first-subset", "32"],
    "removal, 8 input, 16 hidden gates per step": ["--gates", "--first-subset", "8"],
    "removal, 8 gates per step": ["--gates", "--subset", "8", "--first-subset", "8"],
    "removal, 64 gates per step": ["--gates", "--subset", "64", "--first-subset", "64"],
    "first-order": ["--gates", "--estimator", "first-order"],
    "no gates": [],
}
COMMON = ["--model", "lenet300", "--lr-decay", "5", "--quiet"]


def run_dir(out: Path, row: str, seed: int) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in row).strip("_")
    return out / f"{slug}_seed{seed}"


def train(directory: Path, args: list, seed: int, epochs: int) -> None:
    if (directory / "metrics.json").exists():
        return
    command = [sys.executable, "-m", "minibern", "train", *COMMON, *args, "--seed", str(seed),
               "--epochs", str(epochs), "--out", str(directory)]
    if (directory / "checkpoint.npz").exists():
        command.append("--resume")
    print("running:", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def cell(metrics: dict) -> list:
    seconds = metrics["epoch_seconds"]
    decided = [f"{100 * metrics[k]:.1f} %" if k in metrics else "–"
               for k in ("decided_1e-3", "decided_1e-2")]
    return [*decided, "-".join(map(str, metrics["architecture"])), f"{metrics['params']:,}",
            f"{100 * metrics['test_error']:.2f} %",
            f"{sum(seconds) / len(seconds):.2f} ({seconds[0]:.2f} → {seconds[-1]:.2f})"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/estimators")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--collect-only", action="store_true", help="print what is there")
    args = parser.parse_args(argv)
    out = Path(args.out)
    print("| setting | seed | decided 1e-3 | decided 1e-2 | architecture | params | test error "
          "| s/epoch mean (first → last) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in args.rows:
        for seed in args.seeds:
            directory = run_dir(out, row, seed)
            if not args.collect_only:
                train(directory, ROWS[row], seed, args.epochs)
            if (directory / "metrics.json").exists():
                metrics = json.loads((directory / "metrics.json").read_text())
                print("| " + " | ".join([row, str(seed), *cell(metrics)]) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
