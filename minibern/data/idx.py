"""Read IDX files (the format MNIST ships in), raw or gzipped, into host ``uint8`` arrays.

IDX layout (all integers big-endian)::

    offset  size  field
    0       2     0x00 0x00
    2       1     type code: 0x08 = unsigned byte (the only one read here; MNIST uses it)
    3       1     D, the number of dimensions (1..4 accepted here)
    4       4*D   the D dimension sizes, big-endian int32
    4+4*D   ...   prod(sizes) data bytes, C order (last dimension fastest)

So MNIST's image files start with the magic number ``0x00000803`` (three dimensions: count,
rows, columns) and its label files with ``0x00000801`` (one dimension: count). A file is valid
only if its length is exactly ``4 + 4*D + prod(sizes)``: a truncated download or trailing
garbage is refused rather than silently padded or cut.

Every format problem raises :class:`IdxError` (a ``ValueError``) whose message names the file,
says what is wrong (e.g. ``expected 47040016 bytes, found 1000``) and how to fix it.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

from minibern.backend import host as np

#: The first two bytes of every gzip stream.
GZIP_MAGIC = b"\x1f\x8b"

#: IDX type codes (byte 2 of the magic number); only ``0x08`` is supported.
TYPE_CODES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
              0x0D: "float32", 0x0E: "float64"}

MAX_DIMS = 4

_FIX = ("delete it and run `python -m minibern fetch-mnist` "
        "(or replace it with a good copy)")


#: The most bytes an MNIST file may have, packed or unpacked (the largest, train-images, has
#: 47,040,016): a local file or a download beyond it is refused before it is held in memory.
MAX_FILE_BYTES = 64 * 2**20


class IdxError(ValueError):
    """A file (or byte string) is not a valid unsigned-byte IDX file, or is corrupt gzip."""


def gunzip(data: bytes, name: str = "<bytes>", limit: int | None = None) -> bytes:
    """Decompress gzip ``data``; raise :class:`IdxError` naming ``name`` if it is corrupt.

    Parameters
    ----------
    data : bytes
        A complete gzip stream.
    name : str
        What to call the data in error messages (usually the file path).
    limit : int, optional
        Refuse data that decompresses to more than ``limit`` bytes, without ever holding more
        than ``limit + 1`` of them (a decompression bomb from a download).

    Returns
    -------
    bytes
        The decompressed bytes.
    """
    try:
        if limit is None:
            return gzip.decompress(data)
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and CRC trailer
        out = stream.decompress(data, limit + 1)
        if len(out) > limit:
            raise IdxError(f"{name}: decompresses to more than {limit} bytes, far more than any "
                           f"MNIST file; {_FIX}")
        if not stream.eof:
            raise EOFError("the gzip stream ends before its end marker")
        return out
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise IdxError(
            f"{name}: corrupt or truncated gzip data ({error}); {_FIX}"
        ) from error


def parse_idx(raw, name: str = "<bytes>", ndim: int | None = None):
    """Parse the bytes of an (uncompressed) unsigned-byte IDX file.

    Parameters
    ----------
    raw : bytes, bytearray or memoryview
        The whole file: header followed by the data bytes.
    name : str
        What to call the data in error messages (usually the file path).
    ndim : int, optional
        The number of dimensions the caller expects (MNIST: 3 for images, 1 for labels); a
        header saying otherwise is refused before its sizes are read.

    Returns
    -------
    numpy.ndarray of uint8, shape given by the header
        E.g. ``(60000, 28, 28)`` for MNIST's training images, ``(60000,)`` for its labels.
        A fresh, writable host array (it does not share memory with ``raw``).

    Raises
    ------
    IdxError
        Bad magic number, unsupported type code, 0 or more than 4 dimensions, negative sizes,
        or a length that differs from ``4 + 4*D + prod(sizes)`` (truncated / trailing bytes).
    """
    raw, expected_ndim = memoryview(raw).cast("B"), ndim
    found = len(raw)
    if found < 4:
        raise IdxError(
            f"{name}: expected at least the 4-byte IDX magic number, found {found} bytes; "
            f"the file is truncated or not an IDX file; {_FIX}"
        )
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        magic = int.from_bytes(raw[:4], "big")
        hint = (" (it looks gzip-compressed: give it a .gz name or decompress it)"
                if bytes(raw[:2]) == GZIP_MAGIC else "")
        raise IdxError(
            f"{name}: bad magic number 0x{magic:08X}{hint}; an IDX file starts with two zero "
            f"bytes, a type code and the number of dimensions (MNIST: 0x00000803 for images, "
            f"0x00000801 for labels); {_FIX}"
        )
    if type_code != 0x08:
        kind = TYPE_CODES.get(type_code, "unknown")
        raise IdxError(
            f"{name}: IDX type code 0x{type_code:02X} ({kind}) is not supported; only "
            f"unsigned-byte IDX files (type code 0x08, as MNIST uses) can be read; "
            f"if this should be an MNIST file, {_FIX}"
        )
    if not 1 <= ndim <= MAX_DIMS:
        raise IdxError(
            f"{name}: IDX header says {ndim} dimensions, expected 1 to {MAX_DIMS} "
            f"(MNIST: 3 for images, 1 for labels); {_FIX}"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise IdxError(
            f"{name}: the magic number 0x{int.from_bytes(raw[:4], 'big'):08X} says {ndim} "
            f"dimension(s), expected {expected_ndim} (MNIST: 0x00000803 for images, 0x00000801 "
            f"for labels); is another file stored under this name? {_FIX}"
        )
    header = 4 + 4 * ndim
    if found < header:
        raise IdxError(
            f"{name}: expected a {header}-byte IDX header ({ndim} dimensions), found only "
            f"{found} bytes; the file is truncated; {_FIX}"
        )
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if any(size < 0 for size in dims):
        raise IdxError(f"{name}: IDX header has negative dimension sizes {dims}; {_FIX}")
    count = math.prod(dims)
    expected = header + count
    if found != expected:
        problem = (f"the file is truncated ({expected - found} bytes missing)" if found < expected
                   else f"the file has {found - expected} trailing bytes")
        raise IdxError(
            f"{name}: expected {expected} bytes ({header}-byte header + "
            f"{' x '.join(map(str, dims))} = {count} data bytes), found {found}; "
            f"{problem}; {_FIX}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims).copy()


def read_idx(path: str | os.PathLike, ndim: int | None = None):
    """Read an unsigned-byte IDX file, raw or gzipped, into a host ``uint8`` array.

    The file is decompressed when its name ends in ``.gz`` or its bytes start with the gzip
    magic ``1f 8b`` (an IDX file starts with two zero bytes, so the two never clash).

    Parameters
    ----------
    path : str or os.PathLike
        E.g. ``data/mnist/train-images-idx3-ubyte.gz``.
    ndim : int, optional
        The expected number of dimensions (see :func:`parse_idx`).

    Returns
    -------
    numpy.ndarray of uint8, shape given by the header
        See :func:`parse_idx`.

    Raises
    ------
    IdxError
        Corrupt gzip data or an invalid IDX file (see :func:`parse_idx`); the message names
        ``path``.
    FileNotFoundError
        ``path`` does not exist.

    Notes
    -----
    Neither the file nor its decompressed bytes may exceed :data:`MAX_FILE_BYTES` (the limit
    of downloads, :mod:`minibern.data.fetch`): a decompression bomb is refused, never held.
    """
    path = Path(path)
    data = read_limited(path)
    if path.name.endswith(".gz") or data[:2] == GZIP_MAGIC:
        data = gunzip(data, str(path), limit=MAX_FILE_BYTES)
    return parse_idx(data, str(path), ndim)


def read_limited(path: Path) -> bytes:
    """The bytes of ``path``; IdxError if it has more than :data:`MAX_FILE_BYTES`."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise IdxError(f"{path}: {size} bytes, more than the {MAX_FILE_BYTES} any MNIST file "
                       f"has; {_FIX}")
    return path.read_bytes()
