"""When a run may start or resume in a run directory: the settings a checkpoint must share.

A new run needs a folder without a run's files; a resumed one a ``checkpoint.npz`` whose
configuration, hook settings (the gates) and thread counts match this run's, field by field
(:func:`resume_problems`). Nothing is written before these checks pass.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from minibern.kernels import blas
from minibern.kernels import threads as T
from minibern.training import checkpoint as ckpt
from minibern.training.config import TrainConfig
from minibern.training.meta import check_meta


#: TrainConfig fields a resumed run may change: more epochs (the loop continues), and the
#: evaluation batch size (it changes no result).
RESUME_MAY_CHANGE = ("epochs", "eval_batch_size")


#: Settings a hook still records, at the value that turned their removed mode off, but no longer
#: offers: ``{(section, key): why a checkpoint with another value cannot resume}``, filled by
#: the hooks (:data:`minibern.bernoulli.config.RETIRED`).
RETIRED_SETTINGS: dict = {}


#: Checkpoint meta key of :func:`thread_counts`: the host's execution settings that fix a run's
#: bits besides its configuration.
THREADS_KEY = "threads"


def thread_counts() -> dict:
    """The thread counts that fix a run's numbers on the CPU: minibern's kernel threads
    (:mod:`minibern.kernels.threads`) and NumPy's BLAS threads (:mod:`minibern.kernels.blas`; None if unknown)."""
    return {"kernel_threads": T.get_threads(), "blas_threads": blas.get_threads()}


def _thread_problems(meta: dict, threads: dict) -> list[str]:
    """One line per thread count that differs from the checkpoint's (none if it predates the
    record: see :func:`resume_problems`)."""
    saved = meta.get(THREADS_KEY)
    if saved is None:
        return []
    fixes = {"kernel_threads": "--threads {} (or MINIBERN_THREADS={})",
             "blas_threads": "OMP_NUM_THREADS={} and OPENBLAS_NUM_THREADS={}"}
    return [f"{key.replace('_', ' ')}: {saved.get(key)!r} in the checkpoint, {value!r} now "
            f"(set {fixes[key].format(saved.get(key), saved.get(key))})"
            for key, value in threads.items() if saved.get(key) != value]


def _merged(hook_settings) -> dict:
    merged = {}
    for settings in hook_settings:
        merged.update(settings)
    return merged


def resume_problems(meta: dict, config: TrainConfig, hook_settings: list,
                    threads: dict | None = None) -> list[str]:
    """What stops a run with ``config`` and hooks' ``hook_settings`` (each a
    :meth:`~minibern.training.trainer.Hook.settings` dict) from resuming the checkpoint whose JSON meta is ``meta``.

    Every TrainConfig field must be the checkpoint's but those in :data:`RESUME_MAY_CHANGE`;
    ``epochs`` may not fall below the epochs already trained; the hooks' settings (the Bernoulli
    gates and every gate setting) must match exactly, except that a setting the checkpoint
    predates (added to the code later) counts as off: it matches while it is off now (False,
    0 or None), which is how every new setting is introduced; likewise a TrainConfig field the
    checkpoint predates matches while it has its default. The thread counts (``threads``,
    default :func:`thread_counts` now) must be the checkpoint's, unless it predates their record
    (then they are unknown and accepted; :func:`~minibern.training.run_state.load` says so in the log).
    Returns one line per difference, empty when the run may resume.
    """
    saved = meta["config"]
    defaults = asdict(TrainConfig())
    problems = [f"{key}: {saved[key]!r} in the checkpoint, {value!r} now" if key in saved else
                f"{key}: not recorded in the checkpoint (written before it existed), so only "
                f"its default {defaults[key]!r} may resume it, {value!r} now"
                for key, value in asdict(config).items()
                if key not in RESUME_MAY_CHANGE and saved.get(key, defaults[key]) != value]
    problems += _thread_problems(meta, thread_counts() if threads is None else threads)
    done = int(meta.get("epoch", 0))
    if config.epochs < done:
        problems.append(f"epochs: the checkpoint has trained {done} epochs, {config.epochs} "
                        f"asked for now (pass --epochs {done} or more)")
    before = meta.get("hook_settings")
    if before is None:  # checkpoints written before hook settings were recorded
        before = [{"gates": hook["config"]} for hook in meta.get("hooks", []) if "config" in hook]
    before, now = _merged(before), _merged(hook_settings)
    for section in sorted(set(before) | set(now)):
        if section not in now:
            problems.append(f"the checkpoint was trained with --{section}, this run is without")
        elif section not in before:
            problems.append(f"the checkpoint was trained without --{section}, this run is with")
        else:
            problems += [f"{section} {key}: {before[section].get(key)!r} in the checkpoint, "
                         f"{value!r} now{RETIRED_SETTINGS.get((section, key), '')}"
                         for key, value in now[section].items()
                         if before[section].get(key) != value
                         and not (key not in before[section] and not value)]
    return problems


def check_resume(path, meta: dict, config: TrainConfig, hook_settings: list) -> None:
    """Raise CheckpointError listing every :func:`resume_problems` of checkpoint ``path``
    (first :func:`~minibern.training.meta.check_meta`: a damaged meta names what is wrong)."""
    check_meta(path, meta)
    problems = resume_problems(meta, config, hook_settings)
    if problems:
        raise ckpt.CheckpointError(
            f"cannot resume {path}: its settings differ from this run's:\n  "
            + "\n  ".join(problems)
            + "\nresume with the checkpoint's settings (only --epochs may grow), or choose "
            "another --out for a new run; nothing was changed")


#: The files of a run directory that a new run would overwrite (train.log is only appended to).
RUN_FILES = ("checkpoint.npz", "metrics.json", "history.npz", "model.npz")


def check_out_path(out) -> Path:
    """``out`` as a Path; ValueError if it is empty or an existing file."""
    if not str(out).strip():
        raise ValueError(f"--out {str(out)!r} names no run directory; give a folder for the run, "
                         "e.g. --out runs/lenet300")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose another --out")
    return out


def check_run_dir(out, resume: bool, config: TrainConfig, hook_settings: list) -> None:
    """Raise ValueError unless run directory ``out`` may receive this run, before anything is
    written: a new run needs a folder without :data:`RUN_FILES`; ``resume`` needs a
    ``checkpoint.npz`` whose settings match (:func:`check_resume`)."""
    out = check_out_path(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not resume:
        if found:
            raise ValueError(f"{out} already holds a run ({', '.join(found)}); pass --resume to "
                             "continue it, or choose another --out; nothing was changed")
        return
    if "checkpoint.npz" not in found:
        held = f" (it holds {', '.join(found)}, whose run cannot be continued)" if found else ""
        raise ValueError(f"--resume: {out} has no checkpoint.npz to resume from{held}; start a "
                         "new run without --resume in a new --out; nothing was changed")
    path = out / "checkpoint.npz"
    check_resume(path, ckpt.read_npz(path)[1], config, hook_settings)
