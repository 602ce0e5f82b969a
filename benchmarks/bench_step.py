"""Seconds per 100 training steps: minibern against PyTorch (CPU) and against its own GEMM floor.

One training step = gather a batch of 100, forward, softmax cross-entropy, backward, momentum-SGD
update (lr 0.01, momentum 0.9), float32 — the step :meth:`minibern.training.Trainer.train_epoch`
runs. For every network the script times, in the same process and alternating which goes first
in each round:

* **minibern**: ``Trainer.train_epoch`` on a ``train_subset`` of 100·steps MNIST images (a
  fresh network and trainer each round, built outside the timer);
* **minibern, gates on**: the same with ``build_model(..., gates=True)`` and a
  :class:`minibern.bernoulli.hook.GateTrainer` with the model's default ``gate_config_for(model)``, wired as
  ``Trainer.fit`` wires it (``before_fit``, then the trainer's hooks);
* **PyTorch**: the same network (the same initial weights, copied), ``torch.optim.SGD`` with
  momentum, the same batch size and number of steps;
* **GEMM floor**: only the matrix products of forward and backward, on the real shapes, in
  float32, with preallocated contiguous operands — the forward product, the weight gradient and
  the input gradient of every Dense/Conv2D layer (a conv layer as its im2col product
  (N·OH·OW, C·KH·KW) @ (C·KH·KW, F)), except the input gradient of the first layer, which no
  step needs (neither framework computes it).

Each number is the median over ``--rounds`` rounds, with the min–max; ratios are medians of
per-round (paired) ratios. Peak memory per step is the peak of NumPy allocations traced by
``tracemalloc`` during one step (activations kept for backward plus temporaries), measured in a
separate untimed step; the process's peak resident set is printed too.

PyTorch is optional: without it the script says so and prints minibern's numbers.
Threads: NumPy's BLAS thread count is read (and with ``--threads`` set) through the OpenBLAS
library NumPy loaded; PyTorch gets ``torch.set_num_threads`` of the same count. On a host shared
with other jobs, multi-threaded BLAS and PyTorch stall whenever one of their threads is
descheduled (times then vary widely between rounds); ``--threads 1`` gives stable numbers there.
The script measures how many cores other processes kept busy and says so in its report.

Usage::

    python benchmarks/bench_step.py                     # both nets, gates off/on, 5 rounds
    python benchmarks/bench_step.py --quick             # smoke run: 20 steps, 3 rounds
    python benchmarks/bench_step.py --threads 1 --nets lenet5 --no-gates
    python benchmarks/bench_step.py --pruned-lenet300 321-170-94 --pruned-lenet5 8-17-272-41
    # the docs page, one table per thread count (the longest run: several minutes):
    python benchmarks/bench_step.py --markdown --threads 1,2 --pruned-lenet300 197-127-80 \
        --pruned-lenet5 16-33-528-95 --first-epochs 3 \
        --breakdown-run experiments/runs/lenet300/gated_seed0@3 \
        --breakdown-run experiments/runs/lenet300/gated_seed0@20 \
        --breakdown-run experiments/runs/timing/gated_at_one_seed0@20 > docs/BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import resource
import shlex
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minibern import backend as B
from minibern import layers as L
from minibern.bernoulli.config import gate_config_for
from minibern.bernoulli.gated_models import build_model
from minibern.bernoulli.hook import GateTrainer
from minibern.data.mnist import N_TRAIN
from minibern.kernels import blas
from minibern.kernels import threads as T
from minibern.training.trainer import TrainConfig, Trainer, device_splits

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the script still measures minibern
    torch = None

BATCH = 100
LR, MOMENTUM = 0.01, 0.9
REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Threads: NumPy's OpenBLAS, read and set through the library NumPy loaded (minibern.kernels.blas).
# ---------------------------------------------------------------------------------------------
def set_blas_threads(count: int) -> None:
    if not blas.set_threads(count):
        raise SystemExit("--threads: cannot find NumPy's OpenBLAS to set its thread count; "
                         "set OPENBLAS_NUM_THREADS in the environment instead")


# ---------------------------------------------------------------------------------------------
# The machine and how busy it was.
# ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _busy_jiffies():
    """(busy, total) CPU jiffies of the whole machine from /proc/stat, or None."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, sum(values[:8])


