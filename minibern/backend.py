"""The array backend: the only engine module that imports NumPy or CuPy.

Every other module reaches arrays through this one:

* **creation** (``zeros``, ``empty``, ``asarray``, random numbers, ...) goes to the *current*
  backend, chosen by the user with :func:`set_backend` / :func:`use_backend` or the
  environment variable ``MINIBERN_BACKEND`` (default ``numpy``);
* **computation** takes its array module from its inputs, :func:`get_array_module`, so a layer
  body is written once and runs on whichever device its inputs live on;
* **host edges** are explicit: :func:`asarray` moves host data to the current backend,
  :func:`to_numpy` brings any array back to a host ``numpy.ndarray`` (for logging, plotting,
  saving and tests). Host-side code (data parsing, plotting, checkpoints) uses :data:`host`,
  the plain NumPy module, and never hands its arrays to engine code without :func:`asarray`.

Backends
--------
``"numpy"``
    Plain NumPy on the CPU (the default).
``"cupy"``
    CuPy on an NVIDIA GPU, imported lazily; if CuPy or a device is missing, asking for it
    raises :class:`BackendUnavailableError` naming the cause and the fix
    (``pip install minibern[gpu]``).
``"strict"``
    NumPy arrays of the tagged type :class:`StrictArray` that refuse to mix with plain host
    ``numpy.ndarray`` objects, the way CuPy arrays refuse. Running the test suite (or a user's
    own script) under ``strict`` proves on a CPU machine that no code path slips a host array
    into device code. Python and NumPy *scalars* mix freely, as they do with CuPy. It also
    counts the transfers a GPU would make (:func:`counting_transfers`). It lives in
    :mod:`minibern.strict`; its public names are re-exported here.

Random numbers
--------------
All randomness comes from a seeded host ``numpy.random.Generator`` (:func:`make_rng`); the
numbers are drawn on the host and then moved to the device (:func:`random_normal`,
:func:`random_uniform`, ...). The same seed therefore gives the same numbers on every backend.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy

#: The plain NumPy module, for host-side code (data parsing, plotting, checkpoints, tests).
host = numpy

# The strict backend lives in its own module, which uses the NumPy imported above.
from minibern.strict import (MIX_MESSAGE, OpCounts, StrictArray, TransferCounts,  # noqa: E402, F401
                             count_op, count_transfer, counting_ops, counting_transfers,
                             reset_transfer_counts,
                             strict_xp, transfer_counts, unwrap)

#: Floating dtype used when none is asked for.
DEFAULT_DTYPE = numpy.float32

BACKEND_NAMES = ("numpy", "cupy", "strict")
ENV_VAR = "MINIBERN_BACKEND"


class BackendError(ValueError):
    """A backend was misused: unknown name, or arrays of two backends mixed."""


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (e.g. CuPy or a GPU is missing)."""


# ---------------------------------------------------------------------------------------------
# Backend objects and the current choice.
# ---------------------------------------------------------------------------------------------
class Backend:
    """One array backend: its name and the module that creates and computes its arrays."""

    def __init__(self, name: str, xp):
        self.name = name
        self.xp = xp

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


_cupy_module = None
_current: Backend | None = None


def _import_cupy():
    global _cupy_module
    if _cupy_module is not None:
        return _cupy_module
    try:
        import cupy  # noqa: PLC0415  (imported lazily: most machines have no GPU)
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend 'cupy' needs CuPy, which could not be imported ({error}); "
            "install it with: pip install minibern[gpu]  (or use backend='numpy')"
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        raise BackendUnavailableError(
            f"backend 'cupy': CuPy is installed but no CUDA device can be used ({error}); "
            "check the NVIDIA driver, or use backend='numpy'"
        ) from error
    if count < 1:
        raise BackendUnavailableError(
            "backend 'cupy': CuPy is installed but no CUDA device was found; use backend='numpy'"
        )
    _cupy_module = cupy
    return cupy


