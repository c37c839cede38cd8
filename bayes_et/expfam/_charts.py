"""Charts: coordinates in which a family's moment map is smooth, for networks to learn in."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from jaxtyping import Array, Float


@dataclass(frozen=True)
class Chart:
    """A network of a charted family sees z = coords(eta) and learns mu - offset(eta).

    `offset` is a known, exact part of the moment map (say its poles at an edge of the
    natural-parameter space), so it carries no uncertainty: the predictive's spread is the
    network's. `coords` maps each coordinate of eta monotonically on its own (a box maps to
    a box), with inverse `eta_from`. The base class is the identity chart."""

    def coords(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        """The network's input coordinates z of one eta."""
        return eta

    def eta_from(self, z: Float[Array, " d"]) -> Float[Array, " d"]:
        """The eta whose coordinates are z (the inverse of `coords`)."""
        return z

    def offset(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        """The known part of mu at one eta; the network learns the rest."""
        return jnp.zeros_like(eta)

    @property
    def name(self) -> str:
        """The chart's name, as a run's header records it."""
        return type(self).__name__


@dataclass(frozen=True)
class LogEdges(Chart):
    """z_i = log(sign_i (eta_i - edge_i)): log distance to an edge of the natural-parameter
    space (sign +1: eta_i > edge_i, -1: eta_i < edge_i), log-spaced near it; the identity
    where the edge is None."""

    edges: tuple[float | None, ...]
    signs: tuple[int, ...]

    def _parts(self):
        logged = jnp.asarray([e is not None for e in self.edges])
        edge = jnp.asarray([0.0 if e is None else e for e in self.edges])
        return logged, edge, jnp.asarray(self.signs, float)

    def coords(self, eta):
        """Log distance to the edge where there is one, eta elsewhere."""
        logged, edge, sign = self._parts()
        distance = jnp.where(logged, sign * (eta - edge), 1.0)
        return jnp.where(logged, jnp.log(distance), eta)

    def eta_from(self, z):
        """The edge plus (or minus) exp(z) where there is one, z elsewhere."""
        logged, edge, sign = self._parts()
        return jnp.where(logged, edge + sign * jnp.exp(jnp.where(logged, z, 0.0)), z)


@dataclass(frozen=True)
class GammaShapes(LogEdges):
    """Gamma in (log a, log b), with E[log x]'s pole at a -> 0 (digamma(a) ~ -1/a) known:
    the network learns digamma(a + 1) - log b."""

    edges: tuple[float | None, ...] = (-1.0, 0.0)
    signs: tuple[int, ...] = (1, -1)

    def offset(self, eta):
        """-1/a on E[log x], nothing on E[x]."""
        return jnp.stack([-1.0 / (eta[0] + 1.0), jnp.zeros_like(eta[1])])


@dataclass(frozen=True)
class BetaShapes(LogEdges):
    """Beta in (log a, log b), with the poles of digamma(a) - digamma(a + b) known
    (-1/a + 1/(a + b), and the same in b): the network learns digamma(a + 1) -
    digamma(a + b + 1), smooth down to a, b -> 0."""

    edges: tuple[float | None, ...] = (-1.0, -1.0)
    signs: tuple[int, ...] = (1, 1)

    def offset(self, eta):
        """-1/a + 1/(a + b) and -1/b + 1/(a + b)."""
        a, b = eta[0] + 1.0, eta[1] + 1.0
        return jnp.stack([-1.0 / a + 1.0 / (a + b), -1.0 / b + 1.0 / (a + b)])
