"""One writer per run directory: an exclusive lock held for the run's whole life.

A run directory belongs to one run at a time: two processes writing the same checkpoint,
history and metrics replace each other's files, and one's clean-up of temporaries can delete
the other's checkpoint in flight. :func:`run_lock` takes an advisory lock on the file
``.minibern.lock`` in the directory (``flock`` on POSIX, ``msvcrt.locking`` on Windows) before
anything is checked or written and releases it on any exit. The operating system drops the
lock of a process that dies (``kill -9`` included), so a lock file left by a killed run is
recognised as stale and taken over, with a message naming the process that left it.

The lock is re-entrant within a process (the CLI holds it, and :meth:`Trainer.fit
<minibern.training.trainer.Trainer.fit>` takes it again for callers that do not).
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_NAME = ".minibern.lock"

_held: dict[str, list] = {}  # resolved directory -> [file descriptor, depth]
_held_lock = threading.Lock()


class RunLocked(RuntimeError):
    """Another live process holds the run directory's lock."""


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _owner(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _acquire(directory: Path, log) -> int:
    """Lock ``directory``'s lock file; the descriptor. A lock file that was unlinked by its
    releasing owner between our open and our lock is retried on the new file."""
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            owner = _owner(path)
            raise RunLocked(
                f"{directory} is in use by another run (process {owner or 'unknown'} holds "
                f"{path}); wait for it to finish or stop it, or choose another --out; nothing "
                "was changed")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _owner(path)
    if stale and log is not None:
        log(f"took over {path}: its run (process {stale}) ended without releasing it")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _release(directory: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        (directory / LOCK_NAME).unlink()  # while still locked: the next run starts clean
    os.close(fd)  # drops the lock


@contextlib.contextmanager
def run_lock(directory, log=None):
    """Hold the exclusive lock of run directory ``directory`` (it must exist) for the ``with``
    block. Raises :class:`RunLocked` naming the holder when another process holds it; ``log``
    receives one line when a stale lock of a killed run is taken over."""
    directory = Path(directory)
    key = str(directory.resolve())
    with _held_lock:
        entry = _held.get(key)
        if entry is None:
            entry = _held[key] = [_acquire(directory, log), 0]
        entry[1] += 1
    try:
        yield
    finally:
        with _held_lock:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(directory, entry[0])
