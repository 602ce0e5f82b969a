"""Kernel threads: a step's heavy kernels split over blocks of examples on a small pool.

NumPy runs its element-wise loops (the copies of im2col, the adds of col2im, the comparisons
of max pooling) on the calling thread only, whatever the BLAS thread count, and OpenBLAS
splits the small products of a LeNet step over its threads poorly. NumPy releases the GIL
inside its loops and its products, so the same work on disjoint blocks can run on several
threads at once. :func:`over_blocks` does that for the kernels that cost the most: im2col and
col2im (:mod:`minibern.kernels.im2col`), max pooling (:mod:`minibern.kernels.pool`), and
the matrix products of the fast Conv2D and Dense kernels (:mod:`minibern.kernels.conv`,
:mod:`minibern.kernels.dense`: forward and input gradient by blocks of examples, weight
gradient by blocks of its columns). The reference layers (:mod:`minibern.layers`) never
split.

**Which numbers.** A block's outputs are computed by the same operations on the same inputs
as in the unsplit kernel; a sum *over* the split axis (a bias gradient, a weight gradient over
the examples) is never split: a weight gradient is split over its own columns instead, so each
thread keeps whole sums. The element-wise kernels therefore give the same bits for every thread
count. The products do not quite: OpenBLAS sums a product's terms in an order that depends on
the product's shape (as it does on its own thread count), so the rows of a block's product can
differ from the same rows of the whole product in the last bits. The blocks depend only on the
thread count, never on which thread finishes first: the seed and the count fix a run's
numbers (``tests/test_threads.py``, ``tests/test_gate_training.py``).

**The BLAS.** Splitting the products over the kernel threads needs a BLAS that runs each
product on its calling thread alone. So with two or more kernel threads minibern sets NumPy's
BLAS to one thread (:mod:`minibern.kernels.blas`; process-wide) and gives it back its earlier count
when set back to one. Where the BLAS cannot be set from Python (not OpenBLAS), the products
stay whole on the BLAS's own threads and only the element-wise kernels split.

**How many threads.** One (the calling thread) unless more are asked for:
:func:`set_threads`, :func:`using_threads` or the CLI's ``--threads`` override the environment
variable ``MINIBERN_THREADS``, which is read once, at the first kernel call. It is off by
default, so that parallel runs (a sweep's workers) do not compete for the cores; the measured
gain of two threads is in ``docs/BENCHMARKS.md``. The setting is process-wide, like the BLAS
thread count: set it once, not per thread.

**When it splits.** Only host (NumPy) arrays: CuPy kernels already run on the whole device,
and the ``strict`` backend stands in for CuPy, so both stay on one thread. Only kernels that
touch at least :data:`MIN_PARALLEL_BYTES`: handing a block to another thread costs tens of
microseconds, more than a small kernel (a few examples of a small layer) takes. A kernel called
from inside a block of another runs where it is called, unsplit. A kernel's scratch buffers
(max pooling's planes, col2im's padded sums) are made per block, so with several threads there
is one set per thread.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from minibern import backend as B
from minibern.kernels import blas

ENV_VAR = "MINIBERN_THREADS"

#: A kernel that reads and writes fewer bytes than this runs on the calling thread.
MIN_PARALLEL_BYTES = 1 << 20

_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()
_inside = threading.local()
_products = False  # the matrix products split too (kernel threads ≥ 2, BLAS on one thread)
_blas_before: int | None = None  # NumPy's BLAS threads before minibern set them to one
_setting_lock = threading.Lock()


def _count(value) -> int | None:
    """``value`` as a thread count ≥ 1, or None."""
    if isinstance(value, bool):
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        return None
    return count if count >= 1 else None


def default_threads() -> int:
    """``MINIBERN_THREADS`` if set (a ValueError names the fix if it is not a positive whole
    number), else 1."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return 1
    count = _count(value)
    if count is None:
        raise ValueError(f"the environment variable {ENV_VAR} must be a positive whole number of "
                         f"threads, got {value!r}; for example {ENV_VAR}=1 (one core) or "
                         f"{ENV_VAR}=2")
    return count


