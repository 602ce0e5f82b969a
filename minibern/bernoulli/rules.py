r"""The snap and prune conditions on θ, as pure functions of host arrays.

The θ step (B20)–(B22) alone leaves noisy θ hovering near 0 or 1; two practical rules decide
them (docs/derivations/estimators.md, "The θ step"; docs/derivations/pruning.md, (P6)):

*keep*
    θ ≥ 1 − tol for ``keep_patience`` consecutive updates snaps θ to exactly 1, only from epoch
    ``keep_after`` on (a warm-up);
*zero*
    θ ≤ tol for ``zero_patience`` consecutive visits snaps θ to exactly 0;
*certify* (C8)–(C10), docs/derivations/convergence.md
    a gate the projected step has put on a vertex is frozen there once a time-uniform sign
    test of its visit average agrees with the vertex at level α;
*prune* (P6)
    θ exactly 0 for ``prune_patience`` consecutive visits (a frozen gate counts one every step)
    removes the unit from the arrays.

Each condition is a *streak*: a counter per gate that grows by one at every observation where
the condition holds and falls back to 0 where it does not. The hook
(:class:`minibern.bernoulli.hook.GateTrainer`) keeps the counters in
:class:`minibern.bernoulli.state.GateState` and applies what these functions return.
"""
from __future__ import annotations

import math

from minibern import backend as B

np = B.host


def streak(condition, run):
    """The counters after one observation: ``run + 1`` where ``condition`` holds, else 0.

    Parameters
    ----------
    condition : host bool array (k,)
    run : host int64 array (k,)
        The counters before the observation (not modified).
    """
    return np.where(condition, run + 1, 0)


def keep_rule(high_run, patience: int, clock: float, after: float):
    """Gates to snap to θ = 1: ``high_run ≥ patience``, or None before epoch ``after``."""
    return high_run >= patience if clock >= after else None


def zero_rule(low_run, patience: int):
    """Gates to snap to θ = 0: ``low_run ≥ patience``."""
    return low_run >= patience


def prune_rule(zero_run, patience: int):
    """Gates whose units may leave the arrays: θ exactly 0 for ``patience`` visits (P6)."""
    return zero_run >= patience


def sequential_threshold(visits, alpha: float):
    r""":math:`z_k = \sqrt{2\ln(\pi^2 k^2/(6\alpha))}` (C9): a zero-mean Gaussian average crosses
    it at *some* visit k with probability at most α (the Chernoff tail at each k, summed:
    :math:`\sum_k 6\alpha/(\pi^2 k^2) = \alpha`). ``visits``: host int array; returns float64."""
    k = np.maximum(np.asarray(visits, dtype=np.float64), 1.0)
    return np.sqrt(2.0 * np.log(math.pi ** 2 * k ** 2 / (6.0 * alpha)))  # (C9)


def certify_rule(theta, mean, standard_error, visits, alpha: float, min_visits: int,
                 at_one: bool = False):
    """Gates on a vertex whose sign test (C10) agrees with it, after ``min_visits`` visits:
    θ = 0 with ḡ − z_k s_k > 0 and, only if ``at_one``, θ = 1 with ḡ + z_k s_k < 0 (C10′)
    (host arrays (n,))."""
    bound = sequential_threshold(visits, alpha) * standard_error
    certified = (theta == 0.0) & (mean - bound > 0.0)  # (C10)
    if at_one:
        certified |= (theta == 1.0) & (mean + bound < 0.0)  # (C10)
    return (visits >= min_visits) & certified
