"""Mean-field Laplace parameter."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._base import AbstractParameter, width_from_raw
from ._priors import LaplacePrior, NormalPrior


class LaplacianParameter(AbstractParameter):
    """q(w) = Laplace(mean, scale) elementwise, scale = softplus(raw_scale) + floor."""

    width_field: ClassVar[str | None] = 'raw_scale'
    mean: Array
    raw_scale: Array

    @property
    def scale(self) -> Array:
        """Laplace scale b, shape of the mean (softplus of raw_scale plus a floor)."""
        return width_from_raw(self.raw_scale)

    @property
    def width(self) -> Array:
        """The Laplace scale (shape of the mean)."""
        return self.scale

    def sample(self, key):
        return self.mean + self.scale * jax.random.laplace(
            key, self.shape, jnp.result_type(self.mean)
        )

    def entropy(self):
        return jnp.sum(1.0 + jnp.log(2 * self.scale))

    def log_prob(self, value):
        return jnp.sum(-jnp.abs(value - self.mean) / self.scale - jnp.log(2 * self.scale))

    def kl(self, prior, *, key=None, num_samples=64):
        mu, b = self.mean, self.scale
        if isinstance(prior, LaplacePrior):
            s = prior.scale
            return jnp.sum(
                jnp.log(s / b) + (jnp.abs(mu) + b * jnp.exp(-jnp.abs(mu) / b)) / s - 1.0
            )
        if isinstance(prior, NormalPrior):
            s = prior.scale
            cross = jnp.sum(0.5 * jnp.log(2 * math.pi * s**2) + (mu**2 + 2 * b**2) / (2 * s**2))
            return cross - self.entropy()
        return self._monte_carlo_kl(prior, key, num_samples)