def get_threads() -> int:
    """Threads minibern's kernels use (1: the calling thread only)."""
    if _threads is None:
        with _setting_lock:  # the first read, maybe from two threads at once, happens once
            if _threads is None:
                _use(default_threads())
    return _threads


def splits_products() -> bool:
    """Whether the matrix products split over the kernel threads too (see the module's
    docstring, "The BLAS")."""
    get_threads()
    return _products


def _use(count: int | None) -> None:
    """Set the kernel threads (None: unread, as at import) and the BLAS to match: one BLAS
    thread while ≥ 2 kernel threads, its earlier count restored otherwise."""
    global _threads, _products, _blas_before
    _threads = count
    if count is not None and count >= 2:
        if _blas_before is None:
            before = blas.get_threads()
            if before is not None and blas.set_threads(1):
                _blas_before = before
        _products = blas.get_threads() == 1
    else:
        if _blas_before is not None:
            blas.set_threads(_blas_before)
            _blas_before = None
        _products = False


def set_threads(count: int) -> int:
    """Use ``count`` threads (≥ 1) for minibern's kernels from now on; returns it."""
    if _count(count) is None:
        raise ValueError(f"threads must be a positive whole number, got {count!r}; use 1 for "
                         "the calling thread only, or the number of cores")
    _use(int(count))
    return _threads


@contextlib.contextmanager
def using_threads(count: int):
    """Context manager: run a block with ``count`` kernel threads, then restore the setting.

    The setting is process-wide: do not use this from several threads at once."""
    previous = _threads
    checked = set_threads(count)
    try:
        yield checked
    finally:
        _use(previous)


def _submit(kernel, blocks) -> list:
    """Submit ``kernel`` on each block to the shared pool (grown if it has too few workers);
    under the lock, so that no other thread can shut the pool down in between."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < len(blocks):
            if _pool is not None:
                _pool.shutdown(wait=False)  # its queued blocks still run
            _pool = ThreadPoolExecutor(max_workers=len(blocks), thread_name_prefix="minibern",
                                       initializer=_mark_worker)
            _pool_workers = len(blocks)
        return [_pool.submit(kernel, start, stop) for start, stop in blocks]


def _mark_worker() -> None:
    _inside.worker = True


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there."""
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def split(n: int, parts: int) -> list:
    """``parts`` contiguous ranges ``(start, stop)`` covering 0..n, sizes differing by ≤ 1."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def over_blocks(kernel, n: int, nbytes: int, xp, *, products: bool = False) -> None:
    """Run ``kernel(start, stop)`` on blocks of ``range(n)`` (examples, or the columns of a
    weight gradient), one block per thread.

    ``kernel`` must write only the entries start..stop of its outputs along the split axis
    (then the blocks are independent, and the result depends on the split only through the
    products' summation order, see "Which numbers"). ``nbytes``
    is what the whole kernel reads and writes; ``xp`` the array module of its arrays;
    ``products``: the kernel runs matrix products, so it splits only where they do
    (:func:`splits_products`). Runs ``kernel(0, n)`` on the calling thread when one thread is
    set, the arrays are not NumPy's, the kernel is small (:data:`MIN_PARALLEL_BYTES`), or this
    call comes from inside a block of another. An exception in any block is raised here, after
    every block has finished.
    """
    threads = get_threads()
    if (threads < 2 or n < 2 or nbytes < MIN_PARALLEL_BYTES or xp is not B.host
            or (products and not _products) or getattr(_inside, "worker", False)):
        kernel(0, n)
        return
    blocks = split(n, threads)
    futures = _submit(kernel, blocks[1:])
    _inside.worker = True  # a kernel inside this block runs unsplit, as in the pool threads
    try:
        kernel(*blocks[0])  # the calling thread takes the first block
    finally:
        _inside.worker = False
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error


__all__ = ["ENV_VAR", "MIN_PARALLEL_BYTES", "default_threads", "get_threads", "over_blocks",
           "set_threads", "split", "splits_products", "using_threads"]
