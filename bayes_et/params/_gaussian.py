"""Mean-field Gaussian parameter."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._base import AbstractParameter, width_from_raw


class GaussianParameter(AbstractParameter):
    """q(w) = N(mean, stdv^2) elementwise, stdv = softplus(raw_stdv) + floor."""

    width_field: ClassVar[str | None] = 'raw_stdv'
    noise: ClassVar = staticmethod(jax.random.normal)
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

    def entropy(self):
        return jnp.sum(0.5 * math.log(2 * math.pi * math.e) + jnp.log(self.stdv))

    def log_prob(self, value):
        z = (value - self.mean) / self.stdv
        return jnp.sum(-0.5 * z**2 - jnp.log(self.stdv) - 0.5 * math.log(2 * math.pi))
