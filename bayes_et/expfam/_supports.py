"""Supports: maps from unconstrained u in R to x, with their log-Jacobians.

Samplers and quadrature work on u, so no density they see has a -inf wall. For
multivariate x the support applies per coordinate and log-Jacobians add up.
"""

from __future__ import annotations

import abc
import math

import jax.numpy as jnp
from jax.nn import log_sigmoid, sigmoid
from jaxtyping import Array


class Support(abc.ABC):
    """Elementwise map x = forward(u) with log|dx/du| = log_det_jacobian(u)."""

    periodic: bool = False
    """True for the circle: u is an angle and quadrature uses one period."""
    search_radius: float = 700.0
    """|u| beyond which quadrature assumes no mass (exp(u) stays finite in float64)."""

    @abc.abstractmethod
    def forward(self, u: Array) -> Array: ...

    @abc.abstractmethod
    def inverse(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def log_det_jacobian(self, u: Array) -> Array: ...

    def contains(self, x: Array) -> Array:
        return jnp.isfinite(x)

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self):
        args = ", ".join(f"{v!r}" for v in vars(self).values())
        return f"{type(self).__name__}({args})"


class Real(Support):
    """x = u on the whole real line."""

    search_radius = 1e4

    def forward(self, u):
        return u

    def inverse(self, x):
        return x

    def log_det_jacobian(self, u):
        return jnp.zeros_like(u)


class Positive(Support):
    """x = exp(u) > 0."""

    def forward(self, u):
        return jnp.exp(u)

    def inverse(self, x):
        return jnp.log(x)

    def log_det_jacobian(self, u):
        return u

    def contains(self, x):
        return x > 0


class Interval(Support):
    """x = lo + (hi - lo) * sigmoid(u) in the open interval (lo, hi)."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"Interval needs finite lo < hi; got lo={lo!r}, hi={hi!r}")
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, u):
        return self.lo + (self.hi - self.lo) * sigmoid(u)

    def inverse(self, x):
        t = (x - self.lo) / (self.hi - self.lo)
        return jnp.log(t) - jnp.log1p(-t)

    def log_det_jacobian(self, u):
        return math.log(self.hi - self.lo) + log_sigmoid(u) + log_sigmoid(-u)

    def contains(self, x):
        return (x > self.lo) & (x < self.hi)


class Circle(Support):
    """An angle: x = u wrapped to [-pi, pi). A covering map, not a bijection: a density
    that is 2*pi-periodic in u is sampled correctly modulo 2*pi."""

    periodic = True

    def forward(self, u):
        return jnp.mod(u + jnp.pi, 2 * jnp.pi) - jnp.pi

    def inverse(self, x):
        return self.forward(x)

    def log_det_jacobian(self, u):
        return jnp.zeros_like(u)