class LoadMeter:
    """CPU time the *other* processes used while we measured (machine busy − our own)."""

    def __init__(self):
        self.start = _busy_jiffies()
        self.own = self._own()
        self.wall = time.perf_counter()
        self.loadavg = []

    @staticmethod
    def _own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def sample(self) -> None:
        try:
            self.loadavg.append(os.getloadavg()[0])
        except OSError:
            pass

    def others_cores(self):
        """Average number of cores busy with other processes, or None."""
        end = _busy_jiffies()
        if end is None or self.start is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.perf_counter() - self.wall
        busy = (end[0] - self.start[0]) / hz
        return max(0.0, (busy - (self._own() - self.own)) / wall)


# ---------------------------------------------------------------------------------------------
# Networks.
# ---------------------------------------------------------------------------------------------
@dataclass
class Spec:
    """One row of the table: how to build the minibern and the PyTorch network."""

    label: str
    model: str                 # "lenet300" or "lenet5" (input shape, TrainConfig.model)
    gates: bool = False
    pruned: tuple | None = None  # widths for the pruned architectures
    select: object = None        # host index array of kept input pixels (pruned LeNet-300-100)
    kernel_threads: int | None = None  # minibern's kernel threads (None: the default)

    def build(self):
        if self.pruned is None:
            return build_model(self.model, seed=0, gates=self.gates)
        return pruned_network(self.model, self.pruned, self.select)


def pruned_network(model: str, widths, select=None):
    """The un-gated ``model`` cut to ``widths`` as physical pruning leaves a network: the first
    units of every hidden layer kept, their weights those of the full network (P1)–(P3), and
    for LeNet-300-100 the input pixels ``select`` (P4) (docs/derivations/pruning.md)."""
    net = build_model(model, seed=0)
    if model == "lenet300":
        cuts = [("fc1", "fc2", widths[1]), ("fc2", "fc3", widths[2])]
    else:
        cuts = [("conv1", "conv2", widths[0]), ("conv2", "fc1", widths[1]),
                ("fc1", "fc2", widths[3])]
    for producer, consumer, width in cuts:
        block = net[consumer].n_units_in // net[producer].n_units_out  # H·W behind a Flatten
        net[producer].keep_output_units(np.arange(width))  # (P1)
        net[consumer].keep_input_units(np.arange(width), block)  # (P2)–(P3)
    if model == "lenet300" and widths[0] < 784:
        net["fc1"].keep_input_units(select)
        net.insert(0, "select", L.SelectFeatures(select, 784))  # (P4)
    return net


def parse_pruned(text: str, model: str, rng) -> Spec:
    try:
        widths = tuple(int(v) for v in text.split("-"))
    except ValueError:
        widths = ()
    if model == "lenet300":
        if len(widths) != 3 or not 1 <= widths[0] <= 784 or min(widths) < 1:
            raise SystemExit(f"--pruned-lenet300 {text!r}: expected INPUTS-H1-H2 such as "
                             "295-157-93 (inputs ≤ 784)")
        select = np.sort(rng.choice(784, size=widths[0], replace=False))
        return Spec(f"LeNet-300-100 pruned {text}", model, pruned=widths, select=select)
    if len(widths) != 4 or min(widths) < 1 or widths[2] != widths[1] * 16:
        raise SystemExit(f"--pruned-lenet5 {text!r}: expected CONV1-CONV2-FC1IN-FC1 such as "
                         "8-17-272-41, with FC1IN = CONV2·16 (the flattened 4×4 maps)")
    return Spec(f"LeNet-5-Caffe pruned {text}", model, pruned=widths)


