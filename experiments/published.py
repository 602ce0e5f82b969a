"""Published structured-pruning results on MNIST, for the comparison of docs/RESULTS.md.

The LeNet-300-100 rows are as quoted in the appendix table of Evci et al. (which takes them from
the original papers, rounding the errors); the LeNet-5-Caffe rows as commonly quoted from the
original papers. None has been checked against the original tables here: read them as the usual
reference points, not as our measurements. Those papers mostly train far longer (e.g. 200
epochs) and report the best test error seen during training; docs/RESULTS.md reports the final
epoch of 20.

Architecture conventions: LeNet-300-100 as kept inputs / h1 / h2 (as in our tables);
LeNet-5-Caffe as conv1 filters / conv2 filters / fc1 input features / fc1 units.
"""
from __future__ import annotations

RIGL = ("quoted in Evci et al., *Rigging the Lottery*, ICML 2020 (arXiv 1911.11134), "
        "appendix table of structured-pruning baselines")
L0 = ("Louizos, Welling, Kingma, *Learning Sparse Neural Networks through L0 Regularization*, "
      "ICLR 2018 (arXiv 1712.01312)")
BC = ("Louizos, Ullrich, Welling, *Bayesian Compression for Deep Learning*, NeurIPS 2017 "
      "(arXiv 1705.08665)")
SBP = ("Neklyudov, Molchanov, Ashukha, Vetrov, *Structured Bayesian Pruning via Log-Normal "
       "Multiplicative Noise*, NeurIPS 2017 (arXiv 1705.07283)")
VIB = ("Dai, Zhu, Guo, Wipf, *Compressing Neural Networks using the Variational Information "
       "Bottleneck*, ICML 2018 (arXiv 1802.10399)")

#: (network, method, architecture, test error %, source)
PUBLISHED = [
    ("LeNet-300-100", "L0", "266-88-33", "1.6", f"{L0}; {RIGL}"),
    ("LeNet-300-100", "SBP", "245-160-55", "1.6", f"{SBP}; {RIGL}"),
    ("LeNet-300-100", "VIBNet", "97-71-33", "1.6", f"{VIB}; {RIGL}"),
    ("LeNet-5-Caffe", "L0", "20-25-45-462", "0.9", L0),
    ("LeNet-5-Caffe", "L0-sep", "9-18-65-25", "1.0", L0),
    ("LeNet-5-Caffe", "BC-GNJ", "8-13-88-13", "1.0", BC),
    ("LeNet-5-Caffe", "BC-GHS", "5-10-76-16", "1.0", BC),
    ("LeNet-5-Caffe", "SBP", "3-18-284-283", "0.9", SBP),
]


def published_markdown() -> str:
    """The section of docs/RESULTS.md that sets our runs beside the published numbers."""
    lines = ["## Published structured pruning on MNIST (not measured here)\n",
             __doc__.split("\n\n", 1)[1].strip() + "\n",
             "| network | method | architecture | test error % | source |",
             "|---|---|---|---|---|"]
    lines += [f"| {net} | {method} | {arch} | {error} | {source} |"
              for net, method, arch, error, source in PUBLISHED]
    return "\n".join(lines) + "\n"
