"""The switch between the reference layers and the fast kernels.

A layer file (:mod:`minibern.layers.dense`, ``conv``, ``pool``) holds the math: its forward
and backward written one equation per line, as in docs/derivations/layers.md. This package
holds the same equations arranged for speed, and every layer asks :func:`fast` which of the two
runs:

``"fast"`` (the default)
    :mod:`minibern.kernels.dense`, :mod:`~minibern.kernels.conv`, :mod:`~minibern.kernels.pool`
    and :mod:`~minibern.kernels.im2col`: channels-last columns (L7b), per-example batched
    products, cache blocks, budget chunks, and blocks of examples on the kernel threads
    (:mod:`minibern.kernels.threads`, with :mod:`minibern.kernels.blas` to set NumPy's BLAS).
    A training run's numbers are those of this path.
``"reference"``
    The layer's own lines: one GEMM per product, im2col as a loop over the kernel offsets (as in
    "Deep Learning from Scratch"), no threads. It computes the same numbers up to the rounding
    of a product's summation order (max pooling and im2col/col2im: exactly the same numbers);
    ``tests/test_kernels.py`` checks both against the naive loops and each other.

Choose with :func:`use` or :func:`using` (``minibern.kernels.use("reference")``), or the
environment variable ``MINIBERN_KERNELS`` (read once, at the first layer call). The setting is
process-wide and read at every call; Conv2D's backward runs the path its forward ran (the
saved columns are laid out by it), Dense and MaxPool2D save the same things on both paths.

Outside this package the kernels import only :mod:`minibern.backend`; the layers import them.
"""
from __future__ import annotations

import contextlib
import os

ENV_VAR = "MINIBERN_KERNELS"
NAMES = ("fast", "reference")

_current: str | None = None


def _checked(name, where: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in NAMES:
        raise ValueError(f"{where} must be one of {', '.join(NAMES)}, got {name!r}; "
                         f"for example minibern.kernels.use('reference') or {ENV_VAR}=fast")
    return name.strip().lower()


def current() -> str:
    """The kernels in use: ``"fast"`` or ``"reference"`` (``MINIBERN_KERNELS``, else fast)."""
    global _current
    if _current is None:
        _current = _checked(os.environ.get(ENV_VAR, "").strip() or "fast",
                            f"the environment variable {ENV_VAR}")
    return _current


def fast() -> bool:
    """True when the layers run the fast kernels."""
    return (_current or current()) == "fast"


def use(name: str) -> str:
    """Run the layers on ``name`` (``"fast"`` or ``"reference"``) from now on; returns it."""
    global _current
    _current = _checked(name, "kernels")
    return _current


@contextlib.contextmanager
def using(name: str):
    """Context manager: run a block on kernels ``name``, then restore the previous choice."""
    global _current
    previous = _current
    checked = use(name)
    try:
        yield checked
    finally:
        _current = previous


__all__ = ["ENV_VAR", "NAMES", "current", "fast", "use", "using"]
