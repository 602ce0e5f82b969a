r"""The consumer re-fitted for a removed unit: one gate layer's running Gram matrix and the
ridge coefficients that carry each unit's share by the others, (R1)–(R3), (R6).

Derivation: docs/derivations/compensated.md. With x_n = [a_n, 1] ∈ R^{n+1} the gate's input
(the layer's activations before the mask) and a constant,

.. math::
    G \leftarrow \rho\,G + \textstyle\sum_{n \in \text{batch}} x_n x_n^\top             \tag{R1}

    H = G_{\bar K\bar K} + \lambda\,\mathrm{diag}(1_K, 0),\quad
        \lambda = r\,\mathrm{tr}(G_{KK})/|K|,\quad P = H^{-1}                             \tag{R2}

over the regressors :math:`\bar K = K \cup \{1\}`, K the units with θ_j > 0. Column i of the
coefficient matrix C (n + 1, n) is the change of x that replaces unit i by its fit:

.. math::
    C_{\bar K, i} = -P_{:, i}/P_{ii}\ (i \in K),\qquad
    C_{\bar K, i} = P\,G_{\bar K, i},\ C_{ii} = -1\ (i \notin K)                        \tag{R3}

(the first is the Optimal-Brain-Surgeon identity for the ridge regression of a_i on the others,
C_ii = −1; the second the ridge regression of an off unit on K). A set L of units leaving
together is re-fitted jointly on the rest, :math:`\bar K' = \bar K \setminus L`:

.. math::
    B_L = -P_{\bar K' L}\,(P_{LL})^{-1}                                                \tag{R6}

G lives on the device (one (n+1)² product a step, in the activations' precision, summed into
float64), P and C are computed on the host every ``refresh`` steps (O(n³)), and C goes to the
device once per refresh. Between refreshes K stays as it was: a unit that went off since only
multiplies zeros in (R4), and the fold (R6) leaves it out with the Schur step of
:func:`joint_refit`.
"""
from __future__ import annotations

from minibern import backend as B

np = B.host

#: ρ of (R1): the Gram forgets a batch's share with a half-life of about 70 steps.
GRAM_DECAY = 0.99
#: r of (R2): the ridge relative to the units' mean squared activation.
RIDGE = 1e-3
#: Steps between recomputations of P and C (R2)–(R3).
REFRESH_EVERY = 50


def ridge_inverse(gram, regressors, ridge: float = RIDGE):
    """P of (R2) over the units where ``regressors`` (host bool (n,)) is True and the constant
    (always last): a host float64 array (|K| + 1, |K| + 1), and the indices K̄ into ``gram``."""
    index = np.append(np.flatnonzero(regressors), regressors.size)
    h = gram[np.ix_(index, index)]
    units = np.arange(index.size - 1)
    scale = np.trace(h)[()] - h[-1, -1]
    lam = ridge * (scale / units.size if units.size and scale > 0 else h[-1, -1])
    h[units, units] += lam  # (R2)
    return np.linalg.inv(h), index


def refit_coefficients(gram, p, index):
    """C of (R3), host float64 (n + 1, n), from the host Gram ``gram`` (n + 1, n + 1) and
    :func:`ridge_inverse`'s ``p`` over the regressors ``index`` (the constant last)."""
    n = gram.shape[0] - 1
    coefficients = np.zeros((n + 1, n))
    inside = index[:-1]
    own = np.arange(inside.size)
    coefficients[np.ix_(index, inside)] = -p[:, own] / p[own, own]  # (R3), i ∈ K
    outside = np.setdiff1d(np.arange(n), inside)
    coefficients[np.ix_(index, outside)] = p @ gram[np.ix_(index, outside)]  # (R3), i ∉ K
    coefficients[outside, outside] = -1.0
    return coefficients


