"""Supports: maps from unconstrained u to x, with their log-Jacobians.

Samplers and quadrature work on u, so no density they see has a -inf wall. For
multivariate x the support applies per coordinate and log-Jacobians add up. Each
coordinate of x takes `u_size` unconstrained numbers (1, or 2 for the circle).
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
    """True for the circle: quadrature integrates over one period of x directly."""
    u_size: int = 1
    """Unconstrained numbers per coordinate of x."""
    search_radius: float = 1e6
    """|u| beyond which quadrature assumes no mass (and checks there is none): wide enough
    for the exp(a u) tails of shapes a down to ~1e-4."""

    @abc.abstractmethod
    def forward(self, u: Array) -> Array:
        """x = forward(u), elementwise: same shape as u (u_size == 1)."""

    @abc.abstractmethod
    def inverse(self, x: Array) -> Array:
        """u = inverse(x), elementwise: same shape as x."""

    @abc.abstractmethod
    def log_det_jacobian(self, u: Array) -> Array:
        """log |dx/du|, elementwise: same shape as u."""

    def contains(self, x: Array) -> Array:
        """Boolean array of x's shape: True where x lies in the support."""
        return jnp.isfinite(x)

    def u_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of u for one x of shape `x_shape`."""
        return tuple(x_shape) if self.u_size == 1 else (*x_shape, self.u_size)

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self):
        args = ", ".join(f"{v!r}" for v in vars(self).values())
        return f"{type(self).__name__}({args})"


class Real(Support):
    """x = u on the whole real line."""


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
    """An angle in [-pi, pi), from u in R^2: x = atan2(u_2, u_1).

    The "Jacobian" term is an auxiliary radial weight, log w(u) = -|u|^2 / 2: since
    the integral of r exp(-r^2 / 2) over r > 0 is 1 whatever the angle, the angle
    marginal of p(x(u)) w(u) is exactly p(x), and the sampler sees a proper density on R^2
    (an unbounded periodic u would never let NUTS turn around). `inverse` gives the unit
    vector (cos x, sin x).
    """

    periodic = True
    u_size = 2

    def forward(self, u):
        return jnp.arctan2(u[..., 1], u[..., 0])

    def inverse(self, x):
        return jnp.stack([jnp.cos(x), jnp.sin(x)], axis=-1)

    def log_det_jacobian(self, u):
        return -0.5 * jnp.sum(u**2, axis=-1)


class PositiveDefinite(Support):
    """Symmetric positive-definite d x d matrices x = L L^T, L lower triangular with
    L_ii = exp(u_ii): one u of d (d + 1) / 2 numbers (the lower triangle, row-major) per x,
    not elementwise. log|dx/du| = d log 2 + sum_i (d - i + 1) u_ii (0-based i)."""

    def __init__(self, d: int):
        self.d = d
        self.u_size = d * (d + 1) // 2

    def u_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.u_size,)

    def _lower(self, u):
        rows, cols = jnp.tril_indices(self.d)
        lower = jnp.zeros((self.d, self.d), u.dtype).at[rows, cols].set(u)
        diagonal = jnp.diagonal(lower)
        return lower + jnp.diag(jnp.exp(diagonal) - diagonal)

    def forward(self, u):
        lower = self._lower(u)
        return lower @ lower.T

    def inverse(self, x):
        lower = jnp.linalg.cholesky(x)
        lower = lower + jnp.diag(jnp.log(jnp.diagonal(lower)) - jnp.diagonal(lower))
        return lower[jnp.tril_indices(self.d)]

    def log_det_jacobian(self, u):
        rows, cols = jnp.tril_indices(self.d)
        power = jnp.where(rows == cols, self.d - rows + 1, 0)
        return self.d * math.log(2.0) + jnp.sum(power * u)

    def contains(self, x):
        symmetric = jnp.allclose(x, jnp.swapaxes(x, -1, -2))
        return symmetric & jnp.all(jnp.linalg.eigvalsh(x) > 0)
