"""Kernel threads: the element-wise kernels split over blocks of examples on a small pool.

NumPy runs its element-wise loops (the copies of im2col, the adds of col2im, the comparisons
of max pooling) on the calling thread only, whatever the BLAS thread count; the matrix
products are the only part of a step that uses a second core. NumPy releases the GIL inside
those loops, so the same loops on disjoint blocks of examples can run on several threads at
once. :func:`over_examples` does that for the kernels that cost the most
(:mod:`minibern.layers.im2col`, :class:`~minibern.layers.MaxPool2D`).

**Same numbers.** Every output element is computed by the same operations on the same inputs,
in the same order, whatever the split: only *which thread* computes a block changes. A sum
*over* examples (a bias gradient) is never split. Results are therefore bitwise identical for
every thread count, and the seed alone fixes a run.

**How many threads.** :func:`set_threads` / :func:`using_threads`, else the environment
variable ``MINIBERN_THREADS``, else ``OMP_NUM_THREADS`` or ``OPENBLAS_NUM_THREADS`` (so that
one setting pins BLAS and these kernels together, as the experiment runner does for its
one-thread workers), else the cores this process may use, at most :data:`MAX_DEFAULT_THREADS`.

**When it splits.** Only host (NumPy) arrays: CuPy kernels already run on the whole device,
and the ``strict`` backend stands in for CuPy, so both stay on one thread. Only kernels that
touch at least :data:`MIN_PARALLEL_BYTES`: handing a block to another thread costs tens of
microseconds, more than a small kernel (LeNet-300-100's) takes. A kernel called from inside a
block of another runs where it is called, unsplit.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from minibern import backend as B

ENV_VAR = "MINIBERN_THREADS"

#: Environment variables read, in order, for the default thread count.
THREAD_ENV_VARS = (ENV_VAR, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: The default never exceeds this many threads (the kernels are memory-bound: more threads
#: than memory channels buy nothing).
MAX_DEFAULT_THREADS = 4

#: A kernel that reads and writes fewer bytes than this runs on the calling thread.
MIN_PARALLEL_BYTES = 1 << 20

_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()
_inside = threading.local()


def _parse(value, source: str) -> int:
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{source} must be a positive whole number of threads, got {value!r}; "
                         f"for example {ENV_VAR}=1 (one core) or {ENV_VAR}=2")
    return count


def default_threads() -> int:
    """The thread count the environment asks for, else the usable cores (at most 4)."""
    for name in THREAD_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return _parse(value, f"the environment variable {name}")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def get_threads() -> int:
    """Threads the element-wise kernels use (1: the calling thread only)."""
    global _threads
    if _threads is None:
        _threads = default_threads()
    return _threads


def set_threads(count: int) -> int:
    """Use ``count`` threads (≥ 1) for the element-wise kernels from now on; returns it."""
    global _threads
    if isinstance(count, bool):
        raise ValueError(f"threads must be a positive whole number, got {count!r}")
    _threads = _parse(count, "threads")
    return _threads


@contextlib.contextmanager
def using_threads(count: int):
    """Context manager: run a block with ``count`` kernel threads, then restore the setting."""
    global _threads
    previous = _threads
    set_threads(count)
    try:
        yield count
    finally:
        _threads = previous


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minibern",
                                       initializer=_mark_worker)
            _pool_workers = workers
        return _pool


def _mark_worker() -> None:
    _inside.worker = True


def split(n: int, parts: int) -> list:
    """``parts`` contiguous ranges ``(start, stop)`` covering 0..n, sizes differing by ≤ 1."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def over_examples(kernel, n: int, nbytes: int, xp) -> None:
    """Run ``kernel(start, stop)`` on blocks of the ``n`` examples, one block per thread.

    ``kernel`` must write only the examples start..stop of its outputs (then the blocks are
    independent and the result does not depend on the split). ``nbytes`` is what the whole
    kernel reads and writes; ``xp`` the array module of its arrays. Runs ``kernel(0, n)`` on
    the calling thread when one thread is set, the arrays are not NumPy's, the kernel is small
    (:data:`MIN_PARALLEL_BYTES`), or this call comes from inside a block of another. An exception in any block
    is raised here, after every block has finished.
    """
    threads = get_threads()
    if (threads < 2 or n < 2 or nbytes < MIN_PARALLEL_BYTES or xp is not B.host
            or getattr(_inside, "worker", False)):
        kernel(0, n)
        return
    blocks = split(n, threads)
    pool = _executor(len(blocks) - 1)
    futures = [pool.submit(kernel, start, stop) for start, stop in blocks[1:]]
    _inside.worker = True  # a kernel inside this block runs unsplit, as in the pool threads
    try:
        kernel(*blocks[0])  # the calling thread takes the first block
    finally:
        _inside.worker = False
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error


__all__ = ["ENV_VAR", "MAX_DEFAULT_THREADS", "MIN_PARALLEL_BYTES", "THREAD_ENV_VARS",
           "default_threads", "get_threads", "over_examples", "set_threads", "split",
           "using_threads"]
