"""NumPy's BLAS thread count, read and set through the OpenBLAS library NumPy loaded.

NumPy does not expose its BLAS's thread count. The OpenBLAS builds of NumPy's wheels export
``openblas_get_num_threads``/``openblas_set_num_threads`` (with a ``scipy_`` prefix and a
``64_`` suffix in the 64-bit-integer builds); this module finds the loaded library in the
process's memory map and calls them. Where it cannot (another BLAS, another OS), :func:`info`
says so and :func:`set_threads` returns False, leaving the BLAS as it is.

:mod:`minibern.kernels.threads` uses it: with two or more kernel threads the matrix products
are split over those threads too, which needs a BLAS that runs each product on the calling
thread alone.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

#: Symbol (prefix, suffix) pairs of the OpenBLAS builds NumPy ships, most likely first.
_SYMBOLS = (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"),
            ("openblas_", ""))

_found = None  # (library, prefix, suffix, path), False when searched and absent


def _openblas():
    """(ctypes library, prefix, suffix, path) of the OpenBLAS loaded in this process, or None.

    Looks only after NumPy is imported (through :mod:`minibern.backend`), so the library is
    already mapped."""
    global _found
    if _found is None:
        from minibern import backend  # noqa: F401  (NumPy, hence its BLAS, is loaded)

        _found = False
        try:
            with open("/proc/self/maps", encoding="utf-8") as maps:
                paths = {line.split()[-1] for line in maps
                         if "openblas" in line.lower() and "/" in line}
        except OSError:
            paths = set()
        # NumPy's own copy first (numpy.libs, numpy/.dylibs), should another be mapped too
        for path in sorted(paths, key=lambda path: ("numpy" not in path, path)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix, suffix in _SYMBOLS:
                if hasattr(lib, f"{prefix}get_num_threads{suffix}"):
                    _found = (lib, prefix, suffix, path)
                    break
            if _found:
                break
    return _found or None


def _function(name: str, restype=None, argtypes=None):
    found = _openblas()
    if found is None:
        return None
    lib, prefix, suffix, _ = found
    function = getattr(lib, f"{prefix}{name}{suffix}", None)
    if function is not None:
        function.restype = restype
        if argtypes is not None:
            function.argtypes = argtypes
    return function


def get_threads() -> int | None:
    """Threads NumPy's BLAS runs a product on, or None where it cannot be read."""
    getter = _function("get_num_threads", ctypes.c_int)
    return None if getter is None else int(getter())


def set_threads(count: int) -> bool:
    """Run NumPy's BLAS on ``count`` threads from now on (process-wide). False where the BLAS
    cannot be set from here (then nothing changes)."""
    setter = _function("set_num_threads", None, [ctypes.c_int])
    if setter is None:
        return False
    setter(int(count))
    return True


def info() -> dict:
    """``name`` (the library's file name, or "unknown"), ``config`` (its build string) and
    ``threads`` (None where unknown) of NumPy's BLAS."""
    found = _openblas()
    if found is None:
        return {"name": "unknown", "config": "", "threads": None}
    config = _function("get_config", ctypes.c_char_p)
    return {"name": Path(found[3]).name, "config": config().decode() if config else "",
            "threads": get_threads()}


__all__ = ["get_threads", "info", "set_threads"]
