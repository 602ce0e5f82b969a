"""Naive loop implementations: the test oracles, written for clarity, not speed (host NumPy)."""
import numpy as np


def dense(x, W, b):
    n, d = x.shape
    m = W.shape[1]
    y = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            y[i, j] = sum(x[i, k] * W[k, j] for k in range(d)) + b[j]
    return y


def conv2d(x, W, b, stride, pad):
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    y = np.zeros((n, f, oh, ow))
    for i in range(n):
        for fi in range(f):
            for oy in range(oh):
                for ox in range(ow):
                    total = b[fi]
                    for ci in range(c):
                        for ky in range(kh):
                            for kx in range(kw):
                                total += xp[i, ci, oy * stride + ky, ox * stride + kx] * W[fi, ci, ky, kx]
                    y[i, fi, oy, ox] = total
    return y


def maxpool2d(x, size, stride):
    n, c, h, w = x.shape
    oh = (h - size) // stride + 1
    ow = (w - size) // stride + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(n):
        for ci in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    window = x[i, ci, oy * stride:oy * stride + size, ox * stride:ox * stride + size]
                    y[i, ci, oy, ox] = max(window.ravel())
    return y


def maxpool2d_backward(x, dout, size, stride):
    """The gradient of max pooling: each window's dout goes to its *first* maximal entry."""
    n, c, oh, ow = dout.shape
    dx = np.zeros(x.shape)
    for i in range(n):
        for ci in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    window = x[i, ci, oy * stride:oy * stride + size, ox * stride:ox * stride + size]
                    j = int(np.argmax(window.ravel()))  # argmax returns the first maximum
                    dx[i, ci, oy * stride + j // size, ox * stride + j % size] += dout[i, ci, oy, ox]
    return dx


def relu(x):
    return np.array([v if v > 0 else 0.0 for v in x.ravel()]).reshape(x.shape)


def softmax_cross_entropy(logits, labels):
    """Mean loss with exact (math module) arithmetic per row."""
    import math
    total = 0.0
    for row, label in zip(logits, labels):
        m = max(row)
        total += m + math.log(sum(math.exp(v - m) for v in row)) - row[label]
    return total / len(labels)


def removal_linear_change(change, rows, cols, visit, W, consumer, stride=1, pad=0):
    """(E5) for conv gates, the loop over the visited gates the removal estimator once ran:
    the pairs of each gate s at a time, their flipped planes δ (P_s, H, W) against gate s's
    H·W block of dense rows (``consumer="dense"``, W (n·H·W, M)) or its input-channel slice of
    every filter (``consumer="conv"``, W (F, n, KH, KW))."""
    n_pairs, (height, width) = len(rows), change.shape[2:]
    result = None
    for s in np.unique(cols):
        pick = np.flatnonzero(cols == s)
        planes = change[rows[pick], s]
        if consumer == "dense":
            block = W.reshape(-1, height * width, W.shape[1])[visit[s]]
            part = planes.reshape(len(pick), -1) @ block
        else:
            w_slice = W[:, visit[s]:visit[s] + 1]
            part = conv2d(planes[:, None], w_slice, np.zeros(W.shape[0]), stride, pad)
        if result is None:
            result = np.zeros((n_pairs,) + part.shape[1:])
        result[pick] = part
    return result
