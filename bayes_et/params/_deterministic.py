"""A point-mass parameter: trained by MAP only."""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array

from ._base import AbstractParameter


class DeterministicParameter(AbstractParameter):
    """A point estimate. Its entropy term is taken as 0 and its `kl(prior)` is the MAP penalty
    `-log prior(mean)`, so that a model mixing kinds keeps one objective."""

    width_field: ClassVar[str | None] = None
    mean: Array

    def entropy(self):
        return jnp.zeros((), jnp.result_type(self.mean))

    def log_prob(self, value):
        raise ValueError("DeterministicParameter is a point mass: it has no log density")

    def kl(self, prior, *, key=None, num_samples=64):
        return -prior.log_prob(self.mean)
