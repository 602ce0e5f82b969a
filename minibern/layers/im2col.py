r"""im2col and its adjoint col2im. Derivation: docs/derivations/layers.md, (L7), (L12)–(L14).

Notation: N examples, C channels, H×W input, KH×KW kernel, stride s, zero padding p,
output OH×OW with

.. math:: OH = \left\lfloor \frac{H + 2p - KH}{s} \right\rfloor + 1,\quad
          OW = \left\lfloor \frac{W + 2p - KW}{s} \right\rfloor + 1.        \tag{L14}

**im2col** (:func:`im2col`). The column matrix has shape ``(C*KH*KW, N*OH*OW)``, rows in
(c, ky, kx) order and columns in (n, oy, ox) order:

.. math:: \text{col}[(c,k_y,k_x),\,(n,o_y,o_x)] = x^{pad}[n,\,c,\,o_y s + k_y,\,o_x s + k_x]   \tag{L7}

so that a convolution is one GEMM ``W.reshape(F, C*KH*KW) @ col``. It is a loop over the
KH·KW kernel offsets, each copying one strided slice of the padded input (the same source runs
on NumPy and CuPy; no scatter-add).

**Memory.** The matrix takes ``N·OH·OW·C·KH·KW·itemsize`` bytes — for
LeNet-5's second conv (C=20, 5×5, 8×8 output) 128 KB per float32 example, 12.8 MB for a batch
of 100.

**col2im** (:func:`col2im`) is the adjoint (transpose) of the linear map im2col: every column
entry is added back to the input pixel it was copied from, one ``+=`` of a strided slice per
kernel offset,

.. math:: \langle \text{im2col}(x), Y\rangle = \langle x, \text{col2im}(Y)\rangle.   \tag{L13}

The fast Conv2D kernel's versions (written into views of a larger buffer, a channels-last
layout (L7b), split over threads) are in :mod:`minibern.kernels.im2col`.
"""
from __future__ import annotations

from minibern import backend as B


def conv_output_size(size: int, kernel: int, stride: int, pad: int, what: str = "conv") -> int:
    """Output length along one axis, (L14); a ValueError if it is not positive."""
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"{what}: input size {size} with kernel {kernel}, stride {stride}, pad {pad} gives "
            f"output size {out} < 1; use a larger input, a smaller kernel, or more padding"
        )
    return out


def im2col(x, kernel, stride: int = 1, pad: int = 0):
    """Unfold (N, C, H, W) patches into a ``(C*KH*KW, N*OH*OW)`` matrix, (L7).

    Parameters
    ----------
    x : array (N, C, H, W)
    kernel : (KH, KW)
    stride, pad : int

    Returns
    -------
    col : array (C*KH*KW, N*OH*OW), a new array of x's dtype.
    """
    kh, kw = kernel
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(w, kw, stride, pad)
    xp = B.get_array_module(x)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # zeros around H and W
    col = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = x_pad[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            col[:, ky, kx] = window.transpose(1, 0, 2, 3)  # (L7), (N, C, ..) to (C, N, ..)
    return col.reshape(c * kh * kw, n * oh * ow)


def col2im(col, x_shape, kernel, stride: int = 1, pad: int = 0):
    """Adjoint of :func:`im2col`: fold a ``(C*KH*KW, N*OH*OW)`` matrix back to (N, C, H, W),
    (L12). Overlapping patches add up; ``col`` is not modified."""
    kh, kw = kernel
    n, c, h, w = x_shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(w, kw, stride, pad)
    if tuple(col.shape) != (c * kh * kw, n * oh * ow):
        raise ValueError(f"col2im: col has shape {tuple(col.shape)}, expected "
                         f"{(c * kh * kw, n * oh * ow)} for x_shape {tuple(x_shape)}")
    xp = B.get_array_module(col)
    col6 = col.reshape(c, kh, kw, n, oh, ow)
    dx_pad = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype)
    for ky in range(kh):
        for kx in range(kw):
            window = dx_pad[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            window += col6[:, ky, kx].transpose(1, 0, 2, 3)  # (L12)
    return dx_pad[:, :, pad:pad + h, pad:pad + w]
