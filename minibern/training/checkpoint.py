"""Atomic run files: checkpoints (``.npz``), histories and JSON, written so nothing is ever lost.

Every file is written to a temporary name in the same folder and then renamed over the target
(``os.replace``, atomic on POSIX and Windows): a run killed at any instant leaves either the
previous complete file or the new complete file, never a partial one.

A checkpoint is a NumPy ``.npz`` archive of host arrays plus one entry ``__meta__`` holding a
JSON document (epoch, configuration, RNG state, ...), so it opens with nothing but NumPy.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from minibern.backend import host as np

META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or not one of ours."""


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_temporaries(folder, names) -> list[Path]:
    """Delete the temporaries ``.NAME.XXXX.tmp`` that :func:`_atomic_write` leaves when a run is
    killed mid-write, for each NAME in ``names``; returns the paths removed. Call it only while
    no other process writes those files (a run directory belongs to one run at a time)."""
    removed = []
    for name in names:
        for path in Path(folder).glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_json(path, document: dict) -> Path:
    """Write ``document`` as indented JSON, atomically."""
    data = (json.dumps(document, indent=2, sort_keys=False) + "\n").encode()
    return _atomic_write(Path(path), lambda handle: handle.write(data))


def write_npz(path, arrays: dict, meta: dict | None = None) -> Path:
    """Write host ``arrays`` (and optional JSON ``meta``) to an ``.npz``, atomically."""
    payload = {key: np.asarray(value) for key, value in arrays.items()}
    if meta is not None:
        payload[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return _atomic_write(Path(path), lambda handle: np.savez(handle, **payload))


def read_npz(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` from a file written by :func:`write_npz`; clear error if corrupt."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; start without --resume")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({error}); it was not written by minibern or is "
            "damaged — delete it to start over, or point --out elsewhere"
        ) from error
    meta_bytes = arrays.pop(META_KEY, None)
    try:
        meta = json.loads(meta_bytes.tobytes().decode()) if meta_bytes is not None else {}
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(
            f"checkpoint {path}: its run description (__meta__) is not valid JSON ({error}); it "
            "is damaged — delete it to start over, or point --out elsewhere") from error
    return arrays, meta
