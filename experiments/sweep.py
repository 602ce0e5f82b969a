"""Experiment runner: a grid of training runs in parallel worker processes, then one table.

Every run is an ordinary run directory of ``python -m minibern train`` under
``ROOT/GRID/RUN`` (``--root``, default ``experiments/runs``). Finished runs (their
``metrics.json`` exists) are skipped; a run killed half-way is continued from its checkpoint
with ``--resume``; so a grid can be stopped and started again at no loss::

    python experiments/sweep.py run robustness --jobs 2      # train what is missing, then tabulate
    python experiments/sweep.py table robustness             # only tabulate what is there
    python experiments/sweep.py list                         # the grids and their runs
    python experiments/sweep.py results                      # docs/RESULTS.md from every grid

The results page opens with :mod:`headline` (our networks beside the published ones, the
size–error figure, the robustness outcome); every grid's table follows in an appendix, and
:mod:`page_format` splits its tables to at most ten columns and wraps its paragraphs.

The table (``ROOT/GRID/table.md`` and ``table.csv``) has one row per configuration: the runs of
all seeds of a setting, as mean ± std (sample standard deviation over the seeds; the value
alone for one seed) of the kept
architecture (units per layer), parameters, FLOPs per example, final-epoch test and validation
error, the share of gates within 1e-3 of 0 or 1, the share certified by the decision rule, the
audited false-decision rates (docs/derivations/convergence.md (C12)), and seconds per epoch
(first epoch, mean) and, from ``history.npz``, the units still in the weight arrays after epoch
3 over the final kept units, per gate layer (early pruning). Each worker runs with one BLAS thread, so ``--jobs``
is the number of cores used.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_pruning import epoch_seconds_markdown  # noqa: E402
from early_pruning import markdown as early_pruning_markdown  # noqa: E402
from error_gap import markdown as error_gap_markdown  # noqa: E402
from grids import GRIDS, RECORDED_ONLY  # noqa: E402
from moving_weights import markdown as moving_weights_markdown  # noqa: E402
from headline import markdown as headline_markdown  # noqa: E402
from page_format import tidy  # noqa: E402
from protocol import markdown as protocol_markdown  # noqa: E402
from robust_design import markdown as robust_design_markdown  # noqa: E402
from robust_design import offline_markdown as compensated_removal_markdown  # noqa: E402
from vertex_cost import markdown as vertex_cost_markdown  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / "runs"
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "MINIBERN_THREADS")}


class SweepError(RuntimeError):
    """A run of the grid failed; the message names it and its log."""


class Children:
    """The training processes running now, so that a signal to the sweep reaches them:
    :meth:`stop` forwards SIGTERM or SIGINT to each and keeps new ones from starting; the
    workers then wait for them to exit (each keeps its last checkpoint)."""

    def __init__(self):
        self.lock = threading.RLock()  # stop() may run inside itself (a second signal)
        self.running: set = set()
        self.stopped_by: int | None = None

    def start(self, command, stderr) -> subprocess.Popen | None:
        with self.lock:
            if self.stopped_by is not None:
                return None
            # A session of its own: a Ctrl-C at the terminal reaches the sweep, which forwards
            # it once, rather than every child twice.
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                     env={**os.environ, **ONE_THREAD}, start_new_session=True)
            self.running.add(child)
            return child

    def finished(self, child) -> None:
        with self.lock:
            self.running.discard(child)

    def stop(self, signum, frame=None) -> None:
        with self.lock:
            first = self.stopped_by is None
            self.stopped_by = signum if first else self.stopped_by
            for child in self.running:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)
        if first:
            print(f"{signal.Signals(signum).name}: stopping {len(self.running)} run(s); each keeps "
                  "its last checkpoint", file=sys.stderr, flush=True)


CHILDREN = Children()


def run_dir(root: Path, grid: str, run: str) -> Path:
    return root / grid / run


def read_metrics(path: Path) -> dict:
    """A run's metrics.json; SweepError naming it if it is unreadable."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
        return metrics
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SweepError(f"{path} is unreadable ({error}); delete it and run the grid again (its "
                         "checkpoint is resumed, so nothing is trained twice)") from error


