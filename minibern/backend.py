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
    counts the transfers a GPU would make (:func:`counting_transfers`).

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
from types import SimpleNamespace

import numpy

#: The plain NumPy module, for host-side code (data parsing, plotting, checkpoints, tests).
host = numpy

#: Floating dtype used when none is asked for.
DEFAULT_DTYPE = numpy.float32

BACKEND_NAMES = ("numpy", "cupy", "strict")
ENV_VAR = "MINIBERN_BACKEND"


class BackendError(ValueError):
    """A backend was misused: unknown name, or arrays of two backends mixed."""


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (e.g. CuPy or a GPU is missing)."""


# ---------------------------------------------------------------------------------------------
# Transfer counts: what the strict backend would have copied between host and GPU.
# ---------------------------------------------------------------------------------------------
class TransferCounts:
    """Host↔device traffic counted by the strict backend (see :func:`counting_transfers`).

    Attributes
    ----------
    to_device : int
        Host data copied onto the device: :func:`asarray` (or ``xp.asarray``/``xp.array``/
        ``xp.ascontiguousarray``) of anything that is not already a device array.
    to_host : int
        Device arrays copied to the host: :func:`to_numpy`, ``.tolist()``.
    scalars : int
        Host pulls of one number, each of which makes a GPU finish its queued work:
        :func:`to_float`, ``int``/``float``/``bool``/``.item()`` of a device array, and the
        functions whose output size depends on the data (``nonzero``, ``flatnonzero``,
        ``argwhere``, ``unique``, ``bincount``, indexing with a boolean device array), which on
        CuPy read a count back before they can allocate their result.
    """

    KINDS = ("to_device", "to_host", "scalars")

    def __init__(self):
        self.to_device = self.to_host = self.scalars = 0

    @property
    def total(self) -> int:
        return self.to_device + self.to_host + self.scalars

    def as_dict(self) -> dict:
        return {kind: getattr(self, kind) for kind in self.KINDS}

    def __repr__(self) -> str:
        return "TransferCounts(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


_transfer_totals = TransferCounts()
_transfer_listeners: list = []


def _count_transfer(kind: str) -> None:
    for counts in (_transfer_totals, *_transfer_listeners):
        setattr(counts, kind, getattr(counts, kind) + 1)


def transfer_counts() -> TransferCounts:
    """A copy of the strict backend's transfer counts since the process started (or since
    :func:`reset_transfer_counts`). NumPy and CuPy arrays are not counted."""
    copy = TransferCounts()
    for kind in TransferCounts.KINDS:
        setattr(copy, kind, getattr(_transfer_totals, kind))
    return copy


def reset_transfer_counts() -> None:
    """Set the process-wide counts of :func:`transfer_counts` back to zero."""
    for kind in TransferCounts.KINDS:
        setattr(_transfer_totals, kind, 0)


@contextlib.contextmanager
def counting_transfers():
    """Context manager yielding a :class:`TransferCounts` of the strict-backend transfers made
    inside the block (it keeps counting while the block runs; blocks may nest)::

        with B.use_backend("strict"), B.counting_transfers() as counts:
            trainer.train_epoch()
        print(counts.as_dict())
    """
    counts = TransferCounts()
    _transfer_listeners.append(counts)
    try:
        yield counts
    finally:
        _transfer_listeners.remove(counts)


# ---------------------------------------------------------------------------------------------
# The strict backend: a tagged ndarray subclass that refuses host arrays.
# ---------------------------------------------------------------------------------------------
_MIX_MESSAGE = (
    "a host numpy.ndarray {what} was mixed with a device array of the '{backend}' backend; "
    "move it explicitly with minibern.backend.asarray(...) (or bring the device array back "
    "with minibern.backend.to_numpy(...))"
)


def _is_plain_host_array(obj) -> bool:
    return isinstance(obj, numpy.ndarray) and not isinstance(obj, StrictArray)


def _check_no_host_arrays(objects, what: str) -> None:
    for obj in objects:
        if isinstance(obj, (list, tuple)):
            _check_no_host_arrays(obj, what)
        elif _is_plain_host_array(obj):
            shape = getattr(obj, "shape", None)
            raise TypeError(_MIX_MESSAGE.format(what=f"(shape {shape}) in {what}", backend="strict"))


def _unwrap(obj):
    if isinstance(obj, StrictArray):
        return obj.view(numpy.ndarray)
    if isinstance(obj, list):
        return [_unwrap(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {key: _unwrap(value) for key, value in obj.items()}
    return obj


def _wrap(obj):
    if isinstance(obj, numpy.ndarray) and not isinstance(obj, StrictArray):
        return obj.view(StrictArray)
    if isinstance(obj, numpy.generic):  # a reduction's result stays on the device, as on CuPy
        return numpy.asarray(obj).view(StrictArray)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_wrap(o) for o in obj)
    return obj


class StrictArray(numpy.ndarray):
    """An ndarray that stands for a device array on a CPU machine.

    Any NumPy ufunc or array function that receives both a :class:`StrictArray` and a plain
    host ``numpy.ndarray`` raises ``TypeError``, exactly where CuPy would. Results of operations
    on strict arrays are strict arrays, reductions included (a 0-d array, as CuPy returns, so
    that ``float(loss)`` is a counted host pull). Scalars mix freely.
    """

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check_no_host_arrays(inputs, f"numpy.{ufunc.__name__}")
        if out is not None:
            _check_no_host_arrays(out, f"the out= of numpy.{ufunc.__name__}")
            kwargs["out"] = _unwrap(out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        _check_no_host_arrays(args, f"numpy.{func.__name__}")
        _check_no_host_arrays(list(kwargs.values()), f"numpy.{func.__name__}")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __setitem__(self, key, value):
        _check_no_host_arrays([value], "an item assignment")
        if _has_bool_index(key):
            _count_transfer("scalars")
        numpy.ndarray.__setitem__(self.view(numpy.ndarray), _unwrap(key), _unwrap(value))

    def __getitem__(self, key):
        if _has_bool_index(key):  # the result's size is the number of True entries
            _count_transfer("scalars")
        return numpy.ndarray.__getitem__(self, key)

    # Host pulls of one number: on a GPU each waits for the device (counted, see TransferCounts).
    def __int__(self):
        _count_transfer("scalars")
        return int(self.view(numpy.ndarray))

    def __float__(self):
        _count_transfer("scalars")
        return float(self.view(numpy.ndarray))

    def __bool__(self):
        _count_transfer("scalars")
        return bool(self.view(numpy.ndarray))

    def __index__(self):
        _count_transfer("scalars")
        return self.view(numpy.ndarray).__index__()

    def item(self, *args):
        _count_transfer("scalars")
        return self.view(numpy.ndarray).item(*args)

    def tolist(self):
        _count_transfer("to_host")
        return self.view(numpy.ndarray).tolist()


def _has_bool_index(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, StrictArray) and k.dtype == bool for k in keys)


_STRICT_CREATORS = (
    "array", "asarray", "ascontiguousarray", "zeros", "ones", "empty", "full", "arange",
    "eye", "linspace", "zeros_like", "ones_like", "empty_like", "full_like",
)
#: Creators that copy their first argument onto the device unless it is there already.
_STRICT_UPLOADERS = ("array", "asarray", "ascontiguousarray")
#: Functions whose output size depends on the data: a GPU reads a count back first.
_STRICT_DATA_SIZED = ("nonzero", "flatnonzero", "argwhere", "unique", "bincount")


class _StrictNamespace(SimpleNamespace):
    """NumPy, except that array-creating functions return :class:`StrictArray`."""

    def __getattr__(self, name):
        attr = getattr(numpy, name)
        if name in _STRICT_CREATORS:
            def create(*args, **kwargs):
                if name.endswith("_like"):
                    _check_no_host_arrays(args[:1], f"numpy.{name}")
                if name in _STRICT_UPLOADERS and not isinstance(args[0] if args else None,
                                                                StrictArray):
                    _count_transfer("to_device")
                return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
            create.__name__ = name
            return create
        if name in _STRICT_DATA_SIZED:
            def data_sized(*args, **kwargs):
                _count_transfer("scalars")
                return attr(*args, **kwargs)  # dispatches to StrictArray.__array_function__
            data_sized.__name__ = name
            return data_sized
        return attr


strict_xp = _StrictNamespace(__name__="minibern.strict")


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
        raise TypeError(_MIX_MESSAGE.format(what="", backend=device).replace("  ", " "))
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
    return backend.xp.asarray(_unwrap(data), dtype=dtype)


def to_numpy(array) -> numpy.ndarray:
    """A plain host ``numpy.ndarray`` with the values of ``array`` (any backend)."""
    if _is_cupy_array(array):
        return array.get()
    if isinstance(array, StrictArray):
        _count_transfer("to_host")
        return numpy.array(array.view(numpy.ndarray))
    return numpy.asarray(array)


def to_float(value) -> float:
    """A Python float from a 0-d array of any backend (or a scalar): one scalar pull."""
    if isinstance(value, StrictArray):
        _count_transfer("scalars")
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
