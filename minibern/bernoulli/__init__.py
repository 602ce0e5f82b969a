"""The paper's method: Bernoulli gates on units, their probabilities θ learned and pruned.

Guenter & Sideris, "Robust Learning of Parsimonious Deep Neural Networks", arXiv 2205.04650.
"""

from minibern.bernoulli import compensated  # noqa: F401  (registers --estimator compensated)
from minibern.bernoulli import removal_fused  # noqa: F401  (registers --fused-estimator)