def finished(directory: Path) -> bool:
    """Whether the run in ``directory`` is done: metrics.json without an export failure.
    SweepError if its metrics.json is unreadable or says the export failed."""
    path = directory / "metrics.json"
    if not path.exists():
        return False
    export_error = read_metrics(path).get("export_error")
    if export_error:
        raise SweepError(f"{directory} finished training but its model.npz was not written "
                         f"({export_error}); see its train.log")
    return True


def train(root: Path, grid: str, run: str, args: list[str], data: str | None) -> str:
    """Train one run unless it is finished; returns what was done ("skipped", "trained", ...)."""
    directory = run_dir(root, grid, run)
    if finished(directory):
        return "skipped"
    command = [sys.executable, "-m", "minibern", "train", *args, "--quiet",
               "--out", str(directory)]
    if data:
        command += ["--data", data]
    done = "trained"
    if (directory / "checkpoint.npz").exists():
        command.append("--resume")
        done = "resumed"
    directory.parent.mkdir(parents=True, exist_ok=True)
    log = directory.parent / f"{run}.stderr"
    with open(log, "w", encoding="utf-8") as stderr:
        child = CHILDREN.start(command, stderr)
        if child is None:
            log.unlink()
            return "not started (the sweep was stopped)"
        try:
            returncode = child.wait()
        finally:
            CHILDREN.finished(child)
    if returncode != 0:
        stopped = " (stopped by the sweep's signal; rerun to continue)" if CHILDREN.stopped_by else ""
        raise SweepError(f"run {grid}/{run} failed (exit {returncode}){stopped}; see {log}")
    log.unlink()
    return done


def run_grid(root: Path, grid: str, jobs: int, data: str | None, only: list[str] | None) -> int:
    runs = GRIDS[grid]["runs"]
    names = [name for name in runs if (only is None or any(part in name for part in only))
             and name not in RECORDED_ONLY.get(grid, ())]
    failures = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {name: pool.submit(train, root, grid, name, runs[name], data) for name in names}
        for name, future in futures.items():
            try:
                print(f"{grid}/{name}: {future.result()}", flush=True)
            except SweepError as error:
                failures += 1
                print(f"error: {error}", file=sys.stderr, flush=True)
    return failures


# -- the table ----------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def after_epoch(directory: Path, layers: list[str], record: str, epoch: int = 3) -> list[float] | None:
    """Per gate layer in ``layers``, the count ``record`` ("units": still in the weight arrays;
    "kept": θ ≥ ½) after ``epoch`` over the final kept units (the early-pruning measures), from
    ``history.npz``; None if not recorded."""
    path = directory / "history.npz"
    if not path.exists() or not layers:
        return None
    with np.load(path) as history:
        if (f"{record}_{layers[0]}" not in history.files
                or len(history[f"{record}_{layers[0]}"]) < epoch):
            return None
        return [float(history[f"{record}_{name}"][epoch - 1] / max(history[f"kept_{name}"][-1], 1))
                for name in layers]


def run_numbers(metrics: dict, directory: Path | None = None) -> dict:
    """The numbers of one run that the table aggregates (``architecture``: a list)."""
    seconds = metrics["epoch_seconds"]
    numbers = {"architecture": list(metrics["architecture"]), "params": metrics["params"],
               "flops": metrics["flops_per_example"],
               "test_error_%": 100 * metrics["test_error"], "val_error_%": 100 * metrics["val_error"],
               "first_epoch_s": seconds[0], "mean_epoch_s": sum(seconds) / len(seconds),
               "run_s": sum(seconds)}
    if "decided_1e-3" in metrics:
        numbers["decided_%"] = 100 * metrics["decided_1e-3"]
    decisions = metrics.get("decisions") or {}
    if "share_by_rule" in decisions:
        numbers["by_rule_%"] = 100 * decisions["share_by_rule"]
    for key, column in (("false_rate", "false_rule_%"), ("false_rate_projection", "false_proj_%")):
        if decisions.get(key) is not None:
            numbers[column] = 100 * decisions[key]
    layers = [gate["name"] for gate in metrics.get("gates", [])]
    for record, column in (("units", "arrays_e3/kept"), ("kept", "kept_e3/kept")):
        early = after_epoch(directory, layers, record) if directory is not None else None
        if early is not None:
            numbers[column] = early
    return numbers


