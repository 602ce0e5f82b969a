"""What every tutorial shares: its four options and where its figures go.

Kept beside the tutorials, not in the package: it is glue for these scripts (each imports it as
``_common``, which Python finds because a script's own folder is on ``sys.path``), and the
package's API stays free of script concerns. Tutorial 10 does not use it: it must run with
NumPy alone.

``tutorial_args(__doc__, quick=..., out=...)`` parses ``--backend --seed --quick --out`` (plus any
options a tutorial adds through ``extra``), selects the array backend, creates ``--out`` and
returns the namespace; ``mnist_options`` is the ``extra`` of the tutorials that read MNIST, and
``training_tutorial`` also loads it and sets up the run. ``gated_run`` trains a gated network the way tutorial 6 does step by
step, for the tutorials that build on it (7, 8, 11). Run inside a notebook (the ``# %%`` cells opened in Jupyter or an editor),
the kernel's own command line is ignored and the defaults are used.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import minibern
from minibern.cli.__main__ import describe_failure
from minibern.plots import pyplot, save_figure  # noqa: F401 (pyplot re-exported)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def save(fig, path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (:func:`minibern.plots.save_figure`) and return the path;
    run as a notebook, the figure is also shown inline under its cell."""
    if _in_notebook():
        fig.tight_layout()
        _display(fig)
    return save_figure(fig, path)


def show(paths) -> list[Path]:
    """Return ``paths``, the PNGs a plotting call saved (e.g. :func:`minibern.plots.plot_run`);
    run as a notebook, also show each of them inline."""
    paths = [Path(p) for p in paths]
    if _in_notebook():
        for path in paths:
            _display(_png(path))
    return paths


def _display(shown) -> None:
    from IPython.display import display

    display(shown)


def _png(path):
    from IPython.display import Image

    return Image(filename=str(path))


def _report_failure(kind, error, trace) -> None:
    """``sys.excepthook`` of a tutorial run as a script: the CLI's one message on stderr
    (:func:`minibern.cli.__main__.describe_failure`) instead of a traceback; Python then exits
    with status 1 (interrupted: by the signal). A failed ``assert`` of the tutorial itself is
    one of its checks catching a difference (e.g. after an exercise's change), named as such.
    ``MINIBERN_DEBUG=1`` shows the traceback."""
    if os.environ.get("MINIBERN_DEBUG") or not isinstance(error, BaseException):
        sys.__excepthook__(kind, error, trace)
        return
    script = Path(sys.argv[0]).name
    if isinstance(error, AssertionError) and _raised_in(trace, Path(sys.argv[0])):
        line = _last_line_in(trace, Path(sys.argv[0]))
        print(f"error: a check of {script} failed (line {line}){': ' + str(error) if error.args else ''}"
              "; if you changed the code for an exercise, this is the check catching the change "
              "(MINIBERN_DEBUG=1 shows the traceback)", file=sys.stderr, flush=True)
        return
    message, _ = describe_failure(error, script)
    print(f"error: {message}", file=sys.stderr, flush=True)


def _frames(trace):
    while trace is not None:
        yield trace
        trace = trace.tb_next


def _raised_in(trace, script: Path) -> bool:
    """Whether the innermost frame of ``trace`` is in ``script`` (an assert the tutorial wrote)."""
    frames = list(_frames(trace))
    return bool(frames) and Path(frames[-1].tb_frame.f_code.co_filename).resolve() == script.resolve()


def _last_line_in(trace, script: Path) -> int:
    return [f.tb_lineno for f in _frames(trace)
            if Path(f.tb_frame.f_code.co_filename).resolve() == script.resolve()][-1]


def _check_args(parser, args) -> None:
    """The options every tutorial shares, and the environment they read, checked up front: a
    bad one is a usage error (exit 2) naming it."""
    from minibern.kernels import threads

    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    if getattr(args, "epochs", 1) < 1:
        parser.error(f"--epochs must be a positive integer, got {args.epochs}")
    if not str(args.out).strip() or Path(args.out).is_file():
        parser.error(f"--out {args.out!r} is not a folder; choose a folder for the figures")
    try:
        if args.backend:
            minibern.set_backend(args.backend)
        minibern.backend.get_backend()  # $MINIBERN_BACKEND too
        threads.get_threads()  # $MINIBERN_THREADS
    except (ValueError, RuntimeError) as error:  # no CuPy or no GPU, a bad variable: say so
        parser.error(str(error))


