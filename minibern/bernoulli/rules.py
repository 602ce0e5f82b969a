r"""The decision and prune conditions on θ, as functions of host arrays.

The θ step (B20)–(B22) puts gates on the vertices θ ∈ {0, 1} of the box; two rules act on
what it decided (docs/derivations/convergence.md, (C8)–(C10); docs/derivations/pruning.md, (P6)):

*decide* (C8)–(C10), :func:`decide`
    a gate the projected step has put on a vertex is frozen there once a time-uniform sign
    test of its visit average agrees with the vertex at level α;
*prune* (P6), :func:`prune_rule`, applied by
:class:`minibern.bernoulli.prune_trigger.PruningTrigger`
    θ exactly 0 for ``prune_patience`` consecutive visits (a frozen gate counts one every step)
    removes the unit from the arrays.

The prune condition is a *streak*: a counter per gate that grows by one at every observation
where the condition holds and falls back to 0 where it does not. The counters and flags live
in :class:`minibern.bernoulli.state.GateState`.
"""
from __future__ import annotations

import math

from minibern import backend as B
from minibern.bernoulli.averaging import standard_error

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
        certified |= (theta == 1.0) & (mean + bound < 0.0)  # (C10′)
    return (visits >= min_visits) & certified


def decide(theta, state, moved, config) -> None:
    """The decision rule (C8)–(C10) after a θ step: the gates just ``moved`` (host bool (n,))
    that :func:`certify_rule` certifies are frozen and marked certified in ``state`` (a
    :class:`~minibern.bernoulli.state.GateState`); nothing when ``config.decide_alpha`` is 0."""
    if not config.decide_alpha:
        return
    certified = moved & certify_rule(
        theta, state.mean, standard_error(state, config.average_visits), state.visits,
        config.decide_alpha, config.decide_min_visits, config.decide_at_one)  # (C10), (C10′)
    state.frozen |= certified
    state.certified |= certified
