"""Published structured-pruning results on MNIST, set beside ours at the top of docs/RESULTS.md.

Each row says where its numbers were read. The LeNet-300-100 rows are read in the appendix
table of Evci et al. (*Rigging the Lottery*), which quotes them from the original papers with
rounded errors; they have not been checked against the original tables. Evci et al. name the
row 266-88-33 "L0"; Louizos et al.'s own Table 1 has not been read here, so read that row as
Evci et al.'s quote, not as the paper's. The LeNet-5-Caffe rows agree with the comparison
table of Tang, Adhikari and Lin (*FLOPs as a Direct Optimization Objective for Learning Sparse
Neural Networks*), which quotes the same papers.

Protocols differ from ours: Louizos et al. report the test error after 200 epochs (their
Table 1's caption); the others' protocols are not checked here. Ours: 20 epochs, the error of
the final epoch, mean ± std over seeds.

Architecture conventions: LeNet-300-100 as kept inputs-h1-h2; LeNet-5-Caffe as conv1
filters-conv2 filters-fc1 input features-fc1 units. Parameters and FLOPs of the published rows
are computed here from the architecture, as ours are (weights and biases; multiply–accumulates
per example).
"""
from __future__ import annotations

#: key → full reference
SOURCES = {
    "L0": "Louizos, Welling, Kingma, *Learning Sparse Neural Networks through L0 "
          "Regularization*, ICLR 2018 (arXiv 1712.01312)",
    "BC": "Louizos, Ullrich, Welling, *Bayesian Compression for Deep Learning*, NeurIPS 2017 "
          "(arXiv 1705.08665)",
    "SBP": "Neklyudov, Molchanov, Ashukha, Vetrov, *Structured Bayesian Pruning via Log-Normal "
           "Multiplicative Noise*, NeurIPS 2017 (arXiv 1705.07283)",
    "VIB": "Dai, Zhu, Guo, Wipf, *Compressing Neural Networks using the Variational Information "
           "Bottleneck*, ICML 2018 (arXiv 1802.10399)",
    "RigL": "Evci, Gale, Menick, Castro, Elsen, *Rigging the Lottery: Making All Tickets "
            "Winners*, ICML 2020 (arXiv 1911.11134)",
}

#: how a row's numbers were read: (key of the paper, key of the quote or "" when direct)
VIA_RIGL = "quoted in [RigL]"
L0_PROTOCOL = "200 epochs, error at the end"
UNCHECKED = "not checked here"

#: (network, method, architecture, test error %, source key, how read, protocol)
PUBLISHED = [
    ("LeNet-300-100", "L0", "266-88-33", "1.6", "L0", VIA_RIGL, L0_PROTOCOL),
    ("LeNet-300-100", "SBP", "245-160-55", "1.6", "SBP", VIA_RIGL, UNCHECKED),
    ("LeNet-300-100", "VIBNet", "97-71-33", "1.6", "VIB", VIA_RIGL, UNCHECKED),
    ("LeNet-5-Caffe", "L0", "20-25-45-462", "0.9", "L0", "Table 1", L0_PROTOCOL),
    ("LeNet-5-Caffe", "L0-sep", "9-18-65-25", "1.0", "L0", "Table 1", L0_PROTOCOL),
    ("LeNet-5-Caffe", "BC-GNJ", "8-13-88-13", "1.0", "BC", "", UNCHECKED),
    ("LeNet-5-Caffe", "BC-GHS", "5-10-76-16", "1.0", "BC", "", UNCHECKED),
    ("LeNet-5-Caffe", "SBP", "3-18-284-283", "0.9", "SBP", "", UNCHECKED),
]

CLASSES = 10
#: LeNet-5-Caffe: 5×5 kernels, conv1's output 24×24, conv2's 8×8 (before each 2×2 pooling)
KERNEL, CONV1_PIXELS, CONV2_PIXELS = 25, 24 * 24, 8 * 8


def units(architecture: str) -> list[int]:
    """``"266-88-33"`` → ``[266, 88, 33]``."""
    return [int(part) for part in architecture.split("-")]


def size(network: str, architecture: str) -> tuple[int, int]:
    """(parameters, multiply–accumulates per example) of a kept architecture.

    LeNet-300-100 ``a-b-c``: the layers a→b→c→10 with biases. LeNet-5-Caffe ``c1-c2-f-u``:
    conv1 (c1 filters of 5×5×1), conv2 (c2 filters of 5×5×c1), fc1 from f inputs to u units,
    fc2 from u to 10; a convolution's multiply–accumulates are its weights times its output
    pixels."""
    if network == "LeNet-300-100":
        widths = [*units(architecture), CLASSES]
        pairs = list(zip(widths, widths[1:]))
        return sum(a * b + b for a, b in pairs), sum(a * b for a, b in pairs)
    if network == "LeNet-5-Caffe":
        c1, c2, inputs, hidden = units(architecture)
        conv1, conv2 = c1 * KERNEL, c2 * c1 * KERNEL
        dense = inputs * hidden + hidden * CLASSES
        params = conv1 + c1 + conv2 + c2 + dense + hidden + CLASSES
        return params, conv1 * CONV1_PIXELS + conv2 * CONV2_PIXELS + dense
    raise ValueError(f"network {network!r} is not one of 'LeNet-300-100', 'LeNet-5-Caffe'; "
                     "add its size formula to experiments/published.py")


def source_cell(key: str, via: str) -> str:
    """``[L0]``, ``[L0] Table 1`` or ``[L0], quoted in [RigL]``."""
    if not via:
        return f"[{key}]"
    return f"[{key}], {via}" if via.startswith("quoted") else f"[{key}] {via}"


def references_markdown() -> str:
    """The references the published rows cite, one line each, and how they were read."""
    lines = [f"- [{key}] {reference}" for key, reference in SOURCES.items()]
    return "\n".join([__doc__.split("\n\n", 1)[1].strip(), "", *lines]) + "\n"


__all__ = ["PUBLISHED", "SOURCES", "size", "source_cell", "references_markdown"]
