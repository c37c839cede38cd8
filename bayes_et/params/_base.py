"""The abstract parameter and the positive-width bijection shared by all kinds."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

WIDTH_FLOOR = 1e-6
"""Smallest width any parameter can reach: width = softplus(raw) + WIDTH_FLOOR."""


def width_from_raw(raw: Array) -> Array:
    """Positive width from an unconstrained leaf (softplus plus a small floor)."""
    return jax.nn.softplus(raw) + WIDTH_FLOOR


def raw_from_width(width, *, name: str = "width") -> Array:
    """Stable inverse of `width_from_raw`; raises ValueError for widths at or below the floor."""
    width = jnp.asarray(width)
    if not isinstance(width, jax.core.Tracer) and bool(jnp.any(width <= WIDTH_FLOOR)):
        raise ValueError(
            f"{name} must be > {WIDTH_FLOOR:g} everywhere; got minimum {float(jnp.min(width)):g}"
        )
    excess = width - WIDTH_FLOOR
    # softplus^{-1}(y) = y + log(-expm1(-y)), stable for tiny and large y.
    return excess + jnp.log(-jnp.expm1(-excess))


def check_positive(value, name: str):
    """Eager check that `value` is positive everywhere (skipped for traced values)."""
    if not isinstance(value, jax.core.Tracer) and bool(jnp.any(jnp.asarray(value) <= 0)):
        raise ValueError(f"{name} must be > 0 everywhere; got {value!r}")


class AbstractPrior(eqx.Module):
    """A prior over parameter values; `prior_for(name)` resolves hierarchical priors."""

    @abc.abstractmethod
    def log_prob(self, value: Array) -> Float[Array, ""]:
        """Sum of the log density over all elements of `value`."""

    def prior_for(self, name: str) -> AbstractPrior:
        """The prior that applies to the parameter called `name` (itself for flat priors)."""
        return self


KL_RULES: dict[tuple[type, type], Callable[[Any, Any], Array]] = {}
"""Closed-form KL(q || prior) by (parameter kind, prior kind); filled by params/_kl.py.
A new kind or prior adds its rules there (no isinstance dispatch in the kinds)."""


class AbstractParameter(eqx.Module):
    """A variational distribution over one array; subclasses add a width leaf."""

    mean: eqx.AbstractVar[Array]
    width_field: ClassVar[str | None] = None
    """Name of the unconstrained width leaf, or None for a point mass."""
    noise: ClassVar[Callable[..., Array] | None] = None
    """The standard noise e (a `jax.random` sampler taking key, shape, dtype) of a draw
    mean + width * e, or None for a point mass. Parameters of one kind then share one call
    of it (`sample_all_parameters`): a program with one random call per kind compiles
    several times faster than one with a call per parameter."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the parameter (of its mean)."""
        return jnp.shape(self.mean)

    @property
    def width(self) -> Array:
        """Standard deviation for Gaussians, scale for Laplacians, 0 for deterministic."""
        return jnp.zeros_like(self.mean)

    def sample(self, key: PRNGKeyArray) -> Array:
        """One draw with the shape of `mean`."""
        if self.noise is None:
            return self.mean
        return self.at_noise(self.noise(key, self.shape, jnp.result_type(self.mean)))

    def at_noise(self, noise: Array) -> Array:
        """The draw of standard noise `noise` (shape of `mean`): mean + width * noise."""
        return self.mean + self.width * noise

    @abc.abstractmethod
    def entropy(self) -> Float[Array, ""]:
        """Differential entropy summed over elements (nats, constants included)."""

    @abc.abstractmethod
    def log_prob(self, value: Array) -> Float[Array, ""]:
        """Log density of `value`, summed over elements."""

    def kl(
        self, prior: AbstractPrior, *, key: PRNGKeyArray | None = None, num_samples: int = 64
    ) -> Float[Array, ""]:
        """KL(q || prior): closed form where KL_RULES has one for (this kind, the prior's
        kind), else Monte Carlo (`key`)."""
        rule = KL_RULES.get((type(self), type(prior)))
        if rule is not None:
            return rule(self, prior)
        return self._monte_carlo_kl(prior, key, num_samples)

    def _monte_carlo_kl(self, prior, key, num_samples):
        if key is None:
            raise ValueError(
                f"kl of {type(self).__name__} against {type(prior).__name__} has no closed form: "
                "pass key=... for the Monte-Carlo estimate"
            )
        draws = jax.vmap(self.sample)(jax.random.split(key, num_samples))
        return jnp.mean(jax.vmap(lambda w: self.log_prob(w) - prior.log_prob(w))(draws))