def _make_backend(name) -> Backend:
    if not isinstance(name, str) or name.strip().lower() not in BACKEND_NAMES:
        raise BackendError(
            f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)} "
            f"(set it with minibern.set_backend(...) or the {ENV_VAR} environment variable)"
        )
    name = name.strip().lower()
    if name == "numpy":
        return Backend("numpy", numpy)
    if name == "strict":
        return Backend("strict", strict_xp)
    return Backend("cupy", _import_cupy())


def set_backend(name: str) -> Backend:
    """Make ``name`` (``"numpy"``, ``"cupy"`` or ``"strict"``) the current backend."""
    global _current
    _current = _make_backend(name)
    return _current


def get_backend() -> Backend:
    """The current backend (from ``MINIBERN_BACKEND`` on first use, else ``numpy``)."""
    global _current
    if _current is None:
        _current = _make_backend(os.environ.get(ENV_VAR, "numpy") or "numpy")
    return _current


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run a block under backend ``name``, then restore the previous one."""
    global _current
    previous = _current
    backend = set_backend(name)
    try:
        yield backend
    finally:
        _current = previous


def cupy_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device."""
    try:
        _import_cupy()
    except BackendUnavailableError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Array modules, edges, dtypes.
# ---------------------------------------------------------------------------------------------
def _is_cupy_array(obj) -> bool:
    return _cupy_module is not None and isinstance(obj, _cupy_module.ndarray)


def _kind(obj) -> str | None:
    if isinstance(obj, StrictArray):
        return "strict"
    if isinstance(obj, numpy.ndarray):
        return "numpy"
    if _is_cupy_array(obj):
        return "cupy"
    return None


def get_array_module(*arrays):
    """The array module of ``arrays`` (numpy, cupy or the strict namespace).

    Scalars and ``None`` are ignored; with no arrays at all the current backend's module is
    returned. Arrays of two backends raise ``TypeError`` with the fix.
    """
    kinds = {k for k in map(_kind, arrays) if k is not None}
    if not kinds:
        return get_backend().xp
    if len(kinds) > 1:
        device = "cupy" if "cupy" in kinds else "strict"
        if kinds == {"cupy", "strict"}:
            raise TypeError("cupy arrays were mixed with strict-backend arrays; use one backend")
        raise TypeError(MIX_MESSAGE.format(what="", backend=device).replace("  ", " "))
    kind = kinds.pop()
    if kind == "numpy":
        return numpy
    if kind == "strict":
        return strict_xp
    return _cupy_module


def is_array(obj) -> bool:
    """True for a NumPy, strict or CuPy array."""
    return _kind(obj) is not None


def asarray(data, dtype=None):
    """Move ``data`` (host array, list, scalar or device array) onto the current backend."""
    backend = get_backend()
    if backend.name == "cupy":
        return backend.xp.asarray(data, dtype=dtype)
    if _is_cupy_array(data):
        data = data.get()
    if backend.name == "strict":  # counts the copy unless data is on the device already
        return backend.xp.asarray(data, dtype=dtype)
    return backend.xp.asarray(unwrap(data), dtype=dtype)


def to_numpy(array) -> numpy.ndarray:
    """A plain host ``numpy.ndarray`` with the values of ``array`` (any backend)."""
    if _is_cupy_array(array):
        return array.get()
    if isinstance(array, StrictArray):
        count_transfer("to_host")
        return numpy.array(array.view(numpy.ndarray))
    return numpy.asarray(array)


def to_float(value) -> float:
    """A Python float from a 0-d array of any backend (or a scalar): one scalar pull."""
    if isinstance(value, StrictArray):
        count_transfer("scalars")
        return float(value.view(numpy.ndarray))
    return float(to_numpy(value))


def dtype_of(name_or_dtype) -> numpy.dtype:
    """Resolve ``"float32"``/``"float64"``/a dtype to a floating ``numpy.dtype``.

    Raises ``TypeError`` for anything that is not a floating type.
    """
    try:
        dtype = numpy.dtype(name_or_dtype if name_or_dtype is not None else DEFAULT_DTYPE)
    except TypeError as error:
        raise TypeError(f"dtype {name_or_dtype!r} is not a dtype; use 'float32' or 'float64'") from error
    if dtype.kind != "f":
        raise TypeError(f"dtype {dtype} is not a floating type; use 'float32' or 'float64'")
    return dtype