def torch_twin(net):
    """A torch.nn.Sequential with the same layers and the same (copied) weights as ``net``,
    built from each layer's export record (:meth:`minibern.layers.Layer.export_op`)."""
    return torch.nn.Sequential(*(_TORCH_TWINS[op["kind"]](op)
                                 for op in (layer.export_op(name) for name, layer in net)))


def _torch_linear(op):
    module = torch.nn.Linear(*op["W"].shape)
    module.weight.data = torch.from_numpy(op["W"].T.copy())
    module.bias.data = torch.from_numpy(op["b"].copy())
    return module


def _torch_conv(op):
    f, c, kh, kw = op["W"].shape
    module = torch.nn.Conv2d(c, f, (kh, kw), stride=op["stride"], padding=op["pad"])
    module.weight.data = torch.from_numpy(op["W"].copy())
    module.bias.data = torch.from_numpy(op["b"].copy())
    return module


#: The PyTorch module of each export op kind.
_TORCH_TWINS = {"dense": _torch_linear, "conv": _torch_conv,
                "relu": lambda op: torch.nn.ReLU(), "flatten": lambda op: torch.nn.Flatten(),
                "maxpool": lambda op: torch.nn.MaxPool2d(op["size"], op["stride"]),
                "select": lambda op: _TorchSelect(op["index"])}


if torch is not None:
    class _TorchSelect(torch.nn.Module):
        def __init__(self, index):
            super().__init__()
            self.register_buffer("index", torch.from_numpy(np.asarray(index, np.int64)))

        def forward(self, x):
            return x.index_select(1, self.index)


# ---------------------------------------------------------------------------------------------
# The timed runs.
# ---------------------------------------------------------------------------------------------
class Data:
    """The first 100·steps MNIST training images (or random stand-ins), host float32."""

    def __init__(self, steps: int, data_dir):
        self.n = steps * BATCH
        self.source = None
        self.full = None  # the whole MNIST, when found (for --first-epochs)
        images = labels = None
        for candidate in [data_dir, os.environ.get("MINIBERN_DATA"), REPO / "data" / "mnist",
                          REPO.parent / "shared" / "data" / "mnist"]:
            if not candidate or not Path(candidate).is_dir():
                continue
            try:
                from minibern.data import load_mnist
                mnist = load_mnist(candidate, download=False)
            except Exception:  # noqa: BLE001 - try the next folder
                continue
            self.full = mnist
            images, labels = mnist.train_images[:self.n], mnist.train_labels[:self.n]
            self.source = "MNIST (the first training images)"
            break
        if images is None:
            rng = np.random.default_rng(0)
            images = rng.random((self.n, 1, 28, 28), dtype=np.float32)
            labels = rng.integers(0, 10, self.n).astype(np.int64)
            self.source = "random images (MNIST not found; timings do not depend on the values)"
        self.images, self.labels = images, labels
        self.mnist_like = _Splits(images, labels)


@dataclass
class _Splits:
    """What ``device_splits`` needs: train/val/test host arrays (val and test are tiny)."""

    train_images: object
    train_labels: object
    val_images: object = None
    val_labels: object = None
    test_images: object = None
    test_labels: object = None

    def __post_init__(self):
        self.val_images, self.val_labels = self.train_images[:BATCH], self.train_labels[:BATCH]
        self.test_images, self.test_labels = self.val_images, self.val_labels


def minibern_runner(spec: Spec, data: Data, steps: int):
    """Build a fresh network and trainer; return the timed callable (one epoch = ``steps``)."""
    net = spec.build()
    config = TrainConfig(model=spec.model, epochs=1, batch_size=BATCH, seed=0, optimizer="sgd",
                         lr=LR, momentum=MOMENTUM, train_subset=steps * BATCH)
    splits = device_splits(data.mnist_like, net.input_shape, config.train_subset)
    trainer = Trainer(net, splits, config, log=lambda message: None,
                      progress_stream=io.StringIO())
    if spec.gates:
        hook = GateTrainer(net, gate_config_for(spec.model), N_TRAIN)  # κ/N of a full MNIST run
        trainer.hooks = [hook]
        hook.before_fit(trainer)

    def run():
        with T.using_threads(spec.kernel_threads or T.get_threads()):
            trainer.train_epoch()
        B.synchronize()
    return run


