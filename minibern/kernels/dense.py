"""The fast Dense kernel: (L1)–(L4) of :class:`minibern.layers.Dense`, the products split over
the kernel threads (:mod:`minibern.kernels.threads`).

Forward and the input gradient split by blocks of examples (rows), the weight gradient by
blocks of its own columns, so that each thread keeps whole sums over the examples. Outputs are
written in place (no second (N, M) array for the bias). With one kernel thread (the default)
every product runs whole, on NumPy's BLAS.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.kernels import threads as T


def forward(x, weight, bias):
    """``y = x W + b`` (L1): x (N, D), W (D, M), b (M,); y (N, M)."""
    xp = B.get_array_module(x, weight)
    y = xp.empty((x.shape[0], weight.shape[1]), dtype=xp.result_type(x.dtype, weight.dtype))

    def output_rows(n0: int, n1: int) -> None:
        xp.matmul(x[n0:n1], weight, out=y[n0:n1])  # (L1)
        y[n0:n1] += bias  # in place: no second (N, M) array

    T.over_blocks(output_rows, x.shape[0], (x.size + weight.size + y.size) * y.itemsize, xp,
                  products=True)
    return y


def backward(x, weight, dout, input_grad: bool):
    """``(∂L/∂W, ∂L/∂b, ∂L/∂x)`` by (L2)–(L4); ∂L/∂x is None unless ``input_grad``."""
    xp = B.get_array_module(dout, x)
    grad_w = xp.empty(weight.shape, dtype=xp.result_type(x.dtype, dout.dtype))
    nbytes = (x.size + dout.size + grad_w.size) * grad_w.itemsize

    def weight_columns(m0: int, m1: int) -> None:  # each keeps the whole sum over examples
        xp.matmul(x.T, dout[:, m0:m1], out=grad_w[:, m0:m1])  # (L2)

    T.over_blocks(weight_columns, weight.shape[1], nbytes, xp, products=True)
    grad_b = dout.sum(axis=0)  # (L3)
    if not input_grad:
        return grad_w, grad_b, None
    dx = xp.empty(x.shape, dtype=xp.result_type(dout.dtype, weight.dtype))

    def input_rows(n0: int, n1: int) -> None:
        xp.matmul(dout[n0:n1], weight.T, out=dx[n0:n1])  # (L4)

    T.over_blocks(input_rows, x.shape[0], nbytes, xp, products=True)
    return grad_w, grad_b, dx


__all__ = ["backward", "forward"]