def _format(values: list[float], digits: int) -> str:
    """``mean ± std`` over the seeds; the value alone for one seed (it has no spread)."""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(root: Path, grid: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per configuration, seeds pooled) of the grid's finished runs."""
    configs: dict[str, list[dict]] = {}
    for name in GRIDS[grid]["runs"]:
        path = run_dir(root, grid, name) / "metrics.json"
        if path.exists():
            config = name.rsplit("_seed", 1)[0]
            configs.setdefault(config, []).append(run_numbers(read_metrics(path), path.parent))
    columns: list[str] = []
    for runs in configs.values():
        for numbers in runs:
            columns += [key for key in numbers if key not in columns]
    rows = []
    for config, runs in configs.items():
        row = [config, str(len(runs))]
        for key in columns:
            values = [numbers[key] for numbers in runs if key in numbers]
            if not values:
                row.append("")
            elif isinstance(values[0], list):  # per layer: mean ± std
                digits = 0 if key == "architecture" else 2
                row.append(" / ".join(_format([float(v[i]) for v in values], digits)
                                      for i in range(len(values[0]))))
            else:
                row.append(_format(values, 0 if key in ("params", "flops") else 2))
        rows.append(row)
    return ["configuration", "seeds", *columns], rows


def write_table(root: Path, grid: str) -> str:
    header, rows = table(root, grid)
    directory = root / grid
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "table.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    text = markdown(header, rows)
    (directory / "table.md").write_text(text, encoding="utf-8")
    return text


def spread(root: Path, grid: str, reference) -> tuple[list[str], list[list[str]]]:
    """Per configuration and layer: mean kept units relative to its reference's mean, in %.

    ``reference`` is one configuration for all, or ``{configuration: its reference}`` (a
    configuration missing from the dict is not compared)."""
    means = {}
    for name in GRIDS[grid]["runs"]:
        path = run_dir(root, grid, name) / "metrics.json"
        if path.exists():
            config = name.rsplit("_seed", 1)[0]
            means.setdefault(config, []).append(read_metrics(path)["architecture"])
    against = (reference if isinstance(reference, dict)
               else {config: reference for config in means})
    rows, width = [], 0
    for config, archs in means.items():
        base_name = against.get(config)
        if base_name not in means:
            continue
        base = [sum(column) / len(column) for column in zip(*means[base_name])]
        layer_means = [sum(column) / len(column) for column in zip(*archs)]
        width = len(base)
        rows.append([config, base_name,
                     *(f"{100 * (m / b - 1):+.0f} %" for m, b in zip(layer_means, base))])
    if not rows:
        return [], []
    return ["configuration", "against", *(f"layer {i}" for i in range(width))], rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


RESULTS_HEADER = """# Results

Generated by `python experiments/sweep.py results` from the run directories under
`experiments/runs/` (their `metrics.json` files are kept in the repository); do not edit by
hand. `python experiments/sweep.py run GRID --jobs 2` trains what a grid is missing
(`python experiments/sweep.py list` shows every run's arguments); `experiments/runs/README.md`
says which code made the kept runs. MNIST throughout; every run 20 epochs unless its grid says
otherwise, errors of the final epoch (nothing is chosen on the test set).
"""