def torch_runner(spec: Spec, data: Data, steps: int):
    net = spec.build()
    model = torch_twin(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    shape = (data.n,) + tuple(net.input_shape)
    images = torch.from_numpy(np.ascontiguousarray(data.images.reshape(shape)))
    labels = torch.from_numpy(data.labels)
    order_rng = np.random.default_rng(1)

    def run():
        order = torch.from_numpy(order_rng.permutation(data.n))
        for step in range(steps):
            index = order[step * BATCH:(step + 1) * BATCH]
            x, y = images[index], labels[index]
            optimizer.zero_grad(set_to_none=True)
            loss = TF.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()  # minibern reads every step's loss on the host too
    return run


def gemm_operands(net, rng):
    """The float32 GEMM operand pairs of one training step (see the module docstring)."""
    pairs, x_shape, first = [], (BATCH,) + tuple(net.input_shape), True

    def rand(*shape):
        return rng.random(shape, dtype=np.float32)

    for _, layer in net:
        if isinstance(layer, L.Conv2D):
            n, f, oh, ow = layer.output_shape(x_shape)
            _, c, kh, kw = layer.params["W"].shape
            rows, k = n * oh * ow, c * kh * kw
            pairs.append((rand(rows, k), rand(k, f)))            # forward  (L8)
            pairs.append((rand(f, rows), rand(rows, k)))         # weights  (L9)
            if not first:
                pairs.append((rand(rows, f), rand(f, k)))        # input    (L11)
            first = False
        elif isinstance(layer, L.Dense):
            d, m = layer.params["W"].shape
            n = x_shape[0]
            pairs.append((rand(n, d), rand(d, m)))               # forward  (L1)
            pairs.append((rand(d, n), rand(n, m)))               # weights  (L2)
            if not first:
                pairs.append((rand(n, m), rand(m, d)))           # input    (L4)
            first = False
        x_shape = layer.output_shape(x_shape)
    return [(a, b, np.empty((a.shape[0], b.shape[1]), np.float32)) for a, b in pairs]


def floor_runner(spec: Spec, steps: int):
    operands = gemm_operands(spec.build(), np.random.default_rng(0))

    def run():
        for _ in range(steps):
            for a, b, out in operands:
                np.matmul(a, b, out=out)
    return run


def peak_step_bytes(spec: Spec, data: Data) -> int:
    """Peak NumPy bytes traced during one minibern step (after a warm-up step)."""
    run = minibern_runner(spec, data, 1)
    run()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def timed(make_run) -> float:
    run = make_run()
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Measurement and report.
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    spec: Spec
    times: dict = field(default_factory=dict)   # kind -> [seconds per 100 steps, per round]
    peak_bytes: int | None = None

    def median(self, kind):
        values = self.times.get(kind)
        return statistics.median(values) if values else None

    def ratio(self, a, b):
        """Median and min–max of the per-round ratios times[a] / times[b]."""
        if not self.times.get(a) or not self.times.get(b):
            return None
        ratios = [x / y for x, y in zip(self.times[a], self.times[b])]
        return statistics.median(ratios), min(ratios), max(ratios)


def measure(rows, gated_base, data, args, use_torch: bool, memory: bool = True) -> None:
    scale = 100.0 / args.steps
    kinds = {}
    for row in rows:
        kinds[row.spec.label] = ["minibern"] + (["torch"] if use_torch and not row.spec.gates else []) \
            + (["floor"] if not row.spec.gates else [])
    log(f"warm-up ({min(args.steps, 10)} steps per run)")
    for row in rows:
        for kind in kinds[row.spec.label]:
            make = _maker(kind, row.spec, data, min(args.steps, 10))
            timed(make)
    meter = args.meter
    for r in range(args.rounds):
        for row in rows:
            order = kinds[row.spec.label] if r % 2 == 0 else list(reversed(kinds[row.spec.label]))
            for kind in order:
                seconds = timed(_maker(kind, row.spec, data, args.steps)) * scale
                row.times.setdefault(kind, []).append(seconds)
            meter.sample()
        log(f"round {r + 1}/{args.rounds}: " + "  ".join(
            f"{row.spec.label}: " + "/".join(f"{row.times[k][-1]:.3f}" for k in kinds[row.spec.label])
            for row in rows))
    for row in rows:
        if memory and not args.no_memory:
            row.peak_bytes = peak_step_bytes(row.spec, data)
    for row in rows:
        if row.spec.gates:
            base = gated_base.get(row.spec.model)
            if base is not None:
                row.times["ungated"] = base.times["minibern"]


def _maker(kind, spec, data, steps):
    if kind == "minibern":
        return lambda: minibern_runner(spec, data, steps)
    if kind == "torch":
        return lambda: torch_runner(spec, data, steps)
    return lambda: floor_runner(spec, steps)


def _fmt_time(row, kind):
    values = row.times.get(kind)
    if not values:
        return "—"
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def _fmt_ratio(row, a, b):
    ratio = row.ratio(a, b)
    if ratio is None:
        return "—"
    return f"{ratio[0]:.2f}× ({ratio[1]:.2f}–{ratio[2]:.2f})"


def table(rows, markdown: bool) -> str:
    head = ["network", "minibern s/100 steps", "PyTorch s/100 steps", "minibern / PyTorch",
            "GEMM floor s/100 steps", "minibern / floor", "gated / ungated", "peak MiB/step"]
    body = []
    for row in rows:
        peak = "—" if row.peak_bytes is None else f"{row.peak_bytes / 2 ** 20:.1f}"
        body.append([row.spec.label, _fmt_time(row, "minibern"), _fmt_time(row, "torch"),
                     _fmt_ratio(row, "minibern", "torch"), _fmt_time(row, "floor"),
                     _fmt_ratio(row, "minibern", "floor"), _fmt_ratio(row, "minibern", "ungated"),
                     peak])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(cells, widths))
                     for cells in [head] + body)


