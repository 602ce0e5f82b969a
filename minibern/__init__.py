"""minibern: learning parsimonious networks with Bernoulli gates, gradients derived by hand.

The array backend is chosen by the user::

    import minibern
    minibern.set_backend("cupy")        # or "numpy" (default), or "strict" (see backend.py)

The engine: :mod:`minibern.backend` (arrays), :mod:`minibern.layers` (forward/backward, the reference
math), :mod:`minibern.kernels` (the same equations arranged for speed, run by default),
:mod:`minibern.losses`, :mod:`minibern.optim`, :mod:`minibern.gradcheck`, :mod:`minibern.data`,
:mod:`minibern.models`. Above it :mod:`minibern.training` (the loop, hooks, run files), then
:mod:`minibern.bernoulli` (the paper's method, arXiv 2205.04650) and :mod:`minibern.cli`.
"""
from minibern.backend import get_backend, set_backend, use_backend

__version__ = "0.1.0"

__all__ = ["get_backend", "set_backend", "use_backend", "__version__"]
