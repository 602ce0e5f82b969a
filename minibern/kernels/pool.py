r"""The fast MaxPool2D kernel: (L15)–(L16) of :class:`minibern.layers.MaxPool2D`, on contiguous
planes, branch-free, split over the kernel threads. Derivation: docs/derivations/layers.md,
"Max pooling". It gives exactly the reference's numbers (comparisons and copies only).

**Forward.** An elementwise maximum over the k² strided views (never a reshape and a
``max(axis=...)`` reduction, which is many times slower). When the windows do not overlap the
views are first copied into k² contiguous planes, block by block of examples (one pass over
x, at most :data:`PLANES_BYTES` of scratch per kernel thread), so every comparison runs on
contiguous memory. :math:`j^*` (one byte per output for k² < 128) is the last offset whose view
was strictly larger than the running maximum, updated branch-free as
``max(j*, j·1[view_j > max])``.

**Backward** writes ``dout · 1[j* = j]`` into each of the k² strided views of dx; when the
windows tile the input exactly (s = k, H and W multiples of k, the LeNet case) every input is
written once and dx needs no zero-fill and no ``+=``.

Blocks of examples run on the kernel threads (:mod:`minibern.kernels.threads`).
"""
from __future__ import annotations

from minibern import backend as B
from minibern.kernels import threads as T

#: Scratch for the contiguous copies of the window views: examples are pooled in blocks whose
#: k² planes take at most this many bytes (always at least one example), per kernel thread.
PLANES_BYTES = 4 << 20


def forward(layer, x, oh: int, ow: int):
    """(L15) and the offsets j* of (L16): y and argmax, both (N, C, OH, OW)."""
    xp = B.get_array_module(x)
    n, c, h, w = x.shape
    if layer.size == 1:
        return x[next(layer._views(oh, ow))[1]].copy(), xp.zeros((n, c, oh, ow), dtype="int8")
    k2 = layer.size ** 2
    index_type = xp.int8 if k2 < 128 else xp.int32
    out = xp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = xp.empty((n, c, oh, ow), dtype=index_type)
    planes = layer.stride >= layer.size
    if planes:
        # windows do not overlap: copy the k² strided views of a block of examples into
        # contiguous planes (one pass over x; at most PLANES_BYTES of scratch per thread) so
        # every comparison runs on contiguous memory
        step = max(1, PLANES_BYTES // (k2 * c * oh * ow * x.dtype.itemsize))
    else:
        step = n

    def pool(start: int, stop: int) -> None:
        for b0 in range(start, stop, step):
            b1 = min(b0 + step, stop)
            views = [x[b0:b1][index] for _, index in layer._views(oh, ow)]
            if planes:
                views = xp.stack(views)
            _running_max(xp, views, out[b0:b1], argmax[b0:b1])

    T.over_blocks(pool, n, 2 * n * c * h * w * x.dtype.itemsize, xp)
    return out, argmax


def _running_max(xp, views, out, argmax) -> None:
    """out = max_j views[j] (L15) and argmax = the first j attaining it (L16)."""
    better = xp.greater(views[1], views[0])  # strict: a tie keeps the first offset
    xp.maximum(views[0], views[1], out=out)  # (L15)
    argmax[...] = better
    step = xp.empty_like(argmax)
    for j in range(2, len(views)):
        xp.greater(views[j], out, out=better)
        xp.maximum(out, views[j], out=out)  # (L15)
        # j* = the last j that beat the running maximum: j grows, so a max of j·better is
        # that index (branch-free; a masked copyto is several times slower here)
        xp.multiply(better, argmax.dtype.type(j), out=step)
        xp.maximum(argmax, step, out=argmax)


def backward(layer, dout, argmax, x_shape):
    """(L16): dx of shape ``x_shape`` from dout and forward's argmax."""
    xp = B.get_array_module(dout, argmax)
    n, c, h, w = x_shape
    oh, ow = argmax.shape[2:]
    k, s = layer.size, layer.stride
    tiled = s == k and h == k * oh and w == k * ow
    dx = xp.empty(x_shape, dtype=dout.dtype) if tiled else xp.zeros(x_shape, dtype=dout.dtype)

    def unpool(b0: int, b1: int) -> None:
        grad, block_argmax, dx_block = dout[b0:b1], argmax[b0:b1], dx[b0:b1]
        for j, index in layer._views(oh, ow):
            if tiled:  # every input sits in exactly one window: write, do not add
                xp.multiply(grad, block_argmax == j, out=dx_block[index])  # (L16)
            else:
                dx_block[index] += grad * (block_argmax == j)  # (L16), overlapping or ragged

    T.over_blocks(unpool, n, 2 * n * c * h * w * dout.dtype.itemsize, xp)
    return dx


__all__ = ["PLANES_BYTES", "backward", "forward"]