def machine_lines(args, blas_found, data, meter, use_torch) -> list[str]:
    others = meter.others_cores()
    load = (f"{statistics.median(meter.loadavg):.1f} (median of {len(meter.loadavg)} samples)"
            if meter.loadavg else "unknown")
    lines = [
        f"CPU: {cpu_model()}, nproc = {os.cpu_count()}",
        f"Python {platform.python_version()}, NumPy {np.__version__}, BLAS {blas_found['name']} "
        f"({blas_found['config'] or 'config unknown'}), {blas_found['default_threads']} BLAS threads by default",
        (f"PyTorch {torch.__version__} (CPU); torch.set_num_threads = the BLAS thread count of "
         "each table" if use_torch else "PyTorch: not installed (or --no-torch): minibern only"),
        f"data: {data.source}; {args.steps} steps × batch {BATCH} per run, {args.rounds} rounds",
        f"other processes on the machine while measuring: "
        + (f"{others:.2f} cores busy on average" if others is not None else "unknown")
        + f", 1-min load average {load}",
    ]
    if others is not None and others > 0.2:
        lines.append("**The host was shared while measuring**: other processes used "
                     f"{others:.2f} of the {os.cpu_count()} cores on average, so absolute times "
                     "are inflated and noisy; the paired ratios (same round, alternating order) "
                     "are the more reliable numbers.")
    return lines


