r"""The unit prices κ_i and the penalty gradient κ_i/N that the θ step adds to the estimate.

Derivation: docs/derivations/bernoulli_objective.md, (B14), (B14′), (B15).

.. math::
    \frac{\partial}{\partial\theta_i}\,\frac1N\sum_j \kappa_j\theta_j = \frac{\kappa_i}{N}
    \tag{B15}

κ_i is κ per unit (the default), κ times the unit's parameters at the start (B14,
``kappa_per_param``), or κ times the parameters the unit is expected to cost (B14′,
``kappa_expected_params``). The first two do not depend on θ: the gradient is computed once per
layer width (at the start and after pruning, :meth:`UnitPrices.resize`). (B14′) follows the
other layers' expected widths Σθ, so :meth:`UnitPrices.follow` reprices it before every step.
"""
from __future__ import annotations

from minibern import backend as B
from minibern.bernoulli import objective as obj
from minibern.bernoulli.topology import gate_layers, gate_sites, unit_params, weight_blocks

np = B.host


class UnitPrices:
    """κ_i of every gate layer (:attr:`kappa`) and their (B15) gradients (:meth:`gradient`).

    Parameters
    ----------
    net : Sequential with gates
    config : GateConfig
        Its ``kappa``, ``kappa_per_param`` and ``kappa_expected_params``.
    n_data : int
        N of the per-example cost.
    """

    def __init__(self, net, config, n_data: int):
        self.config, self.n_data = config, n_data
        self.expected = config.kappa_expected_params
        self.kappa = {found.name: obj.kappa_per_unit(config.kappa, unit_params(net, found),
                                                     config.kappa_per_param)
                      for found in gate_sites(net)}  # (B14)
        self.blocks = None
        self.resize(net)

    def resize(self, net) -> None:
        """The gradients for the network's current widths (at the start, after pruning or a
        checkpoint's structure); with (B14′) the weight blocks and κ_i as well."""
        gates = gate_layers(net)
        if self.expected:
            self.blocks = weight_blocks(net)
            self.follow(gates)
        else:
            self._gradients(gates)

    def follow(self, gates) -> None:
        """With (B14′), κ_i for the gates' current θ (before every step); otherwise nothing."""
        if self.expected:
            self.kappa = obj.expected_parameters(
                self.blocks, {name: gate.theta for _, name, gate in gates},
                self.config.kappa)[1]  # (B14′)
            self._gradients(gates)

    def _gradients(self, gates) -> None:
        self.gradients = {name: obj.flattened_penalty(gate.theta, self.kappa[name],
                                                      self.n_data)[1]  # (B15)
                          for _, name, gate in gates}

    def gradient(self, name: str):
        """κ_i/N of gate layer ``name`` (B15): host float64 (n,)."""
        return self.gradients[name]
