"""``python -m minibern train``: train a model on MNIST and write a run directory.

The run directory (``--out``) receives ``metrics.json``, ``history.npz``, ``checkpoint.npz``
(every epoch, atomically) and ``train.log``. ``--resume`` continues a killed run from its last
checkpoint; on the CPU backends, with the same thread counts, the result is bit-identical to an
uninterrupted run.

With no other flag a run is the recipe docs/RESULTS.md reports for its model
(:data:`~minibern.cli.defaults.RECIPES`: its epochs and learning-rate decay), with or without
``--gates``; a gated run records θ several times per epoch
(:data:`~minibern.cli.defaults.SNAPSHOTS_PER_EPOCH`). ``--resume`` continues with the
settings the checkpoint recorded (:mod:`minibern.cli.defaults`).
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
from pathlib import Path

from minibern import backend as B
from minibern.bernoulli.config import (ESTIMATORS, MODEL_VISITS, GateConfig, gate_config_for,
                                       gate_settings)
from minibern.bernoulli.pruning import PruningError
from minibern.bernoulli.run import build_run
from minibern.cli.defaults import (SNAPSHOTS_PER_EPOCH, TRAIN_OPTIONS, fill_recipe, given_options,
                                   recipe_help, take_recorded)
from minibern.kernels import blas
from minibern.kernels import threads as T
from minibern.models import MODEL_NAMES
from minibern.training.lock import RunLocked, run_lock
from minibern.training.config import OPTIMIZERS, TrainConfig
from minibern.training.resume import check_out_path, check_run_dir
from minibern.training.trainer import TrainingDiverged, write_run_files


def build_parser() -> argparse.ArgumentParser:
    """The command line: the run's own options, then the gates' (defaults: the model's recipe,
    :data:`~minibern.cli.defaults.RECIPES`, then
    :class:`~minibern.training.config.TrainConfig` and
    :class:`~minibern.bernoulli.config.GateConfig`; a resumed run's: its checkpoint's,
    :mod:`minibern.cli.defaults`)."""
    parser = argparse.ArgumentParser(prog="python -m minibern train",
                                     description="Train a network on MNIST and write a run directory.")
    _add_run_options(parser)
    _add_gate_options(parser.add_argument_group(
        "Bernoulli gates (docs/derivations/bernoulli_objective.md)"))
    return parser


def _add_run_options(parser) -> None:
    """The network, the data, the optimiser and where the run goes."""
    parser.add_argument("--model", choices=MODEL_NAMES, required=True)
    parser.add_argument("--epochs", type=int, default=argparse.SUPPRESS, help=recipe_help("epochs"))
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--backend", choices=B.BACKEND_NAMES, default=None,
                        help="array backend (default: $MINIBERN_BACKEND, else numpy)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads for minibern's kernels: im2col, col2im, pooling and the "
                        "layers' matrix products, split over blocks of examples (with 2 or more, "
                        "NumPy's BLAS runs on one thread); default: $MINIBERN_THREADS, else 1. "
                        "Pays for LeNet-5 (docs/USAGE.md, 'CPU threads'). The seed and the count fix a run's "
                        "numbers; another count gives a slightly different run")
    parser.add_argument("--data", default=None, help="MNIST folder (default: $MINIBERN_DATA, "
                        "else data/mnist in the checkout or the user cache; fetched if missing)")
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--width-mult", type=float, default=TrainConfig.width_mult)
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/checkpoint.npz with the settings it recorded "
                        "(an option given now must match them; only --epochs may grow)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=TrainConfig.optimizer)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--lr-decay", type=_lr_decay, default=argparse.SUPPRESS, metavar="TAU",
                        help="decay the learning rate per epoch e as lr/(1 + e/TAU); 0: a "
                        "constant learning rate; " + recipe_help("lr_decay"))
    parser.add_argument("--momentum", type=float, default=TrainConfig.momentum)
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    parser.add_argument("--init", choices=("he", "glorot"), default=TrainConfig.init)
    parser.add_argument("--init-scale", type=float, default=TrainConfig.init_scale)
    parser.add_argument("--train-subset", type=int, default=TrainConfig.train_subset,
                        help="train on the first N of the 55,000 training images (quick runs)")
    parser.add_argument("--quiet", action="store_true", help="log to train.log only")


def _add_gate_options(gates) -> None:
    """``--gates`` and every :class:`~minibern.bernoulli.config.GateConfig` setting."""
    gates.add_argument("--gates", action="store_true", help="gate units/filters/inputs and learn θ")
    gates.add_argument("--estimator", choices=ESTIMATORS, default=GateConfig.estimator,
                       help="estimator of Δ_i (docs/derivations/estimators.md)")
    gates.add_argument("--fused-estimator", action="store_true",
                       help="the removal estimator of every gate layer in one pass: fewer array "
                            "calls (GPU kernel launches), other rounding; LeNet-300-100 only")
    gates.add_argument("--kappa", type=float, default=GateConfig.kappa,
                       help="flattening strength κ: cost of keeping one unit (or one parameter "
                            "with --kappa-per-param / --kappa-expected-params: then pass a "
                            "per-parameter price such as 0.03; the default 5.5 is per unit)")
    gates.add_argument("--kappa-per-param", action="store_true",
                       help="κ per parameter of a unit instead of per unit")
    gates.add_argument("--kappa-expected-params", action="store_true",
                       help="κ per expected parameter: a unit costs κ × its incoming, bias and "
                            "outgoing weights to the units expected to be kept, (B14′)")
    gates.add_argument("--theta-lr", type=float, default=GateConfig.theta_lr, help="η₀ of θ's SGD")
    gates.add_argument("--theta-decay", type=float, default=GateConfig.theta_decay,
                       help="τ in epochs: η_t = η₀/(1 + t/τ)")
    gates.add_argument("--theta-warmup", type=float, default=GateConfig.theta_warmup,
                       help="t_w in epochs: the θ step ramps up linearly over the first t_w "
                            "epochs, (B21′) (0: no ramp)")
    gates.add_argument("--theta-bound-epochs", type=float, default=GateConfig.theta_bound_epochs,
                       metavar="E", help="keep θ inside [b, 1 − b] until epoch E, so that no "
                       "estimate at near-random weights puts a gate on 0 or 1 (0: off)")
    gates.add_argument("--theta-bound", type=float, default=GateConfig.theta_bound, metavar="B",
                       help="b of --theta-bound-epochs")
    gates.add_argument("--theta-init", type=float, default=GateConfig.theta_init, help="θ₀ in [0, 1]")
    gates.add_argument("--no-hyperprior", action="store_true",
                       help="ablation: fixed γ = 0.5 (KL term) instead of the flattening hyper-prior")
    lenet5_visits = MODEL_VISITS["lenet5"]
    gates.add_argument("--first-subset", type=int, default=argparse.SUPPRESS,
                       help="gates visited per step in the first gate layer (default: "
                            f"{GateConfig.first_subset}; LeNet-5 {lenet5_visits['first_subset']})")
    gates.add_argument("--subset", type=int, default=argparse.SUPPRESS,
                       help="gates visited per step in the other gate layers but the last "
                            f"(removal estimator; default {GateConfig.subset}; LeNet-5 "
                            f"{lenet5_visits['subset']})")
    gates.add_argument("--prune-patience", type=int, default=GateConfig.prune_patience,
                       help="visits θ must stay exactly 0 before its unit is removed from the arrays "
                            "(a frozen gate counts one every step)")
    gates.add_argument("--snapshot-every", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="also record θ of every gate every N steps, besides at epoch ends "
                            "(for `python -m minibern plot`'s θ trajectories; 0: at epoch ends "
                            f"only; default: {SNAPSHOTS_PER_EPOCH} times per epoch)")
    gates.add_argument("--no-prune", action="store_true",
                       help="keep units at θ = 0 in the arrays (masked); report which would have "
                            "been removed and whether they came back")
    gates.add_argument("--average-visits", type=int, default=GateConfig.average_visits,
                       help="W: θ steps on the average of a gate's last ~2W estimates, (C3) in "
                            "docs/derivations/convergence.md (1: the last estimate alone)")
    gates.add_argument("--decide-alpha", type=float, default=GateConfig.decide_alpha,
                       help="decision rule: freeze a gate at 0 (and remove it) once a "
                            "time-uniform level-α sign test agrees, (C8)–(C10) (0: no rule)")
    gates.add_argument("--decide-min-visits", type=int, default=GateConfig.decide_min_visits,
                       help="visits before the decision rule may certify a gate")
    gates.add_argument("--decide-at-one", action="store_true",
                       help="let the decision rule also certify (freeze) gates at θ = 1, (C10′)")
    gates.add_argument("--no-audit", action="store_true",
                       help="skip the end-of-run check, on the whole training set, of the decisions "
                            "of the units still in the arrays, (C11)–(C12)")


def _lr_decay(text: str) -> float | None:
    """``--lr-decay``: τ in epochs, 0 for none (TrainConfig's None)."""
    value = float(text)
    return None if value == 0 else value


def config_from_args(args) -> TrainConfig:
    """The run's TrainConfig (``args`` completed by :func:`complete_args`)."""
    return TrainConfig(model=args.model, **{field: getattr(args, field) for field in TRAIN_OPTIONS})


def _fail(log_file, error, status: int = 1) -> int:
    log_file.write(f"error: {error}\n")
    print(f"error: {error}", file=sys.stderr)
    return status


def gate_config_from_args(args) -> GateConfig:
    """The run's GateConfig: the model's visits per step unless given, then every flag."""
    visits = {name: getattr(args, name) for name in ("subset", "first_subset")
              if hasattr(args, name)}
    return gate_config_for(
        args.model, **visits, estimator=args.estimator, kappa=args.kappa,
        kappa_per_param=args.kappa_per_param, kappa_expected_params=args.kappa_expected_params,
        theta_lr=args.theta_lr, theta_decay=args.theta_decay, theta_warmup=args.theta_warmup,
        theta_init=args.theta_init, hyperprior=not args.no_hyperprior, prune=not args.no_prune,
        prune_patience=args.prune_patience,
        snapshot_every=getattr(args, "snapshot_every", GateConfig.snapshot_every),
        average_visits=args.average_visits, decide_alpha=args.decide_alpha,
        decide_min_visits=args.decide_min_visits, decide_at_one=args.decide_at_one,
        audit=not args.no_audit, theta_bound=args.theta_bound,
        theta_bound_epochs=args.theta_bound_epochs, fused_estimator=args.fused_estimator)


class Terminated(Exception):
    """SIGTERM arrived (a runner or the system stopping the run); see :func:`_on_sigterm`."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _gate_group(parser):
    return next(g for g in parser._action_groups if g.title.startswith("Bernoulli gates"))


def complete_args(parser, args, argv) -> None:
    """Fill in the options ``argv`` left out (:mod:`minibern.cli.defaults`): a resumed run's
    from its checkpoint, a new run's from its model's recipe; ``args.snapshots_per_epoch`` is
    for :func:`~minibern.bernoulli.run.build_run` (0 where ``--snapshot-every`` or the
    checkpoint sets the cadence)."""
    given = given_options(build_parser, argv)
    if args.resume:
        try:
            take_recorded(args, given, [action.dest for action in _gate_group(parser)._group_actions
                                        if action.dest != "gates"])
        except ValueError as error:  # an unreadable checkpoint
            parser.error(str(error))
    fill_recipe(args)
    args.snapshots_per_epoch = 0 if args.resume or hasattr(args, "snapshot_every") \
        else SNAPSHOTS_PER_EPOCH


def _check_gate_flags(parser, args) -> None:
    """A gate option given without --gates would silently do nothing: refuse it."""
    if args.gates:
        return
    group = _gate_group(parser)
    given = [action.option_strings[0] for action in group._group_actions
             if action.dest != "gates" and hasattr(args, action.dest)
             and getattr(args, action.dest) != action.default]
    if given:
        parser.error(f"{', '.join(given)} set(s) the Bernoulli gates, but this run has none: add "
                     "--gates, or leave the option out")


def _open_run(parser, args, config, gate_config):
    """Select the backend and threads, lock ``--out`` and check it may receive this run; returns
    ``(out, lock, notes, created)`` with the lock held. A problem is a usage error (exit 2)."""
    out, lock, created = Path(args.out), None, False
    try:
        if args.backend:
            B.set_backend(args.backend)
        B.get_backend()  # $MINIBERN_BACKEND too: an unusable backend is a usage error
        if args.threads is not None:
            T.set_threads(args.threads)
        T.get_threads()  # $MINIBERN_THREADS too: a bad count is a usage error
        check_out_path(args.out)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        notes = []
        lock = run_lock(out, notes.append)
        lock.__enter__()  # before the check: two runs started at once cannot both pass it
        check_run_dir(out, args.resume, config, [gate_settings(gate_config)] if gate_config else [])
        return out, lock, notes, created
    except (ValueError, RuntimeError, OSError) as error:  # a backend, an existing run, a lock,
        # a resume mismatch, an unwritable folder
        if lock is not None:
            lock.__exit__(None, None, None)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # a mistyped --out is not left behind
        if isinstance(error, OSError) and not isinstance(error, RunLocked):
            parser.error(f"cannot write the run directory {out} ({error}); choose another --out")
        parser.error(str(error))


def main(argv=None) -> int:
    """Run ``python -m minibern train``; returns the exit status: 0 done, 1 a failure during
    the run, 2 a bad command line or a run directory in use, 130 interrupted, 143 terminated
    (SIGTERM). Every failure ends in one message naming the problem and the fix, never a
    traceback (an unexpected one goes to train.log). ``--out`` is locked for the run's life
    (:mod:`minibern.training.lock`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_gate_flags(parser, args)
    complete_args(parser, args, argv)
    try:  # every setting is checked in one place: TrainConfig.validate, GateConfig.validate
        config = config_from_args(args).validate()
        gate_config = gate_config_from_args(args).validate() if args.gates else None
    except ValueError as error:
        parser.error(f"{error} (see --help)")
    out, lock, notes, _ = _open_run(parser, args, config, gate_config)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        log_file = open(out / "train.log", "a", encoding="utf-8")
    except OSError as error:
        lock.__exit__(None, None, None)
        parser.error(f"cannot write the run directory {out} ({error}); choose another --out")

    def log(message: str) -> None:
        log_file.write(message + "\n")
        log_file.flush()
        if not args.quiet:
            print(message, flush=True)

    try:
        for note in notes:
            log(note)
        return _run_guarded(args, config, gate_config, out, log, log_file)
    finally:
        signal.signal(signal.SIGTERM, previous)
        log_file.close()
        lock.__exit__(None, None, None)


def _run_guarded(args, config, gate_config, out, log, log_file) -> int:
    """:func:`_train`, every exception turned into one message and an exit status."""
    kept = "the last checkpoint, if any, is kept"
    try:
        return _train(args, config, gate_config, out, log, log_file)
    except (TrainingDiverged, PruningError, ValueError) as error:  # divergence, a disconnected
        # network, data or checkpoint problems
        return _fail(log_file, error)
    except MemoryError as error:
        if error.args:  # a message of our own (reading MNIST)
            return _fail(log_file, error)
        return _fail(log_file, f"out of memory (backend {B.get_backend().name}); lower "
                     f"--batch-size (now {config.batch_size}) or --width-mult (now "
                     f"{config.width_mult}); {kept}")
    except KeyboardInterrupt:
        return _fail(log_file, f"interrupted; {kept}: run the same command with --resume to "
                     "continue", status=130)
    except Terminated:
        return _fail(log_file, f"terminated (SIGTERM); {kept}: run the same command with "
                     "--resume to continue", status=143)
    except (OSError, RuntimeError) as error:  # the file system (full, read-only), the device
        return _fail(log_file, f"{type(error).__name__}: {error}; {kept}: fix the cause and run "
                     "the same command with --resume")
    except Exception as error:  # a bug: keep its traceback in train.log, not on the terminal
        log_file.write(traceback.format_exc())
        return _fail(log_file, f"unexpected {type(error).__name__}: {error}; this is a bug in "
                     f"minibern — please report it with the traceback in {out / 'train.log'}")


def _train(args, config, gate_config, out, log, log_file) -> int:
    """The run itself (see :func:`main`, which turns its exceptions into messages)."""
    from minibern.data import load_mnist

    try:
        data = load_mnist(args.data)
    except MemoryError:
        where = args.data or "the default folder"
        raise MemoryError(f"out of memory while reading MNIST from {where}; check that its "
                          "files are MNIST's") from None
    trainer = build_run(config, data, gate_config, log=log,
                        snapshots_per_epoch=args.snapshots_per_epoch)
    net = trainer.net
    gate_config = trainer.hooks[-1].config if gate_config else None  # with its snapshot cadence
    log(f"train {config.model} (width x{config.width_mult}) on {trainer.n_train} images, "
        f"backend {B.get_backend().name}, seed {config.seed}, {config.epochs} epochs, "
        f"{T.get_threads()} kernel thread(s), BLAS threads {blas.get_threads() or 'unknown'}"
        + (f", gates: {gate_config}" if gate_config else ""))
    metrics = trainer.fit(out, resume=args.resume)
    try:  # model.npz: the deterministic network (tutorial 10 runs it)
        from minibern.bernoulli.export import export_and_score
        metrics["export_test_error"] = export_and_score(net, out / "model.npz", data.test_images,
                                                        data.test_labels)
    except ValueError as error:  # e.g. a gate that kept no unit
        # A model.npz of the epochs before a resume would sit beside metrics.json of a network
        # it is not: remove it, and say so in metrics.json and the exit status.
        stale = (out / "model.npz").exists()
        (out / "model.npz").unlink(missing_ok=True)
        metrics["export_error"] = str(error)
        write_run_files(out, metrics)
        return _fail(log_file, f"model.npz not written: {error}"
                     + ("; the model.npz of the earlier epochs was removed" if stale else "")
                     + f"; {out / 'metrics.json'} holds the run's results")
    write_run_files(out, metrics)
    log(f"done: test error {100 * metrics['test_error']:.2f}%  val error "
        f"{100 * metrics['val_error']:.2f}%  architecture {metrics['architecture']}  "
        f"params {metrics['params']}  mean epoch {sum(metrics['epoch_seconds']) / len(metrics['epoch_seconds']):.2f} s")
    return 0