def build_rows(args, nets, full: bool, threads: int = 1) -> tuple[list, dict]:
    """The table's rows: the plain networks, and with ``full`` the gated and pruned ones; with
    several ``threads``, each network once more with as many kernel threads (MINIBERN_THREADS:
    the products too split over examples, NumPy's BLAS on one thread)."""
    names = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5-Caffe"}
    rows, gated_base = [], {}
    for net in nets:
        row = Row(Spec(names[net], net))
        rows.append(row)
        gated_base[net] = row
    if threads > 1:
        rows += [Row(Spec(f"{names[net]}, MINIBERN_THREADS={threads}", net,
                          kernel_threads=threads)) for net in nets]
    if not full:
        return rows, gated_base
    if not args.no_gates:
        rows += [Row(Spec(f"{names[net]} gates on", net, gates=True)) for net in nets]
    pick_rng = np.random.default_rng(0)  # which pixels a pruned LeNet-300-100 keeps
    rows += [Row(parse_pruned(text, "lenet300", pick_rng)) for text in args.pruned_lenet300]
    rows += [Row(parse_pruned(text, "lenet5", pick_rng)) for text in args.pruned_lenet5]
    return rows, gated_base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians; default 5)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (default 100)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 3 rounds")
    parser.add_argument("--markdown", action="store_true",
                        help="print the Markdown page (docs/BENCHMARKS.md) instead of a text table")
    parser.add_argument("--nets", default="lenet300,lenet5",
                        help="comma-separated subset of lenet300,lenet5 (default both)")
    parser.add_argument("--no-gates", action="store_true", help="skip the gates-on rows")
    parser.add_argument("--first-epochs", type=int, default=0, metavar="ROUNDS",
                        help="with --markdown: also time whole first epochs, gated against "
                             "un-gated, in ROUNDS alternated rounds (minutes per round)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc step")
    parser.add_argument("--pruned-lenet300", action="append", default=[], metavar="D-H1-H2",
                        help="also time a pruned LeNet-300-100, e.g. 295-157-93 (repeatable)")
    parser.add_argument("--pruned-lenet5", action="append", default=[], metavar="C1-C2-IN-H",
                        help="also time a pruned LeNet-5-Caffe, e.g. 8-17-272-41 (repeatable)")
    parser.add_argument("--threads", default=None, metavar="N[,N...]",
                        help="BLAS and PyTorch threads (default: NumPy's BLAS setting); a list "
                             "such as 2,1 gives one table per count (gated and pruned rows "
                             "only in the first)")
    parser.add_argument("--breakdown-run", action="append", default=[], metavar="RUN@EPOCH",
                        help="with --markdown: also split the gated step of a gated "
                             "LeNet-300-100 run directory as it stood after EPOCH (its widths "
                             "and θ) into its parts, against the un-gated step of the same "
                             "arrays (repeatable)")
    parser.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    args = parser.parse_args(argv)
    try:
        args.breakdown_run = [(Path(text.rsplit("@", 1)[0]), int(text.rsplit("@", 1)[1]))
                              for text in args.breakdown_run]
    except (IndexError, ValueError):
        parser.error(f"--breakdown-run: expected RUN@EPOCH such as "
                     f"experiments/runs/lenet300/gated_seed0@20, got {args.breakdown_run!r}")
    for run, _ in args.breakdown_run:
        if not (run / "history.npz").exists() or not (run / "metrics.json").exists():
            parser.error(f"--breakdown-run: {run} holds no finished gated run (metrics.json "
                         "and history.npz)")
    if args.quick:
        args.steps, args.rounds = 20, 3
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be positive")
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    if not set(nets) <= {"lenet300", "lenet5"}:
        parser.error(f"--nets: unknown network in {args.nets!r}; use lenet300 and/or lenet5")

    B.set_backend("numpy")
    blas_found = blas.info()
    blas_found["default_threads"] = blas_found["threads"]
    try:
        counts = ([int(t) for t in args.threads.split(",")] if args.threads
                  else [blas_found["threads"] or 1])
    except ValueError:
        parser.error(f"--threads: expected counts such as 2 or 2,1, got {args.threads!r}")
    if min(counts) < 1:
        parser.error("--threads: counts must be positive")
    use_torch = torch is not None and not args.no_torch
    if torch is None and not args.no_torch:
        log("PyTorch is not installed: measuring minibern only (pip install torch for the reference)")

    build_rows(args, nets, full=True)  # refuse bad --pruned-* before loading anything
    data = Data(args.steps, args.data)
    args.meter = LoadMeter()
    tables = []
    for position, count in enumerate(counts):
        if args.threads is not None:
            set_blas_threads(count)
        if use_torch:
            torch.set_num_threads(count)
        log(f"{count} thread(s): NumPy's BLAS {blas.info()['threads']}"
            + (f", torch {torch.get_num_threads()}" if use_torch else ""))
        rows, gated_base = build_rows(args, nets, full=position == 0, threads=count)
        measure(rows, gated_base, data, args, use_torch, memory=position == 0)
        tables.append((count, rows))
    lines = machine_lines(args, blas_found, data, args.meter, use_torch)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    command = "python benchmarks/bench_step.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.markdown:
        print(MARKDOWN_HEAD)
        print("\n".join(f"- {line}" for line in lines))
        print(f"- process peak resident set: {peak_rss:.0f} MiB")
        print(f"- command: `{command.strip()}`")
        for count, rows in tables:
            print(f"\n## {count} thread{'s' if count > 1 else ''} (NumPy's BLAS and PyTorch)\n")
            print(table(rows, markdown=True))
        print(MARKDOWN_TAIL)
        if not args.no_gates:
            print_breakdown(nets, data, args)
    else:
        print("\n".join(lines))
        print(f"process peak resident set: {peak_rss:.0f} MiB")
        for count, rows in tables:
            print(f"\n{count} thread(s):")
            print(table(rows, markdown=False))
    return 0