def joint_refit(p, index, leaving, off):
    """B_L of (R6) from :func:`ridge_inverse`'s ``p`` over ``index``: the coefficients of the
    units ``leaving`` (host ints, in ``index``) on the regressors that stay on, host float64
    (|K̄′|, |L|), and K̄′'s indices (the constant last). ``off`` (host ints, in ``index``,
    ``leaving`` among them) are the regressors to leave out: the leaving units and those
    already off. A multi-output regression's coefficients depend only on its regressors, so
    regressing all of ``off`` jointly and keeping the columns of ``leaving`` is (R6)."""
    out = np.searchsorted(index, off)
    rest = np.setdiff1d(np.arange(index.size), out)
    joint = -p[np.ix_(rest, out)] @ np.linalg.inv(p[np.ix_(out, out)])  # (R6)
    return joint[:, np.searchsorted(off, leaving)], index[rest]


class RunningGram:
    """One gate layer's Gram matrix (R1) and its coefficients (R3), kept in step with pruning.

    Parameters
    ----------
    n_units : int
        n, the gate layer's width.
    decay, ridge, refresh : float, float, int
        ρ of (R1), r of (R2), steps between recomputations of C.

    Attributes
    ----------
    gram : device float64 (n + 1, n + 1)
    coefficients : device float64 (n + 1, n) or None before the first :meth:`current`
    inverse, index : host float64 (|K| + 1, |K| + 1), host ints (|K| + 1,)
        P of (R2) over the regressors K̄ of the last refresh, and their indices.
    age : int
        Updates since C was computed.
    """

    #: What :meth:`state_dict` saves (a checkpoint's ``"<field>/<gate name>"``).
    FIELDS = ("gram", "refit_age", "refit", "refit_inverse", "refit_index")

    def __init__(self, n_units: int, decay: float = GRAM_DECAY, ridge: float = RIDGE,
                 refresh: int = REFRESH_EVERY):
        self.decay, self.ridge, self.refresh_every = decay, ridge, refresh
        self.gram = B.zeros((n_units + 1, n_units + 1), dtype="float64")
        self.coefficients = self.inverse = self.index = None
        self.age = 0

    def update(self, a) -> None:
        """(R1) with the batch's activations ``a`` (device (B, n))."""
        xp = B.get_array_module(a)
        x = xp.empty((a.shape[0], a.shape[1] + 1), dtype=a.dtype)
        x[:, :-1] = a
        x[:, -1] = 1.0
        self.gram *= self.decay
        self.gram += x.T @ x  # (R1), the batch's sum in the activations' precision
        self.age += 1

    def current(self, theta):
        """C on the device, recomputed first if it is ``refresh`` updates old or missing."""
        if self.coefficients is None or self.age >= self.refresh_every:
            self.recompute(theta > 0)
        return self.coefficients

    def recompute(self, regressors) -> None:
        """C of (R3) with the regressors K (host bool (n,))."""
        gram = B.to_numpy(self.gram)
        self.inverse, self.index = ridge_inverse(gram, regressors, self.ridge)  # (R2)
        c = refit_coefficients(gram, self.inverse, self.index)  # (R3)
        self.coefficients, self.age = B.asarray(c), 0

    def keep(self, keep) -> None:
        """Slice G to the units where ``keep`` (host bool (n,)) is True (and the constant);
        C is recomputed at the next :meth:`current`."""
        index = B.asarray(np.flatnonzero(np.append(keep, True)))
        self.gram = self.gram[index][:, index]
        self.coefficients = self.inverse = self.index = None

    def state_dict(self) -> dict:
        state = {"gram": B.to_numpy(self.gram), "refit_age": np.asarray(self.age)}
        if self.coefficients is not None:
            state.update(refit=B.to_numpy(self.coefficients), refit_inverse=self.inverse,
                         refit_index=self.index)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.gram = B.asarray(state["gram"])
        self.age = int(state["refit_age"])
        self.coefficients = self.inverse = self.index = None
        if "refit" in state:
            self.coefficients = B.asarray(state["refit"])
            self.inverse, self.index = state["refit_inverse"], state["refit_index"]
