"""Priors over parameter values: Normal, Laplace, and a hierarchical ARD prior."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractPrior, check_positive
from ._tree import get_parameter_groups, get_parameters


class NormalPrior(AbstractPrior):
    """Zero-mean Normal with standard deviation `scale` on every element."""

    scale: Float[Array, ""]

    def __init__(self, scale=1.0):
        check_positive(scale, "NormalPrior.scale")
        self.scale = jnp.asarray(scale, dtype=float)

    def log_prob(self, value):
        z = value / self.scale
        return jnp.sum(-0.5 * z**2 - jnp.log(self.scale) - 0.5 * math.log(2 * math.pi))


class LaplacePrior(AbstractPrior):
    """Zero-mean Laplace with scale `scale` (density exp(-|w|/s) / 2s) on every element."""

    scale: Float[Array, ""]

    def __init__(self, scale=1.0):
        check_positive(scale, "LaplacePrior.scale")
        self.scale = jnp.asarray(scale, dtype=float)

    def log_prob(self, value):
        return jnp.sum(-jnp.abs(value) / self.scale - jnp.log(2 * self.scale))


class AdaptivePrior(AbstractPrior):
    """Hierarchical (ARD) Normal prior: one learnable scale per parameter group.

    Build it with `AdaptivePrior.for_model(model)`; its `log_scales` leaves can be trained
    with the model (type-II maximum likelihood), or set in closed form by
    `empirical_bayes(model)`: scale^2 = mean(mu^2 + sigma^2) over the group's elements.
    """

    log_scales: dict[str, Array]
    groups: dict[str, tuple[str, ...]] = eqx.field(static=True)

    def __init__(self, groups: dict[str, tuple[str, ...]], scale=1.0):
        check_positive(scale, "AdaptivePrior.scale")
        self.groups = {g: tuple(names) for g, names in groups.items()}
        self.log_scales = {g: jnp.log(jnp.asarray(scale, dtype=float)) for g in self.groups}

    @classmethod
    def for_model(cls, model, scale=1.0, *, by: str = "parameter") -> AdaptivePrior:
        """One group per parameter (`by="parameter"`) or per owning module (`by="module"`)."""
        return cls(get_parameter_groups(model, by=by), scale)

    def prior_for(self, name: str) -> NormalPrior:
        for group, names in self.groups.items():
            if name in names:
                return NormalPrior(jnp.exp(self.log_scales[group]))
        raise ValueError(f"AdaptivePrior has no group for parameter {name!r}; known groups: "
                         f"{sorted(self.groups)}")

    def log_prob(self, value):
        raise ValueError("AdaptivePrior is hierarchical: use prior_for(name).log_prob(value)")

    def empirical_bayes(self, model) -> AdaptivePrior:
        """Closed-form scale update: scale^2 = mean(mu^2 + sigma^2) over each group."""
        params = get_parameters(model)
        log_scales = {}
        for group, names in self.groups.items():
            second = sum(jnp.sum(params[n].mean ** 2 + params[n].width ** 2) for n in names)
            size = sum(params[n].mean.size for n in names)
            log_scales[group] = 0.5 * jnp.log(second / size)
        return eqx.tree_at(lambda p: p.log_scales, self, log_scales)
