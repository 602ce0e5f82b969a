"""Seeded weight initialisation: numbers drawn by a host generator, moved to the backend.

He (Kaiming) normal, the default for ReLU networks:

.. math::  W_{ij} \\sim \\mathcal N\\!\\left(0,\\; s^2 \\cdot \\frac{2}{\\text{fan\\_in}}\\right),
           \\qquad b = 0,

with a user scale factor :math:`s` (``init_scale``, default 1). ``"glorot"`` uses
:math:`\\mathcal U(\\pm s\\sqrt{6/(\\text{fan\\_in}+\\text{fan\\_out})})`.
"""
from __future__ import annotations

import math

from minibern import backend as B

INIT_SCHEMES = ("he", "glorot")


def init_weight(rng, shape, fan_in: int, fan_out: int, scheme: str = "he", scale: float = 1.0,
                dtype=None):
    """A weight array of ``shape`` on the current backend, drawn from ``rng`` by ``scheme``."""
    if scheme == "he":
        return B.random_normal(rng, shape, scale=scale * math.sqrt(2.0 / fan_in), dtype=dtype)
    if scheme == "glorot":
        limit = scale * math.sqrt(6.0 / (fan_in + fan_out))
        return B.random_uniform(rng, shape, -limit, limit, dtype=dtype)
    raise ValueError(f"unknown init scheme {scheme!r}; expected one of {', '.join(INIT_SCHEMES)}")
