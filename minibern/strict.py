"""The ``strict`` backend: NumPy arrays tagged as device arrays, and the transfers they count.

:class:`StrictArray` is an ndarray subclass that refuses to mix with plain host
``numpy.ndarray`` objects, the way CuPy arrays refuse; :data:`strict_xp` is the array module
that creates them. Running the test suite (or a user's own script) under ``strict`` proves on a
CPU machine that no code path slips a host array into device code. Python and NumPy *scalars*
mix freely, as they do with CuPy. The backend also counts the transfers a GPU would make
(:func:`counting_transfers`) and the operations on device arrays, each of which a GPU would
launch as (at least) one kernel (:func:`counting_ops`).

Choose it through :mod:`minibern.backend` (``set_backend("strict")``), which imports this
module and re-exports its public names. It is the backend's strict half: it uses the NumPy
module that :mod:`minibern.backend` has loaded (only the backend imports NumPy, and the backend
imports this module, so this one cannot import the backend back).
"""
from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace

np = sys.modules["numpy"]  # loaded by minibern.backend before it imports this module


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


def count_transfer(kind: str) -> None:
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
# Operation counts: the array calls on device arrays, each a kernel launch on a GPU.
# ---------------------------------------------------------------------------------------------
class OpCounts:
    """Operations on strict-backend (device) arrays counted by :func:`counting_ops`.

    One count per NumPy ufunc call (``a + b``, ``xp.maximum``, a reduction such as ``.sum()``),
    per array function (``xp.take``, ``xp.concatenate``, ``xp.flatnonzero``, ...), per array
    created by the strict namespace (``xp.zeros``, ``xp.asarray`` of host data, ...), per
    ``astype``/``copy``, per item assignment and per read with an index array (a gather). Basic
    slicing and reshapes are views and free, as on CuPy. On a GPU each counted call is at least
    one kernel launch (or an allocation), so for a step of small arrays the count sets the time
    the launches take. Ops on host NumPy arrays are not counted.

    Attributes
    ----------
    total : int
    by_kind : dict
        ``{"ufunc" | "function" | "create" | "index" | "method": count}``.
    """

    KINDS = ("ufunc", "function", "create", "index", "method")

    def __init__(self):
        self.by_kind = {kind: 0 for kind in self.KINDS}

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def __repr__(self) -> str:
        return f"OpCounts(total={self.total}, " + ", ".join(
            f"{k}={v}" for k, v in self.by_kind.items()) + ")"


_op_listeners: list = []


def count_op(kind: str) -> None:
    """One device operation of ``kind`` (:attr:`OpCounts.KINDS`) for every open counter."""
    for counts in _op_listeners:
        counts.by_kind[kind] += 1


@contextlib.contextmanager
def counting_ops():
    """Context manager yielding an :class:`OpCounts` of the device operations made inside the
    block (blocks may nest; each sees every operation of its block)::

        with B.use_backend("strict"), B.counting_ops() as ops:
            trainer.train_epoch()
        print(ops.total)
    """
    counts = OpCounts()
    _op_listeners.append(counts)
    try:
        yield counts
    finally:
        _op_listeners.remove(counts)


# ---------------------------------------------------------------------------------------------
# The strict backend: a tagged ndarray subclass that refuses host arrays.
# ---------------------------------------------------------------------------------------------
MIX_MESSAGE = (
    "a host numpy.ndarray {what} was mixed with a device array of the '{backend}' backend; "
    "move it explicitly with minibern.backend.asarray(...) (or bring the device array back "
    "with minibern.backend.to_numpy(...))"
)


def _is_plain_host_array(obj) -> bool:
    return isinstance(obj, np.ndarray) and not isinstance(obj, StrictArray)


def _check_no_host_arrays(objects, what: str) -> None:
    for obj in objects:
        if isinstance(obj, (list, tuple)):
            _check_no_host_arrays(obj, what)
        elif _is_plain_host_array(obj):
            shape = getattr(obj, "shape", None)
            raise TypeError(MIX_MESSAGE.format(what=f"(shape {shape}) in {what}", backend="strict"))