def print_breakdown(nets, data, args) -> None:
    """The page's last section: the parts of the full-width gated step, one BLAS thread
    (``benchmarks/bench_gates.py --breakdown``)."""
    from bench_gates import (breakdown, fused_states, model_ops, print_first_epochs,
                             print_fused_times, run_breakdown, run_ops)
    set_blas_threads(1)
    print("## Where the gated step's time goes (1 thread)\n")
    print("Each part's calls timed inside the same gated steps (Adam, the trainer's default, on "
          "both sides here), the un-gated step of the same network alternated with it; "
          "`python benchmarks/bench_gates.py --breakdown` prints the same tables, and "
          "`--run RUN --run-breakdown --epochs-at E` those of a run's state after epoch E "
          "(its widths and θ; the un-gated step is then that of the same, pruned arrays).")
    for model in nets:
        breakdown(data.mnist_like, model, args.rounds, args.steps)
    for run, epoch in args.breakdown_run:
        run_breakdown(data.mnist_like, run, epoch, args.rounds, args.steps)
    print("\n## How many array calls a gated step makes\n")
    print("The same parts counted in operations on device arrays instead of milliseconds: the "
          "strict backend (`minibern.backend.counting_ops`) counts every ufunc, array function, "
          "array creation, gather, item assignment and copy on a device array — on a GPU each is "
          "(at least) one kernel launch of several microseconds, so for arrays this small the "
          "count, not the arithmetic, sets a GPU step's time. Host work (θ, its averages and "
          "the decision rule live on the host) launches nothing and is not counted here; its "
          "time is in the tables above. LeNet-300-100's tables have a second column: the same "
          "step with `--fused-estimator`, the removal estimate of every gate layer in one pass "
          "(docs/derivations/estimators.md, \"All gate layers in one pass\"). "
          "`python benchmarks/bench_gates.py --ops --ops-run RUN --epochs-at E` prints the same "
          "tables, `--fused` the time table after them.")
    for model in nets:
        model_ops(data.mnist_like, model)
    for run, epoch in args.breakdown_run:
        run_ops(data.mnist_like, run, epoch)
    if "lenet300" in nets:
        print_fused_times(data.mnist_like, fused_states(args.breakdown_run), args.rounds,
                          args.steps)
    if args.first_epochs and data.full is not None:
        print_first_epochs(data.full, nets, args.first_epochs)


