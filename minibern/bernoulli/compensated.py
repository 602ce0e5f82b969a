r"""The compensated removal estimator: Δ of removing unit i with its consumer re-fitted to carry
what the layer's other units can of it, and the fold that makes a removal do so.

Derivation: docs/derivations/compensated.md, (R1)–(R6); the paper's estimate it departs from:
docs/derivations/estimators.md, (E4)–(E8).

The paper's Δ_i compares keeping unit i with removing it while every other weight stays where it
is. Here the "off" side is the network in which the consumer's weights were re-fitted for unit
i's absence: unit i's activation a_i is replaced by its ridge fit on the layer's other units
and a constant, :mod:`minibern.bernoulli.refit`. With z_n the consumer's pre-activation at the
sampled mask, W_i the consumer's row i and y = ξ ⊙ a the gate's output, per example

.. math::
    d_{n,i} = \ell_n(z_n + s^1_{n,i} W_i) - \ell_n(z_n + s^2_{n,i} W_i),\quad
    s^1_{n,i} = (1 - \xi_{n,i})\,a_{n,i},\quad
    s^2_{n,i} = \textstyle\sum_j C_{ji}\,y_{n,j} + C_{n+1, i}                          \tag{R4}

and Δ̂_i/N = Σ_n d_{n,i}/B. The first loss is the example's with unit i on, the second with it
off and its share folded into the others, which is the network (R5) builds: W'_j = W_j +
C_ji W_i, b' = b + C_{n+1,i} W_i. With C_{:,i} = −e_i (no re-fit) (R4) is the paper's (E7).

When the θ step puts a gate on 0 from θ⁻ > 0, :meth:`CompensatedEstimator.fold` folds the
share θ⁻ of the leaving units into the others' outgoing weights (R6), so the layer's expected
output changes by no more than the fit's residual. Only gates on dense activations feeding a
``Dense`` consumer are supported: a gate on conv filters (a block of H·W inputs per unit, or a
``Conv2D`` consumer) raises NotImplementedError.

Cost per step, per gate layer of width n with m visits and B examples: (R1) B·(n+1)²
multiply-adds, s² B·(n+1)·m, the partial forwards of the B·m pairs for s² (all of them: the
fit is rarely 0) and of the pairs with ξ = 0 for s¹, against the paper's estimate's pairs
with a ≠ 0; every ``REFRESH_EVERY`` steps an (n+1)³ inversion on the host; a fold of |L|
units among |S| off ones, |S|³ + (n+1)·|S|² + (n+1)·|L|·M.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli.estimators import REGISTERED, RemovalEstimator
from minibern.bernoulli.flip_products import output_layer_losses
from minibern.bernoulli.refit import RIDGE, RunningGram, joint_refit
from minibern.bernoulli.topology import gate_sites
from minibern.losses import per_example_cross_entropy

np = B.host


class CompensatedEstimator(RemovalEstimator):
    """(R4): the removal estimate with the consumer re-fitted; visits as :class:`RemovalEstimator`.

    Attributes
    ----------
    grams : dict
        ``{gate name: RunningGram}``, made at the first step.
    """

    name = "compensated"

    def __init__(self, subset: int | None = 16, first_subset: int | None = None,
                 ridge: float = RIDGE):
        super().__init__(subset, first_subset)
        self.ridge = ridge
        self.grams = {}

    def estimate(self, net, images, labels, rng=None, candidates=None) -> dict:
        """As :meth:`RemovalEstimator.estimate`, with Δ of (R4); first (R1) on the batch."""
        for found in gate_sites(net):
            _check_supported(net, found)
            gram = self.grams.get(found.name)
            if gram is None or gram.gram.shape[0] != found.gate.n_units + 1:
                gram = self.grams[found.name] = RunningGram(found.gate.n_units, ridge=self.ridge)
            gram.update(found.gate.last_input)  # (R1)
        self._coefficients = {name: gram.current(net[name].theta)
                              for name, gram in self.grams.items()}
        return self._estimate_layers(net, labels, rng, candidates)

    def _estimate_layers(self, net, labels, rng, candidates) -> dict:
        """The removal estimator's visits, each layer's Σ_n d_{n,i} by (R4), then (E8)."""
        if not net.outputs:
            raise RuntimeError("run net.forward on the batch before the compensated estimator")
        base_loss = per_example_cross_entropy(net.outputs[-1], labels)
        sites = gate_sites(net)
        visits = self._visits(sites, rng, candidates)
        sums = [self._layer_sums(net, found, B.asarray(visit), labels, base_loss)
                for found, visit in zip(sites, visits) if visit.size]
        xp = B.get_array_module(base_loss)
        sums = B.to_numpy(xp.concatenate(sums)) / labels.shape[0] if sums else np.zeros(0)  # (E8)
        out, start = {}, 0  # one copy of every layer's sums to the host
        for found, visit in zip(sites, visits):
            delta = np.zeros(found.gate.n_units)
            delta[visit] = sums[start:start + visit.size]
            start += visit.size
            visited = np.zeros(found.gate.n_units, dtype=bool)
            visited[visit] = True
            out[found.name] = (delta, visited)
        return out

    def _layer_sums(self, net, found, visit_dev, labels, base_loss):
        """Σ_n d_{n,i} of (R4) over the batch for the visited gates ``visit_dev``."""
        gate = found.gate
        a, mask = gate.last_input, gate.mask
        xp = B.get_array_module(a)
        coefficients = self._coefficients[found.name][:, visit_dev]  # (n + 1, m)
        y = a * mask  # (E1)
        a_sub, xi_sub = a[:, visit_dev], mask[:, visit_dev]
        on = (1 - xi_sub) * a_sub  # s¹ (R4)
        fitted = (y @ coefficients[:-1] + coefficients[-1]).astype(a.dtype)  # s² (R4)
        linear = self._next_linear(net, found)
        return (self._losses_along(net, linear, on, visit_dev, labels, base_loss)
                - self._losses_along(net, linear, fitted, visit_dev, labels, base_loss)
                ).astype(xp.float64).sum(axis=0)  # Σ_n d_{n,i} (R4)

    def _losses_along(self, net, linear, change, visit_dev, labels, base_loss):
        """ℓ_n(z_n + change_{n,i} W_i) for every example n and visited gate i, (B, m); the
        batch's own loss where the change is 0."""
        xp = B.get_array_module(change)
        pairs = xp.flatnonzero(change != 0)
        losses = xp.repeat(base_loss[:, None], change.shape[1], axis=1)
        if int(pairs.shape[0]) == 0:
            return losses
        rows, cols = xp.divmod(pairs, change.shape[1])
        if linear == len(net) - 1:
            flipped = output_layer_losses(net[linear], net.outputs[linear], change, pairs,
                                          rows, cols, visit_dev, labels)  # (E5′)
        else:
            flipped = per_example_cross_entropy(
                self._partial_forward_logits(net, linear, change, rows, cols, visit_dev),
                labels[rows])  # (E5)–(E6)
        losses.reshape(-1)[pairs] = flipped
        return losses

    # -- the fold and pruning ------------------------------------------------------------------
    def fold(self, net, theta_before: dict) -> dict:
        """Fold into the consumers the shares θ⁻ of the units the θ step put on 0 (R6);
        ``theta_before``: ``{gate name: host θ before the step}``. Returns ``{name: count}``."""
        folded = {}
        for found in gate_sites(net):
            before = theta_before[found.name]
            leaving = np.flatnonzero((before > 0) & (found.gate.theta == 0))
            if leaving.size and found.name in self.grams:
                fold_units(net[found.consumer], self.grams[found.name], before,
                           found.gate.theta, leaving)
                folded[found.name] = int(leaving.size)
        return folded

    def keep(self, name: str, keep) -> None:
        """After pruning removed the units of gate ``name`` where ``keep`` is False."""
        if name in self.grams:
            self.grams[name].keep(np.asarray(keep, dtype=bool))

    def state_dict(self) -> dict:
        """Every gate layer's Gram, coefficients and their age, ``"<key>/<gate name>"``."""
        return {f"{key}/{name}": value for name, gram in self.grams.items()
                for key, value in gram.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        """The Grams and coefficients of :meth:`state_dict` (from a checkpoint's hook state)."""
        for key in state:
            if key.startswith("gram/"):
                name = key[len("gram/"):]
                self.grams[name] = RunningGram(state[key].shape[0] - 1, ridge=self.ridge)
                self.grams[name].load_state_dict({field: state[f"{field}/{name}"]
                                                  for field in RunningGram.FIELDS
                                                  if f"{field}/{name}" in state})


def fold_units(consumer, gram: RunningGram, theta_before, theta, leaving) -> None:
    """(R6): W_{K′} += B_L (θ⁻_L ⊙ W_L), b += (its constant row) on the consumer ``Dense``,
    with the last refresh's P: the leaving units are re-fitted jointly on its regressors that
    are still on (θ > 0); a leaving unit that was no regressor then is left as it is."""
    if gram.inverse is None:
        return
    regressors = gram.index[:-1]
    leaving = leaving[np.isin(leaving, regressors)]
    if leaving.size == 0:
        return
    off = regressors[theta[regressors] == 0]
    coefficients, rest = joint_refit(gram.inverse, gram.index, leaving, off)
    weight, bias = consumer.params["W"], consumer.params["b"]
    shares = B.asarray(theta_before[leaving], dtype=weight.dtype)[:, None] \
        * weight[B.asarray(leaving)]  # θ⁻_i W_i, (|L|, M)
    moved = B.asarray(coefficients, dtype=weight.dtype) @ shares  # (|K̄′|, M)
    weight[B.asarray(rest[:-1])] += moved[:-1]  # (R6)
    bias += moved[-1]  # (R6)


REGISTERED[CompensatedEstimator.name] = CompensatedEstimator  # --estimator compensated


def _check_supported(net, found) -> None:
    """The re-fit folds unit i's share into other *rows* of a Dense consumer (R5): refuse a
    gate on conv filters or before a Conv2D, naming it and the fix."""
    consumer = None if found.consumer is None else net[found.consumer]
    if found.through_flatten or consumer is None or consumer.op_kind != "dense":
        kind = "nothing" if consumer is None else type(consumer).__name__
        raise NotImplementedError(
            f"the compensated estimator re-fits a Dense consumer on dense activations; gate "
            f"{found.name!r} feeds {kind}{' through Flatten' if found.through_flatten else ''}"
            ". Use --estimator removal for this model (e.g. LeNet-5)")