def require_float_array(x, name: str = "x"):
    """Raise ``TypeError`` unless ``x`` is a floating array of some backend; return it."""
    if not is_array(x):
        raise TypeError(
            f"{name} must be an array of the current backend, got {type(x).__name__}; "
            "convert it with minibern.backend.asarray(...)"
        )
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name} has dtype {x.dtype}, expected a floating dtype; convert it with "
            f"{name}.astype('float32')"
        )
    return x


def zeros(shape, dtype=None):
    """Zeros on the current backend (float32 unless ``dtype`` says otherwise)."""
    return get_backend().xp.zeros(shape, dtype=dtype_of(dtype))


_shared_zero_buffers: dict = {}


def shared_zeros_like(x):
    """A zero array of ``x``'s shape, dtype and backend, to be read and never written.

    It is a view of one cached flat zero buffer per (array module, dtype), grown when a larger
    shape is asked for, so the hot path allocates nothing. It exists for ``maximum(x, 0)``:
    NumPy 2's ``maximum`` against a scalar (or any 0-stride operand) runs a slower loop than
    against a contiguous array of the same shape (``benchmarks/bench_kernels.py`` times both;
    the results are in ``benchmarks/README.md``). On NumPy the buffer is flagged read-only, so a
    stray write raises instead of corrupting every later ReLU.
    """
    xp = get_array_module(x)
    key = (id(xp), str(getattr(x, "device", "")), x.dtype)  # modules live as long as the process
    size = math.prod(x.shape)
    buffer = _shared_zero_buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = xp.zeros(max(size, 1), dtype=x.dtype)
        if isinstance(buffer, numpy.ndarray):
            buffer.flags.writeable = False
        _shared_zero_buffers[key] = buffer
    return buffer[:size].reshape(x.shape)


def synchronize() -> None:
    """Wait for the device to finish queued work (a no-op on the CPU backends)."""
    if get_backend().name == "cupy":
        _cupy_module.cuda.get_current_stream().synchronize()


# ---------------------------------------------------------------------------------------------
# Random numbers: seeded host generator, numbers moved to the device.
# ---------------------------------------------------------------------------------------------
def make_rng(seed) -> numpy.random.Generator:
    """A host ``numpy.random.Generator`` from an int seed (or pass a Generator through)."""
    if isinstance(seed, numpy.random.Generator):
        return seed
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)):
        raise TypeError(
            f"seed must be an int (or a numpy.random.Generator), got {seed!r}; "
            "pass e.g. seed=0 so runs are reproducible"
        )
    return numpy.random.default_rng(int(seed))


def spawn_rngs(seed: int, count: int) -> list:
    """``count`` independent host generators derived from one int ``seed`` (SeedSequence.spawn).

    A run uses one stream per job (weight init, batch order, gate masks), so adding a consumer
    of random numbers to one job leaves the others' numbers unchanged.
    """
    make_rng(seed)  # validates the seed
    return [numpy.random.default_rng(child) for child in numpy.random.SeedSequence(int(seed)).spawn(count)]


def random_normal(rng: numpy.random.Generator, shape, scale=1.0, dtype=None):
    """N(0, scale^2) samples drawn on the host by ``rng``, returned on the current backend."""
    dtype = dtype_of(dtype)
    return asarray(rng.standard_normal(shape).astype(dtype) * dtype.type(scale))


def random_uniform(rng: numpy.random.Generator, shape, low=0.0, high=1.0, dtype=None):
    """U(low, high) samples drawn on the host by ``rng``, returned on the current backend."""
    dtype = dtype_of(dtype)
    return asarray(rng.uniform(low, high, size=shape).astype(dtype))


def random_permutation(rng: numpy.random.Generator, n: int):
    """A host permutation of ``range(n)`` (index arrays for batching stay on the host)."""
    return rng.permutation(n)
