r"""Counting a network: architecture, parameters and FLOPs per example.

Counts are of the *deterministic* network: a unit physically removed from the arrays is simply
absent, and a unit that a layer switches off in evaluation (a Bernoulli gate with θ < ½) is
absent when the caller says so through ``kept`` (``{layer name: units left on after it}``; the
trainer gathers it from its hooks, :meth:`minibern.training.trainer.Hook.kept_units`). Without
``kept`` the counts are those of the arrays. This module knows the engine's layers only.

**Architecture** (as the structured-pruning literature reports it): for a dense network, the
inputs of the first layer followed by every hidden layer's units (LeNet-300-100:
``[784, 300, 100]``); for a convolutional one, every conv layer's filters, then the inputs and
units of each hidden dense layer (LeNet-5-Caffe: ``[20, 50, 800, 500]``). The output layer is
never listed.

**Parameters** count the weights and biases that connect kept units to kept units.

**FLOPs per example** count multiply–accumulate operations of the dense and conv layers, the
convention of the papers we compare with (biases, activations and pooling are left out):

.. math::
    \text{Dense}(D \to M):\ D M, \qquad
    \text{Conv2D}:\ F\,C\,K_H K_W\, O_H O_W .
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Weighted:
    """A linear layer of the walk: its kept input and output units and its input's shape."""

    layer: object
    kept_in: int          # kept input features (dense) or channels (conv)
    kept_out: int         # kept output units or filters
    x_shape: tuple        # the shape of one example's input, (1, ...)

    @property
    def spatial(self) -> bool:
        """Whether the outputs are feature maps (N, F, OH, OW): a conv layer's filters."""
        return len(self.layer.output_shape(self.x_shape)) == 4


def _walk(net, input_shape, kept_after: dict) -> list[_Weighted]:
    """Follow the network once, tracking how many features/channels are kept; a layer named in
    ``kept_after`` leaves that many of its input units on (it narrows the layer before it)."""
    shape = (1,) + tuple(input_shape)
    kept = shape[1]          # kept channels (4-D) or features (2-D) flowing forward
    records: list[_Weighted] = []
    for name, layer in net:
        if name in kept_after:
            kept = int(kept_after[name])
            if records:
                records[-1].kept_out = kept
            continue
        y_shape = layer.output_shape(shape)
        if layer.is_linear:
            records.append(_Weighted(layer, kept, layer.n_units_out, shape))
            kept = layer.n_units_out
        elif layer.selects_inputs:  # inputs that physical pruning removed
            kept = y_shape[1]
        else:  # per-channel maps keep the count; a Flatten turns a kept channel into H·W features
            kept *= y_shape[1] // shape[1]
        shape = y_shape
    return records


def architecture(net, input_shape=None, kept: dict | None = None) -> list[int]:
    """Kept widths, inputs first, output layer excluded (see module docstring)."""
    records = _walk(net, input_shape or net.input_shape, kept or {})
    widths: list[int] = []
    for index, rec in enumerate(records):
        if rec.spatial:
            widths.append(rec.kept_out)
            continue
        if index == 0 or records[index - 1].spatial:
            widths.append(rec.kept_in)
        if index < len(records) - 1:
            widths.append(rec.kept_out)
    return widths


def _costs(net, input_shape=None, kept: dict | None = None) -> tuple[int, int]:
    """(parameters, multiply–accumulates per example) of the deterministic network."""
    params = flops = 0
    for rec in _walk(net, input_shape or net.input_shape, kept or {}):
        params += rec.layer.n_params(rec.kept_in, rec.kept_out)
        flops += rec.layer.n_macs(rec.kept_in, rec.kept_out, rec.x_shape)
    return params, flops


def count_parameters(net, input_shape=None, kept: dict | None = None) -> int:
    """Weights and biases between kept units."""
    return _costs(net, input_shape, kept)[0]


def flops_per_example(net, input_shape=None, kept: dict | None = None) -> int:
    """Multiply–accumulates of one forward pass of the deterministic network."""
    return _costs(net, input_shape, kept)[1]


def summarize(net, start: dict | None = None, kept: dict | None = None) -> dict:
    """``{"architecture", "params", "flops_per_example"}`` for a model with ``input_shape``.

    With ``start`` (an earlier ``summarize`` of the same network, e.g. before training) it also
    gives the starting values and the compression ratios start/now of parameters and FLOPs.
    ``kept`` maps a layer's name to the units left on after it (module docstring); a gated
    network's is :func:`minibern.bernoulli.topology.kept_units`.
    """
    params, flops = _costs(net, kept=kept)
    summary = {"architecture": architecture(net, kept=kept), "params": params,
               "flops_per_example": flops}
    if start is not None:
        summary.update({
            "architecture_start": list(start["architecture"]), "params_start": start["params"],
            "flops_per_example_start": start["flops_per_example"],
            "compression_params": start["params"] / max(params, 1),
            "compression_flops": start["flops_per_example"] / max(flops, 1)})
    return summary


def format_summary(summary: dict) -> str:
    """One line: architecture, parameters and FLOPs, with the ratios when ``summary`` has them."""
    text = (f"architecture {'-'.join(map(str, summary['architecture']))}  "
            f"params {summary['params']:,}  FLOPs/example {summary['flops_per_example']:,}")
    if "compression_params" in summary:
        text += (f"  (from {'-'.join(map(str, summary['architecture_start']))}: "
                 f"params ×{summary['compression_params']:.1f} smaller, "
                 f"FLOPs ×{summary['compression_flops']:.1f} fewer)")
    return text