APPENDIX_HEADER = """## Appendix: every grid

Conventions. *architecture*: units kept (θ ≥ ½) per gated layer, mean ± std over the seeds
(the value alone for one seed): LeNet-300-100 inputs / h1 / h2; LeNet-5-Caffe conv1 filters /
conv2 filters / fc1 inputs / fc1 units. *params*, *flops*: of the deterministic network (flops:
multiply–accumulates per example). *decided_%*: gates within 1e-3 of 0 or 1. *by_rule_%*: gates
certified by the decision rule (docs/derivations/convergence.md (C10)), the others decided by
the projected step alone. *false_rule_%*, *false_proj_%*: decisions that the end-of-run audit
(C12) contradicts among the audited rule-certified and projection-only gates (section "moving
weights" says what the audit at the final weights misses). *arrays_e3/kept*, *kept_e3/kept*:
units still in the weight arrays, and units kept, after epoch 3 over the final kept units, per
layer (early pruning, (P6)). *first_epoch_s*, *mean_epoch_s*, *run_s*: seconds of the training
passes, one BLAS thread per run, two or three runs at a time on a shared 2-core machine except
in grid `timing`: compare within a table only.

Each grid's table is split in two: size and error, then the gates' audit, early pruning and
seconds.
"""

#: the columns of a grid's first and second appendix table (those a grid has)
SIZE_COLUMNS = ("configuration", "seeds", "architecture", "params", "flops", "test_error_%",
                "val_error_%", "decided_%", "by_rule_%")
OTHER_COLUMNS = ("configuration", "false_rule_%", "false_proj_%", "arrays_e3/kept",
                 "kept_e3/kept", "first_epoch_s", "mean_epoch_s", "run_s")


def select(header: list[str], rows: list[list[str]], columns) -> tuple[list[str], list[list[str]]]:
    """The ``columns`` of a table that it has and that some row fills (the key column always)."""
    keep = [header.index(name) for name in columns if name in header
            and (name == columns[0] or any(row[header.index(name)] for row in rows))]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


def results_figures(root: Path, figures: Path) -> list[str]:
    """Draw the page's figures from the runs (needs matplotlib); Markdown lines embedding them,
    relative to docs/. Figures whose runs are missing are left out."""
    try:
        from minibern import plots
    except ImportError as error:  # matplotlib is the "plots" extra
        return [f"(figures not drawn: {error}; pip install \".[plots]\")\n"]
    def finished(run: Path) -> bool:
        return (run / "metrics.json").exists() and (run / "history.npz").exists()

    gated = run_dir(root, "trajectories", "gated_seed0")
    ablation = run_dir(root, "trajectories", "no_hyperprior_seed0")
    if not (finished(gated) and finished(ablation)):  # the same runs, θ once per epoch
        gated = run_dir(root, "lenet300", "gated_seed0")
        ablation = run_dir(root, "ablation", "no_hyperprior_seed0")
    lines = []
    figures.mkdir(parents=True, exist_ok=True)

    if finished(gated) and finished(ablation):
        plots.compare_theta_trajectories({"hyper-prior": gated, "fixed γ": ablation},
                                         figures / "theta_trajectories.png")
        count = plots.snapshots_per_epoch(plots.load_run(gated)[1])
        per_epoch = "one snapshot per epoch" if count <= 1 else f"{count} snapshots per epoch"
        lines.append(f"θ of 40 gates per layer over training ({per_epoch}), LeNet-300-100"
                     " seed 0, with the flattening hyper-prior (top) and with a fixed γ = ½"
                     " (bottom):\n\n![θ trajectories](figures/theta_trajectories.png)\n")
    if finished(gated):
        plots.plot_input_pixels(gated, figures)
        lines.append("The input pixels that survive (LeNet-300-100, seed 0):\n\n"
                     "![surviving input pixels](figures/input_pixels.png)\n")
    return lines