def tutorial_args(doc: str, *, quick: str, out: str, extra=None, argv=None):
    """Parse the tutorial's options; ``quick`` says what ``--quick`` shortens, ``out`` is the
    default output folder, ``extra(parser)`` may add options. Returns the argparse namespace
    with ``out`` as a created :class:`~pathlib.Path`. Outside a notebook, a failure later in
    the script ends in the CLI's one message instead of a traceback (:func:`_report_failure`)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("numpy", "cupy", "strict"), default=None,
                        help="array backend (default: $MINIBERN_BACKEND, else numpy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", default=out, help=f"folder for figures and files (default {out})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args([] if argv is None and _in_notebook() else argv)
    if not _in_notebook():
        sys.excepthook = _report_failure
    _check_args(parser, args)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args



def mnist_options(epochs=None, more=None):
    """An ``extra`` for :func:`tutorial_args`: ``--data`` (the MNIST folder), with ``epochs``
    also ``--epochs`` (that default), and whatever ``more(parser)`` adds."""
    def add(parser):
        if epochs is not None:
            parser.add_argument("--epochs", type=int, default=epochs)
        parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA)")
        if more is not None:
            more(parser)
    return add


def training_tutorial(doc, *, out, model, quick_epochs, quick_subset, epochs=None, more=None):
    """:func:`tutorial_args` (with ``--data``, ``--epochs`` unless ``epochs`` is fixed, and what
    ``more(parser)`` adds), MNIST loaded, and the run's settings with tutorial 6's learning rate
    1e-3/(1 + epoch/5): under ``--quick`` ``quick_epochs`` epochs on the first ``quick_subset``
    training images at half the widths, else ``epochs`` (default ``--epochs``, 20) on all of them
    at full width. Returns ``(args, data, width_mult, TrainConfig)``."""
    from minibern.data import load_mnist
    from minibern.training.trainer import TrainConfig

    quick = f"{quick_epochs} epochs on {quick_subset:,} images, half the widths"
    args = tutorial_args(doc, quick=quick, out=out,
                         extra=mnist_options(None if epochs else 20, more))
    data = load_mnist(args.data)  # host arrays; the last 5,000 training images validate
    width = 0.5 if args.quick else 1.0
    config = TrainConfig(model=model, epochs=quick_epochs if args.quick else epochs or args.epochs,
                         seed=args.seed, width_mult=width,
                         train_subset=quick_subset if args.quick else None, lr_decay=5.0)
    return args, data, width, config


def rule_share(metrics) -> str:
    """How many gates the decision rule certified, so a quoted decided share says whether a rule
    helped make it (docs/derivations/convergence.md (C10); the figures without the rule, over
    seeds, are the ``gated_no_rule`` rows of docs/RESULTS.md)."""
    decisions = metrics.get("decisions") or {}
    if not decisions.get("alpha"):
        return "no decision rule"
    return (f"{100 * decisions['share_by_rule']:.1f}% of all gates certified at 0 by the decision "
            "rule, the rest by the θ step alone")


def gated_run(data, config, gate_config, out=None, *, net=None, hooks=(), snapshots_per_epoch=5,
              log=print):
    """Tutorial 6's steps 9–10 in one call, through the package's one way to build a run
    (:func:`minibern.bernoulli.run.build_run`): the gated network of ``config`` (or ``net``, drawn
    by :func:`~minibern.bernoulli.run.build_network`), θ recorded ``snapshots_per_epoch`` times
    per epoch, a :class:`~minibern.bernoulli.hook.GateTrainer` after ``hooks``; trained, and
    with ``out`` the run directory written (metrics.json, history.npz, checkpoint.npz).
    Returns ``(metrics, trainer)``."""
    from minibern.bernoulli.run import build_run
    from minibern.training.trainer import write_run_files

    trainer = build_run(config, data, gate_config, net=net, hooks=hooks, log=log,
                        snapshots_per_epoch=snapshots_per_epoch)
    metrics = trainer.fit(out)
    if out is not None:
        write_run_files(out, metrics)
    return metrics, trainer
