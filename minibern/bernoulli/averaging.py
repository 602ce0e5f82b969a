r"""Visit averages of the θ-gradient: what θ steps on (docs/derivations/convergence.md, §2).

Every visit k of gate i yields an unbiased estimate :math:`\hat g_{i,k}` of the per-example
gradient :math:`g_i = (\Delta_i + \kappa_i)/N` (E10). θ steps on the average

.. math::
    \bar g_{i,k} = \bar g_{i,k-1} + \beta_k(\hat g_{i,k} - \bar g_{i,k-1}),\qquad
    \beta_k = \max(1/k,\ 1/W)                                                       \tag{C3}

— the running mean over the first W visits, then an exponential average over about the last
2W − 1 — whose variance :math:`\sigma_i^2/n_k`, :math:`n_k = \min(k, 2W - 1)` (C4), is
estimated from the running variance (C5). The arrays live in the gate layer's
:class:`~minibern.bernoulli.state.GateState` (``visits``, ``mean``, ``var``: host, (n,)).
"""
from __future__ import annotations

from minibern import backend as B

np = B.host


def check_window(window) -> int:
    """W as a positive int, or ValueError naming the fix."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"average_visits must be a positive integer, got {window!r}; use e.g. "
                         "20 (1: θ steps on the last estimate alone)")
    return int(window)


def update_average(state, grad, visited, window: int) -> None:
    """Fold ``grad[visited]`` (host (n,), bool (n,)) into the state's averages in place."""
    state.visits[visited] += 1
    beta = np.maximum(1.0 / state.visits[visited], 1.0 / window)  # (C3)
    diff = grad[visited] - state.mean[visited]
    state.mean[visited] += beta * diff  # (C3)
    state.var[visited] = (1.0 - beta) * (state.var[visited] + beta * diff ** 2)  # (C5)


def standard_error(state, window: int):
    r""":math:`s_k = \sqrt{\hat\sigma^2/n_k}`, :math:`n_k = \min(k, 2W - 1)` (C4)–(C5), (n,)."""
    n_eff = np.maximum(np.minimum(state.visits, 2 * window - 1), 1)
    return np.sqrt(state.var / n_eff)
