"""Mean-field Laplace parameter."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._base import AbstractParameter, width_from_raw


class LaplacianParameter(AbstractParameter):
    """q(w) = Laplace(mean, scale) elementwise, scale = softplus(raw_scale) + floor."""

    width_field: ClassVar[str | None] = 'raw_scale'
    noise: ClassVar = staticmethod(jax.random.laplace)
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

    def entropy(self):
        return jnp.sum(1.0 + jnp.log(2 * self.scale))

    def log_prob(self, value):
        return jnp.sum(-jnp.abs(value - self.mean) / self.scale - jnp.log(2 * self.scale))
