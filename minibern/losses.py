r"""Losses. Derivation: docs/derivations/layers.md, (L18)–(L19).

Notation: logits :math:`z \in \mathbb R^{N\times K}`, integer labels :math:`y_n \in \{0..K-1\}`.
"""
from __future__ import annotations

from minibern import backend as B


def softmax_cross_entropy(logits, labels, *, check: bool = True):
    r"""Mean softmax cross-entropy and its gradient with respect to the logits.

    Parameters
    ----------
    logits : float array (N, K)
    labels : integer array (N,), on the same backend, values in 0..K-1
    check : bool
        Validate the label range (one small device→host transfer); default True.

    Returns
    -------
    loss : 0-d array
        :math:`\frac1N \sum_n \left[\operatorname{logsumexp}(z_n) - z_{n,y_n}\right]`.
    dlogits : array (N, K)
        :math:`\partial\,\text{loss}/\partial z`.

    Notes
    -----
    Stable for any finite logits: with :math:`m_n = \max_k z_{nk}`,

    .. math::
        \ell = \frac1N \sum_n \Big[ m_n + \log\sum_k e^{z_{nk}-m_n} - z_{n,y_n} \Big]  \tag{L18}

        \frac{\partial \ell}{\partial z_{nk}} = \frac1N\big(\operatorname{softmax}(z_n)_k
            - \mathbb 1[k = y_n]\big)                                                  \tag{L19}

    Every exponent is ≤ 0, so nothing overflows; the log-sum is ≥ 0, so nothing underflows to
    log 0.
    """
    B.require_float_array(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if not B.is_array(labels) or labels.dtype.kind not in "iu":
        raise TypeError(
            f"labels must be an integer array (N,) on the current backend, got "
            f"{getattr(labels, 'dtype', type(labels).__name__)}; use backend.asarray(labels)"
        )
    n, k = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    xp = B.get_array_module(logits, labels)
    if check and n:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= k:
            raise ValueError(f"labels must lie in 0..{k - 1} for {k} logits, found {low}..{high}")
    rows = xp.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    loss = -log_probs[rows, labels].mean()  # (L18)
    dlogits = xp.exp(log_probs)
    dlogits[rows, labels] -= 1
    dlogits /= n  # (L19)
    return loss, dlogits


def per_example_cross_entropy(logits, labels, *, classes_first: bool = False):
    r"""The per-example losses :math:`\ell_n` of (L18) as an array (N,) (no gradient, no checks).

    ``logits`` is (N, K), or (K, N) with ``classes_first=True`` (what ``W.T @ h.T`` gives).
    The work runs classes-first either way: every reduction over the K classes is then K − 1
    elementwise operations on contiguous rows of N, where NumPy's reduction over a short inner
    axis of K is slower (``benchmarks/bench_kernels.py`` times both).
    """
    xp = B.get_array_module(logits, labels)
    shifted = xp.array(logits if classes_first else logits.T, order="C")  # (K, N), a copy
    n = shifted.shape[1]
    top = shifted.max(axis=0)
    shifted -= top
    label_shifted = shifted.ravel()[labels * n + xp.arange(n)]
    xp.exp(shifted, out=shifted)
    return xp.log(shifted.sum(axis=0)) - label_shifted  # (L18) without the mean


def accuracy(logits, labels) -> float:
    """Fraction of rows whose arg-max logit equals the label (a host float)."""
    return B.to_float((logits.argmax(axis=1) == labels).mean())
