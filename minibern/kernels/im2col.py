r"""im2col and col2im for the fast Conv2D kernel: two memory layouts, written into views of
a larger buffer, split over the kernel threads. Derivation: docs/derivations/layers.md, (L7),
(L7b), (L12)–(L14); the reference (a plain loop over the KH·KW offsets) is
:mod:`minibern.layers.im2col`, and this module's channel-major pair gives exactly its numbers.

**Channel-major layout** (:func:`im2col`, :func:`col2im`). As the reference, (L7): the loop
over the KH·KW kernel offsets, each copying one strided slice of the padded input; every copy
runs along an output row (OW numbers). ``out=`` takes any view of shape
(C, KH, KW, N, OH, OW), e.g. the block of examples n0..n1 of a larger column matrix, and
col2im also takes its columns as such a 6-D view.

**Channels-last layout** (:func:`im2col_rows`, :func:`col2im_rows`). The transpose, with the
channel index last: shape ``(N*OH*OW, KH*KW*C)``, rows (n, oy, ox), columns (ky, kx, c),

.. math:: \text{col}_r[(n,o_y,o_x),\,(k_y,k_x,c)] = x^{pad}[n,\,c,\,o_y s + k_y,\,o_x s + k_x]  \tag{L7b}

built from the input transposed once to (N, H, W, C): one row of a window over all channels,
``x_nhwc[n, oy*s + ky, ox*s : ox*s + KW, :]``, is then KW·C contiguous numbers, and the whole
matrix is *one* strided copy of a sliding-window view. This is the faster layout whenever
KW·C ≥ OW (LeNet-5's conv2: 100 numbers per run instead of 8); the channel-major one wins
when C is small (conv1, C = 1: runs of 24 instead of 5). :mod:`minibern.kernels.conv` picks
per layer; the arithmetic is the same matrix product either way. Its col2im adds one slice per
(ky, ox), each (N, OH, KW·C) blocks whose rows are contiguous on both sides.

Every function splits its examples over the kernel threads (:mod:`minibern.kernels.threads`):
pure copies and adds per example, so the same bits for every thread count.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.kernels import threads as T


def col_bytes(n: int, c: int, kh: int, kw: int, oh: int, ow: int, itemsize: int) -> int:
    """Size in bytes of the im2col buffer for ``n`` examples: N·OH·OW·C·KH·KW·itemsize."""
    return n * oh * ow * c * kh * kw * itemsize


def pad_input(x, pad: int):
    """Zero-pad the two spatial axes of an (N, C, H, W) array by ``pad`` (no copy if 0)."""
    if pad == 0:
        return x
    xp = B.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def output_size(x_shape, kernel, stride: int, pad: int) -> tuple[int, int]:
    """(OH, OW) by (L14). Unchecked: the layers check their shapes with
    :func:`minibern.layers.conv_output_size` first."""
    (h, w), (kh, kw) = x_shape[2:], kernel
    return (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1


def _destination(out, shape, dtype, what: str):
    """``out`` checked against the expected 6-D shape and dtype (any strides: a block view)."""
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{what}: out has shape {tuple(out.shape)} and dtype {out.dtype}, "
                         f"expected {tuple(shape)} and {dtype}")
    return out


def im2col(x, kernel, stride: int = 1, pad: int = 0, out=None):
    """Unfold (N, C, H, W) patches into a ``(C*KH*KW, N*OH*OW)`` matrix, (L7).

    Parameters
    ----------
    x : array (N, C, H, W)
    kernel : (KH, KW)
    stride, pad : int
    out : array (C, KH, KW, N, OH, OW), optional
        Where to write the columns instead of a new array — any view with that shape, e.g.
        ``big.reshape(C, KH, KW, N_total, OH, OW)[:, :, :, n0:n1]``, the block of examples
        n0..n1 of a larger column matrix (the fast Conv2D kernel fills its
        buffer block by block).

    Returns
    -------
    col : array (C*KH*KW, N*OH*OW), a new C-contiguous array of x's dtype; or ``out``.

    Blocks of examples are unfolded on the kernel threads (:mod:`minibern.kernels.threads`).
    """
    kh, kw = kernel
    n, c, h, w = x.shape
    oh, ow = output_size(x.shape, kernel, stride, pad)
    xp = B.get_array_module(x)
    shape = (c, kh, kw, n, oh, ow)
    col = xp.empty(shape, dtype=x.dtype) if out is None else \
        _destination(out, shape, x.dtype, "im2col")

    def unfold(b0: int, b1: int) -> None:
        x_pad = pad_input(x[b0:b1], pad)
        for ky in range(kh):
            y_end = ky + stride * (oh - 1) + 1
            for kx in range(kw):
                x_end = kx + stride * (ow - 1) + 1
                col[:, ky, kx, b0:b1] = \
                    x_pad[:, :, ky:y_end:stride, kx:x_end:stride].transpose(1, 0, 2, 3)  # (L7)

    T.over_blocks(unfold, n, col_bytes(n, c, kh, kw, oh, ow, x.dtype.itemsize), xp)
    return col.reshape(c * kh * kw, n * oh * ow) if out is None else out


def col2im(col, x_shape, kernel, stride: int = 1, pad: int = 0, out=None):
    """Adjoint of :func:`im2col`: fold a ``(C*KH*KW, N*OH*OW)`` matrix back to (N, C, H, W), (L12).

    ``col`` may also be given as its 6-D view (C, KH, KW, N, OH, OW), with any strides (e.g.
    an (N, C·KH·KW, OH·OW) array reshaped and transposed, as the fast Conv2D kernel
    keeps its columns). Overlapping patches add up. Returns a new array, or writes into ``out``
    (an (N, C, H, W) array or view) and returns it; ``col`` is not modified. Blocks of examples
    are folded on the kernel threads (:mod:`minibern.kernels.threads`).
    """
    kh, kw = kernel
    n, c, h, w = x_shape
    oh, ow = output_size(x_shape, kernel, stride, pad)
    if tuple(col.shape) not in ((c * kh * kw, n * oh * ow), (c, kh, kw, n, oh, ow)):
        raise ValueError(f"col2im: col has shape {tuple(col.shape)}, expected "
                         f"{(c * kh * kw, n * oh * ow)} for x_shape {tuple(x_shape)}")
    xp = B.get_array_module(col)
    col6 = col.reshape(c, kh, kw, n, oh, ow) if col.ndim == 2 else col
    dx = xp.empty(tuple(x_shape), dtype=col.dtype) if out is None else \
        _destination(out, x_shape, col.dtype, "col2im")

    def fold(b0: int, b1: int) -> None:
        m = b1 - b0
        if pad == 0:  # accumulate straight into the destination
            dx_pad = dx[b0:b1]
            dx_pad[...] = 0
        else:
            dx_pad = xp.zeros((m, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype)
        for ky in range(kh):
            y_end = ky + stride * (oh - 1) + 1
            for kx in range(kw):
                x_end = kx + stride * (ow - 1) + 1
                dx_pad[:, :, ky:y_end:stride, kx:x_end:stride] += \
                    col6[:, ky, kx, b0:b1].transpose(1, 0, 2, 3)  # (L12)
        if pad:
            dx[b0:b1] = dx_pad[:, :, pad:pad + h, pad:pad + w]

    T.over_blocks(fold, n, col_bytes(n, c, kh, kw, oh, ow, col.dtype.itemsize), xp)
    return dx


def _nhwc_padded(x, pad: int):
    """(N, H+2p, W+2p, C): x transposed to channels-last and zero-padded, in one copy."""
    xp = B.get_array_module(x)
    n, c, h, w = x.shape
    if pad == 0:
        return xp.ascontiguousarray(x.transpose(0, 2, 3, 1))
    x_h = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype)
    x_h[:, pad:pad + h, pad:pad + w, :] = x.transpose(0, 2, 3, 1)
    return x_h


def _sliding_windows(x_h, kh: int, kw: int):
    """Read-only view (N, H', W', C, KH, KW) of all KH×KW windows of an NHWC array, or None
    where the array module has no ``sliding_window_view`` (older CuPy)."""
    xp = B.get_array_module(x_h)
    tricks = getattr(getattr(xp, "lib", None), "stride_tricks", None)
    windows = getattr(tricks, "sliding_window_view", None)
    return None if windows is None else windows(x_h, (kh, kw), axis=(1, 2))


def im2col_rows(x, kernel, stride: int = 1, pad: int = 0, out=None):
    """Unfold (N, C, H, W) patches into the channels-last ``(N*OH*OW, KH*KW*C)`` matrix, (L7b).

    Parameters
    ----------
    x : array (N, C, H, W)
    kernel : (KH, KW)
    stride, pad : int
    out : array (N, OH, OW, KH, KW, C), optional
        Where to write the columns instead of a new array (any view with that shape, e.g. the
        rows of examples n0..n1 of a larger buffer).

    Returns
    -------
    col : array (N*OH*OW, KH*KW*C), a new C-contiguous array of x's dtype, rows (n, oy, ox),
        columns (ky, kx, c); or ``out``.

    Blocks of examples are unfolded on the kernel threads (:mod:`minibern.kernels.threads`).
    """
    kh, kw = kernel
    n, c, h, w = x.shape
    oh, ow = output_size(x.shape, kernel, stride, pad)
    xp = B.get_array_module(x)
    shape = (n, oh, ow, kh, kw, c)
    col = xp.empty(shape, dtype=x.dtype) if out is None else \
        _destination(out, shape, x.dtype, "im2col_rows")

    def unfold(b0: int, b1: int) -> None:
        x_h = _nhwc_padded(x[b0:b1], pad)
        windows = _sliding_windows(x_h, kh, kw)
        if windows is not None:  # one strided copy of the block's matrix (L7b)
            view = windows[:, :stride * (oh - 1) + 1:stride, :stride * (ow - 1) + 1:stride]
            col[b0:b1] = view.transpose(0, 1, 2, 4, 5, 3)
        else:
            for ky in range(kh):
                rows = slice(ky, ky + stride * (oh - 1) + 1, stride)
                for ox in range(ow):
                    col[b0:b1, :, ox, ky] = x_h[:, rows, ox * stride:ox * stride + kw]  # (L7b)

    T.over_blocks(unfold, n, col_bytes(n, c, kh, kw, oh, ow, x.dtype.itemsize), xp)
    return col.reshape(n * oh * ow, kh * kw * c) if out is None else out


def col2im_rows(col, x_shape, kernel, stride: int = 1, pad: int = 0, out=None):
    """Adjoint of :func:`im2col_rows`: fold an ``(N*OH*OW, KH*KW*C)`` matrix back to
    (N, C, H, W), (L12) in the channels-last layout.

    Overlapping patches add up. Returns a new C-contiguous array, or writes into ``out`` (an
    (N, C, H, W) array or view) and returns it; ``col`` is not modified. Blocks of examples
    are folded on the kernel threads (:mod:`minibern.kernels.threads`).
    """
    kh, kw = kernel
    n, c, h, w = x_shape
    oh, ow = output_size(x_shape, kernel, stride, pad)
    if tuple(col.shape) != (n * oh * ow, kh * kw * c):
        raise ValueError(f"col2im_rows: col has shape {tuple(col.shape)}, expected "
                         f"{(n * oh * ow, kh * kw * c)} for x_shape {tuple(x_shape)}")
    xp = B.get_array_module(col)
    col6 = col.reshape(n, oh, ow, kh, kw, c)
    dx = xp.empty(tuple(x_shape), dtype=col.dtype) if out is None else \
        _destination(out, x_shape, col.dtype, "col2im_rows")

    def fold(b0: int, b1: int) -> None:
        dx_h = xp.zeros((b1 - b0, h + 2 * pad, w + 2 * pad, c), dtype=col.dtype)
        for ky in range(kh):
            rows = slice(ky, ky + stride * (oh - 1) + 1, stride)
            for ox in range(ow):
                # the KW·C numbers of window row ky at output column ox, for every (n, oy) (L12)
                dx_h[:, rows, ox * stride:ox * stride + kw] += col6[b0:b1, :, ox, ky]
        dx[b0:b1] = dx_h[:, pad:pad + h, pad:pad + w].transpose(0, 3, 1, 2)

    T.over_blocks(fold, n, col_bytes(n, c, kh, kw, oh, ow, col.dtype.itemsize), xp)
    return dx
