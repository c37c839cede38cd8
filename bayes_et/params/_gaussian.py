"""Mean-field Gaussian parameter."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr
from jaxtyping import Array

from ._base import AbstractParameter, width_from_raw
from ._priors import LaplacePrior, NormalPrior


class GaussianParameter(AbstractParameter):
    """q(w) = N(mean, stdv^2) elementwise, stdv = softplus(raw_stdv) + floor."""

    width_field: ClassVar[str | None] = 'raw_stdv'
    mean: Array
    raw_stdv: Array

    @property
    def stdv(self) -> Array:
        """Standard deviation, shape of the mean (softplus of raw_stdv plus a floor)."""
        return width_from_raw(self.raw_stdv)

    @property
    def width(self) -> Array:
        """The standard deviation (shape of the mean)."""
        return self.stdv

    def sample(self, key):
        noise = jax.random.normal(key, self.shape, jnp.result_type(self.mean))
        return self.mean + self.stdv * noise

    def entropy(self):
        return jnp.sum(0.5 * math.log(2 * math.pi * math.e) + jnp.log(self.stdv))

    def log_prob(self, value):
        z = (value - self.mean) / self.stdv
        return jnp.sum(-0.5 * z**2 - jnp.log(self.stdv) - 0.5 * math.log(2 * math.pi))

    def kl(self, prior, *, key=None, num_samples=64):
        mu, sd = self.mean, self.stdv
        if isinstance(prior, NormalPrior):
            s = prior.scale
            return jnp.sum(jnp.log(s / sd) + (sd**2 + mu**2) / (2 * s**2) - 0.5)
        if isinstance(prior, LaplacePrior):
            # Cross-entropy needs E|w| under N(mu, sd^2): the folded-normal mean.
            abs_mean = sd * math.sqrt(2 / math.pi) * jnp.exp(-0.5 * (mu / sd) ** 2) + mu * (
                1 - 2 * ndtr(-mu / sd)
            )
            cross = jnp.sum(jnp.log(2 * prior.scale) + abs_mean / prior.scale)
            return cross - self.entropy()
        return self._monte_carlo_kl(prior, key, num_samples)