def unwrap(obj):
    if isinstance(obj, StrictArray):
        return obj.view(np.ndarray)
    if isinstance(obj, list):
        return [unwrap(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {key: unwrap(value) for key, value in obj.items()}
    return obj


def wrap(obj):
    if isinstance(obj, np.ndarray) and not isinstance(obj, StrictArray):
        return obj.view(StrictArray)
    if isinstance(obj, np.generic):  # a reduction's result stays on the device, as on CuPy
        return np.asarray(obj).view(StrictArray)
    if isinstance(obj, list):
        return [wrap(o) for o in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(wrap(o) for o in obj)
    return obj


class StrictArray(np.ndarray):
    """An ndarray that stands for a device array on a CPU machine.

    Any NumPy ufunc or array function that receives both a :class:`StrictArray` and a plain
    host ``numpy.ndarray`` raises ``TypeError``, exactly where CuPy would. Results of operations
    on strict arrays are strict arrays, reductions included (a 0-d array, as CuPy returns, so
    that ``float(loss)`` is a counted host pull). Scalars mix freely.
    """

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check_no_host_arrays(inputs, f"numpy.{ufunc.__name__}")
        count_op("ufunc")
        if out is not None:
            _check_no_host_arrays(out, f"the out= of numpy.{ufunc.__name__}")
            kwargs["out"] = unwrap(out)
        result = getattr(ufunc, method)(*unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        _check_no_host_arrays(args, f"numpy.{func.__name__}")
        _check_no_host_arrays(list(kwargs.values()), f"numpy.{func.__name__}")
        count_op("function")
        return wrap(func(*unwrap(args), **unwrap(kwargs)))

    def __setitem__(self, key, value):
        _check_no_host_arrays([value], "an item assignment")
        if _has_bool_index(key):
            count_transfer("scalars")
        count_op("index")
        np.ndarray.__setitem__(self.view(np.ndarray), unwrap(key), unwrap(value))

    def __getitem__(self, key):
        if _has_bool_index(key):  # the result's size is the number of True entries
            count_transfer("scalars")
        if _has_index_array(key):  # a gather; basic slicing is a view
            count_op("index")
        return np.ndarray.__getitem__(self, key)

    def astype(self, *args, **kwargs):
        count_op("method")
        return np.ndarray.astype(self, *args, **kwargs)

    def copy(self, *args, **kwargs):
        count_op("method")
        return np.ndarray.copy(self, *args, **kwargs)

    # Host pulls of one number: on a GPU each waits for the device (counted, see TransferCounts).
    def __int__(self):
        count_transfer("scalars")
        return int(self.view(np.ndarray))

    def __float__(self):
        count_transfer("scalars")
        return float(self.view(np.ndarray))

    def __bool__(self):
        count_transfer("scalars")
        return bool(self.view(np.ndarray))

    def __index__(self):
        count_transfer("scalars")
        return self.view(np.ndarray).__index__()

    def item(self, *args):
        count_transfer("scalars")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        count_transfer("to_host")
        return self.view(np.ndarray).tolist()


def _has_index_array(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (np.ndarray, list)) for k in keys)


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
        attr = getattr(np, name)
        if name in _STRICT_CREATORS:
            def create(*args, **kwargs):
                if name.endswith("_like"):
                    _check_no_host_arrays(args[:1], f"numpy.{name}")
                on_device = isinstance(args[0] if args else None, StrictArray)
                if name in _STRICT_UPLOADERS and not on_device:
                    count_transfer("to_device")  # an upload: a transfer, not an op
                elif name != "asarray":  # asarray of a device array is the array itself
                    count_op("create")
                return wrap(attr(*unwrap(args), **unwrap(kwargs)))
            create.__name__ = name
            return create
        if name in _STRICT_DATA_SIZED:
            def data_sized(*args, **kwargs):
                count_transfer("scalars")
                return attr(*args, **kwargs)  # dispatches to StrictArray.__array_function__
            data_sized.__name__ = name
            return data_sized
        return attr


strict_xp = _StrictNamespace(__name__="minibern.strict")


__all__ = ["MIX_MESSAGE", "OpCounts", "StrictArray", "TransferCounts", "count_op", "count_transfer",
           "counting_ops", "counting_transfers",
           "reset_transfer_counts", "strict_xp", "transfer_counts", "unwrap", "wrap"]
