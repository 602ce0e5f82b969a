r"""Bernoulli gates: unit i of the input is multiplied by ξ_i ~ Bern(θ_i), per example.

Derivation: docs/derivations/bernoulli_objective.md (the gated model) and
docs/derivations/estimators.md, (E0)–(E3) (E0: how masks are drawn).

A gate sits after a layer's activation: on a dense layer's units (input (N, n)), on a conv
layer's filters (input (N, n, H, W), one ξ per example and filter, broadcast over H, W), or on the
input features. Its probabilities θ (shape (n,)) are a *host* float64 array: they are few, they
are updated by projected SGD on the host (:mod:`minibern.bernoulli.theta_sgd`), and the masks are drawn by
the run's seeded host generator and then moved to the device, so the same seed gives the same
masks on every backend.

Modes
-----
training (default)
    ξ_{n,i} ~ Bern(θ_i) independently per example. Gates with θ_i = 1 (or 0) are deterministic
    and draw no random numbers: only the undecided gates 0 < θ_i < 1 consume the generator.
evaluation (``training = False``)
    ξ_i = 1[θ_i ≥ ½] for every example: the deterministic network.
injected
    ``inject_mask(mask)`` fixes the next forward passes' mask (N, n) — gradient checks then see a
    deterministic function, and the estimators evaluate chosen masks.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.objective import check_theta
from minibern.layers.base import Layer, check_dout, positive_int

np = B.host

#: A gate is "at 0" / "at 1" when θ is within this distance of it (metrics.json's convention).
DECIDED_TOL = 1e-3


def bernoulli_bytes(rng, theta, n_examples: int, dtype=np.float32):
    """Host (N, k) 0/1 array of ξ ~ Bern(θ_j) per column j by (E0), θ (k,) in (0, 1)."""
    k = theta.size
    raw = rng.bit_generator.random_raw(-(-n_examples * k // 8))
    random_bytes = raw.astype("<u8", copy=False).view(np.uint8)[:n_examples * k]
    scaled = theta * 256.0
    cut = np.floor(scaled)
    cut_byte = cut.astype(np.uint8)
    random_bytes = random_bytes.reshape(n_examples, k)
    mask = (random_bytes < cut_byte).astype(dtype)  # (E0), b ≠ c
    ties = np.flatnonzero(random_bytes == cut_byte)
    if ties.size:
        mask.ravel()[ties] = rng.random(ties.size) < (scaled - cut)[ties % k]  # (E0), b = c
    return mask


def draw_mask(theta, rng, n_examples: int, dtype=np.float32):
    r"""A host float mask (N, n): ξ ~ Bern(θ) for undecided gates, θ itself where θ ∈ {0, 1}.

    Only the undecided gates draw random numbers, and mostly one random *byte* b per example
    and gate (a quarter of a float32 uniform's bits, so a quarter of the generator's output;
    ``benchmarks/bench_kernels.py`` times it):

    .. math::
        \xi = \begin{cases} 1[b < c] & b \ne c \\ 1[u < 256\theta - c] & b = c
               \end{cases},\qquad c = \lfloor 256\theta \rfloor,               \tag{E0}

    with b uniform on 0..255 (bytes of the generator's raw 64-bit output) and, only on a tie
    b = c (probability 1/256), a float64 uniform u. Then
    :math:`P(\xi = 1) = c/256 + (256\theta - c)/256 = \theta` exactly (to float64).
    """
    undecided = np.flatnonzero((theta > 0.0) & (theta < 1.0))
    if undecided.size and rng is None:
        raise RuntimeError("BernoulliGate has no random generator; set gate.rng (the "
                           "trainer does this) or inject a mask")
    if undecided.size == theta.size:
        return bernoulli_bytes(rng, theta[undecided], n_examples, dtype)
    mask = np.empty((n_examples, theta.size), dtype=dtype)
    mask[:] = theta >= 1.0
    if undecided.size:
        mask[:, undecided] = bernoulli_bytes(rng, theta[undecided], n_examples, dtype)
    return mask


class BernoulliGate(Layer):
    r"""Multiply unit (or filter) i of every example by a Bernoulli mask ξ_{n,i}.

    Parameters
    ----------
    n_units : int
        n, the number of gated units/filters/features.
    theta_init : float or array (n,)
        Initial keep probabilities θ ∈ [0, 1].
    rng : numpy.random.Generator, optional
        Host generator for the masks (the trainer sets the run's gate stream).

    Notes
    -----
    Shapes: x (N, n) or (N, n, H, W); ξ (N, n) (broadcast over H, W); y like x.

    .. math::
        y_{n,i} = \xi_{n,i}\, a_{n,i}                                             \tag{E1}

        \frac{\partial \ell}{\partial a_{n,i}} = \xi_{n,i}\,\frac{\partial \ell}{\partial y_{n,i}},
        \qquad
        \frac{\partial \ell}{\partial \xi_{n,i}} = \sum_{h,w} a_{n,i,h,w}\,
              \frac{\partial \ell}{\partial y_{n,i,h,w}}                            \tag{E2}

    The second derivative of (E2), summed over the batch, is the *first-order* estimate of
    Δ_i (E3) that ``backward`` leaves in :attr:`grad_xi` (shape (n,), on the device).
    """

    #: Whether backward must keep what :attr:`grad_xi` needs (the first-order estimator); when
    #: False the gate's backward only returns dx, so a training step may skip a leading gate
    #: (the input gates) and the first layer's input-gradient GEMM.
    needs_grad_xi = True

    @property
    def stateless_backward(self) -> bool:
        return not self.needs_grad_xi

    def __init__(self, n_units: int, *, theta_init=1.0, rng=None):
        super().__init__()
        self.n_units = positive_int(n_units, "n_units")
        theta = np.broadcast_to(np.asarray(theta_init, dtype=np.float64), (n_units,)).copy()
        self.theta = check_theta(theta, "theta_init")
        self.n_original = self.n_units
        self.unit_index = np.arange(n_units)  # original index of every remaining unit
        self.rng = rng
        self.training = True
        self._injected = None
        self.mask = None        # device mask of the last forward: (N, n), or (n,) in evaluation
        self._x = self._backward_pair = None
        self._identity = False

    # -- masks --------------------------------------------------------------------------------
    def inject_mask(self, mask) -> None:
        """Use ``mask`` (host or device array (N, n) of 0/1; None to stop) in later forwards."""
        self._injected = mask

    def sample_mask(self, n_examples: int, dtype=np.float32):
        """A host float mask (N, n) drawn by :func:`draw_mask` from θ and :attr:`rng`."""
        return draw_mask(self.theta, self.rng, n_examples, dtype)

    @property
    def all_on(self) -> bool:
        """True when every θ is exactly 1: the gate is the identity and draws nothing."""
        return bool(self.theta.min() >= 1.0) if self.n_units else True

    def deterministic_mask(self):
        """Host (n,) mask 1[θ ≥ ½] used in evaluation."""
        return (self.theta >= 0.5).astype(np.float64)

    def _broadcast(self, mask, x):
        return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)) if x.ndim > 2 else mask

    def apply(self, x, mask):
        """y = ξ ⊙ x for a given device mask (N, n) or (n,) without touching any cache (E1)."""
        if mask.ndim == 1:
            mask = mask.reshape((1, -1))
        return x * self._broadcast(mask, x)  # (E1)

    @property
    def last_input(self):
        """The input a (N, n[, H, W]) of the last forward pass, on the device: what the removal
        estimator flips (E4); None before the first forward."""
        return self._x

    @property
    def is_identity(self) -> bool:
        """Whether the last forward pass was the identity (training with every θ = 1)."""
        return self._identity

    # -- forward / backward -------------------------------------------------------------------
    def forward(self, x):
        B.require_float_array(x, "BernoulliGate input")
        if x.ndim not in (2, 4) or x.shape[1] != self.n_units:
            raise ValueError(
                f"BernoulliGate over {self.n_units} units expects (N, {self.n_units}) or "
                f"(N, {self.n_units}, H, W), got {tuple(x.shape)}; check n_units"
            )
        xp = B.get_array_module(x)
        if self._injected is not None:
            mask = self._injected
            if type(mask) is np.ndarray:  # a host mask: move it to the backend
                mask = B.asarray(mask)
            mask = mask.astype(x.dtype)
            if tuple(mask.shape) != (x.shape[0], self.n_units):
                raise ValueError(f"injected mask has shape {tuple(mask.shape)}, expected "
                                 f"{(x.shape[0], self.n_units)}")
        elif self.training and self.all_on:  # the identity: no draws, no product
            mask = xp.broadcast_to(xp.ones((1, self.n_units), dtype=x.dtype),
                                   (x.shape[0], self.n_units))
            self.mask, self._x, self._identity = mask, x, True
            return x
        elif self.training:
            mask = B.asarray(self.sample_mask(x.shape[0], x.dtype))
        else:
            mask = xp.broadcast_to(B.asarray(self.deterministic_mask(), dtype=x.dtype),
                                   (x.shape[0], self.n_units))
        self.mask, self._x, self._identity = mask, x, False
        return self.apply(x, mask)

    def backward(self, dout):
        self._check_backward_ready(self._x)
        x = self._x
        check_dout(self, dout, x.shape)
        self._backward_pair = (dout, x)  # for grad_xi, computed only when an estimator asks
        if self._identity:
            return dout  # (E2) with ξ = 1
        return dout * self._broadcast(self.mask, x)  # (E2)

    @property
    def grad_xi(self):
        """Σ_n ∂ℓ/∂ξ_{n,i} of the last backward pass, (n,) on the device (E2)–(E3); None before."""
        if self._backward_pair is None:
            return None
        dout, x = self._backward_pair
        per_example = dout * x  # (E2)
        if x.ndim > 2:
            per_example = per_example.sum(axis=(2, 3))
        return per_example.sum(axis=0)  # (E3)

    # -- pruning ------------------------------------------------------------------------------
    def keep_units(self, keep) -> None:
        """Keep only the units where the host bool mask ``keep`` (n,) is True (physical pruning:
        :mod:`minibern.bernoulli.pruning` slices the neighbouring weights the same way)."""
        keep = np.asarray(keep, dtype=bool)
        self.theta = self.theta[keep].copy()
        self.unit_index = self.unit_index[keep].copy()
        self.n_units = int(keep.sum())
        self._injected = self.mask = self._backward_pair = self._x = None

    @property
    def n_removed(self) -> int:
        return self.n_original - self.n_units

    def full_theta(self):
        """θ over the *original* units (n_original,), 0 where a unit was removed."""
        full = np.zeros(self.n_original)
        full[self.unit_index] = self.theta
        return full

    # -- bookkeeping --------------------------------------------------------------------------
    def counts(self, tol: float = DECIDED_TOL) -> dict:
        """``{"total", "at_zero", "at_one", "undecided", "removed"}`` over the original units,
        θ within ``tol`` of 0 or 1; a removed unit counts as at 0."""
        at_zero = int((self.theta <= tol).sum()) + self.n_removed
        at_one = int((self.theta >= 1.0 - tol).sum())
        return {"total": self.n_original, "at_zero": at_zero, "at_one": at_one,
                "undecided": self.n_original - at_zero - at_one, "removed": self.n_removed}

    def __repr__(self) -> str:
        c = self.counts()
        return f"BernoulliGate(n={self.n_units}, at_zero={c['at_zero']}, at_one={c['at_one']})"

    # -- what the layer is (minibern.layers.base; output_shape: the input's) -------------------
    #: The walks over a network (:mod:`minibern.bernoulli.topology`, pruning, export) find the
    #: gates by this; export folds a gate into its neighbours (X1)–(X4) instead of writing an op.
    is_gate = True

    @property
    def n_kept(self) -> int:
        """Units the evaluation mask 1[θ ≥ ½] keeps: the gate's width in the deterministic net."""
        return int((self.theta >= 0.5).sum())