MARKDOWN_HEAD = """# Benchmarks: seconds per 100 training steps

Generated by `benchmarks/bench_step.py`; regenerate this page with one command (it runs for
about twenty minutes; the pruned rows are the mean kept architectures of docs/RESULTS.md):

    python benchmarks/bench_step.py --markdown --threads 1,2 --pruned-lenet300 197-127-80 --pruned-lenet5 16-33-528-95 --first-epochs 3 --breakdown-run experiments/runs/lenet300/gated_seed0@3 --breakdown-run experiments/runs/lenet300/gated_seed0@20 --breakdown-run experiments/runs/timing/gated_at_one_seed0@20 > docs/BENCHMARKS.md

See `benchmarks/README.md` for what is measured and for the kernels' before/after history.

One step: a batch of 100 MNIST images, forward, softmax cross-entropy, backward, momentum-SGD
update, float32. Times are medians over the rounds with min–max in parentheses; ratios are
medians of per-round ratios (each round runs minibern and PyTorch back to back in the same
process, alternating which goes first). The GEMM floor is minibern's matrix products alone
(forward, weight and input gradients — not the first layer's input gradient, which no step
needs) on the same shapes. "gated / ungated" compares the gated step (Bernoulli gates, default
`gate_config_for(model)`: removal estimator, θ updates) with the plain one of the same run, at full width
with every gate still movable (the dearest moment: the gated step gets cheaper as gates freeze
and units leave the arrays). Both use momentum SGD, whose update is cheap; the gated step
against the step of Adam, the trainer's default, is measured by `benchmarks/bench_gates.py
--compare` and tabled in `docs/derivations/estimators.md` ("Measured"). Peak MiB/step:
NumPy allocations traced during one step (`tracemalloc`), activations kept for backward
included. Pruned rows are built directly as the smaller networks (LeNet-300-100 `D-H1-H2`:
D kept input pixels, a `SelectFeatures` in front; LeNet-5 `C1-C2-IN-H`).

Read the 1-thread table first (it also has the gated and pruned rows). With 2 threads the
rounds vary more, even on a quiet host. The plain rows leave the second core to OpenBLAS,
which splits each product over its two threads (poorly, for products this small), while
minibern's element-wise kernels run on one core and PyTorch spreads everything over both. The
rows `MINIBERN_THREADS=2` use minibern's own kernel threads (`minibern/kernels/threads.py`): im2col,
col2im, max pooling *and the matrix products* of every Dense and Conv2D layer split over
blocks of examples (a weight gradient over blocks of its columns), with NumPy's BLAS set to
one thread, so each thread runs its whole share of a layer on its own core
(`benchmarks/README.md`, "Kernel threads"). Their GEMM floor is still the products on the BLAS's
threads of the table. The gate estimators' own products never split.

**GPU (CuPy): unmeasured.** No GPU has been available on this project's machines so far, so
every table here is CPU only: there is no CuPy column, no comparison with PyTorch on CUDA and no
same-seed CuPy-against-CPU run yet. What the CPU can check is checked: the suite runs under the
`strict` backend, which refuses host arrays in device code and counts the transfers a GPU would
make (a gated training step: 4 copies to the device, 1 to the host, 4 scalar pulls, whatever the
widths and the gates visited; `python benchmarks/bench_gates.py --transfers`) and the
operations on device arrays, each a kernel launch on a GPU, of every part of a gated step (the
section "How many array calls a gated step makes").

## Machine
"""

MARKDOWN_TAIL = """
"—": no such measurement (PyTorch has no Bernoulli gates; the floor is given for the plain
networks; peak memory only in the first table).
"""


if __name__ == "__main__":
    sys.exit(main())