def grid_section(root: Path, grid: str, spec: dict) -> str:
    """One grid in the appendix: what it varies, its two tables and the spread table."""
    about = spec["about"]
    parts = [f"### {grid}\n", f"{about[0].upper() if about[:1].isascii() else about[:1]}"
                                f"{about[1:]}.\n"]
    header, rows = table(root, grid)
    if not rows:
        return "\n".join(parts + ["Not run yet.\n"])
    for columns in (SIZE_COLUMNS, OTHER_COLUMNS):
        part_header, part_rows = select(header, rows, columns)
        if len(part_header) > 1:
            parts.append(markdown(part_header, part_rows))
    reference = spec.get("reference")
    if reference:
        spread_header, spread_rows = spread(root, grid, reference)
        if spread_rows:
            named = f"`{reference}`" if isinstance(reference, str) else "the reference in each row"
            parts.append(f"Kept units per layer against {named} (means):\n\n"
                         + markdown(spread_header, spread_rows))
    return "\n".join(parts)


def write_results(root: Path, path: Path) -> str:
    """docs/RESULTS.md: the headline (ours beside the published networks, the size–error
    figure, the robustness outcome), then every grid and every analysis in an appendix."""
    parts = [RESULTS_HEADER, headline_markdown(root, path.parent / "figures")]
    figures = results_figures(root, path.parent / "figures")
    if figures:
        parts += ["### What the gates do\n", *figures]
    parts.append(APPENDIX_HEADER)
    parts += [grid_section(root, grid, spec) for grid, spec in GRIDS.items()]
    for section in (early_pruning_markdown, epoch_seconds_markdown, error_gap_markdown,
                    protocol_markdown, vertex_cost_markdown, moving_weights_markdown, robust_design_markdown,
                    compensated_removal_markdown):
        found = section(root)  # "" when none of its runs or files exist
        if found:
            parts.append(found.replace("## ", "### ", 1) if found.startswith("## ") else found)
    text = tidy("\n".join(parts))
    path.write_text(text, encoding="utf-8")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a grid of training runs and tabulate it.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "table"):
        command = sub.add_parser(name)
        command.add_argument("grid", choices=sorted(GRIDS))
        command.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    sub.choices["run"].add_argument("--jobs", type=int, default=2,
                                    help="worker processes (one BLAS thread each)")
    sub.choices["run"].add_argument("--data", default=None, help="MNIST folder for every run")
    sub.choices["run"].add_argument("--only", nargs="+", default=None,
                                    help="train only the runs whose name contains one of these")
    sub.add_parser("list")
    results = sub.add_parser("results")
    results.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    results.add_argument("--out", type=Path, default=DEFAULT_ROOT.parents[1] / "docs" / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.command == "results":
        write_results(args.root, args.out)
        print(f"wrote {args.out}")
        return 0
    if args.command == "list":
        for grid, spec in sorted(GRIDS.items()):
            print(f"{grid}: {spec['about']}")
            for name, run_args in spec["runs"].items():
                print(f"  {name}: {' '.join(run_args)}")
        return 0
    if args.command == "run":
        if args.jobs < 1:
            parser.error(f"--jobs must be >= 1, got {args.jobs}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, CHILDREN.stop)
        failures = run_grid(args.root, args.grid, args.jobs, args.data, args.only)
        if CHILDREN.stopped_by is not None:
            print(f"error: sweep stopped by {signal.Signals(CHILDREN.stopped_by).name}; every run "
                  "started has exited and kept its last checkpoint: run the same command to "
                  "continue", file=sys.stderr)
            return 128 + CHILDREN.stopped_by
        print(write_table(args.root, args.grid), end="")
        return 1 if failures else 0
    print(write_table(args.root, args.grid), end="")
    return 0


def run_main(argv=None) -> int:
    """:func:`main` with every failure as one message: a run's, or an unreadable run file."""
    try:
        return main(argv)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError) as error:  # a run file the other sections read
        print(f"error: {type(error).__name__}: {error}; a run file under --root is unreadable or "
              "not minibern's: delete that run's folder (or restore it) and run again",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run_main())
