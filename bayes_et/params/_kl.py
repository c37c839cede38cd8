"""Closed-form KL(q || prior) rules, one per (parameter kind, prior kind), in one table.

Kinds and priors import nothing of each other; this module knows both and fills
`KL_RULES`, which `AbstractParameter.kl` consults (Monte Carlo where no rule exists)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import ndtr

from ._base import KL_RULES
from ._gaussian import GaussianParameter
from ._laplacian import LaplacianParameter
from ._priors import LaplacePrior, NormalPrior


def _gaussian_normal(q: GaussianParameter, prior: NormalPrior):
    mu, sd, s = q.mean, q.stdv, prior.scale
    return jnp.sum(jnp.log(s / sd) + (sd**2 + mu**2) / (2 * s**2) - 0.5)


def _gaussian_laplace(q: GaussianParameter, prior: LaplacePrior):
    # the cross-entropy needs E|w| under N(mu, sd^2): the folded-normal mean
    mu, sd = q.mean, q.stdv
    abs_mean = sd * math.sqrt(2 / math.pi) * jnp.exp(-0.5 * (mu / sd) ** 2) + mu * (
        1 - 2 * ndtr(-mu / sd))
    return jnp.sum(jnp.log(2 * prior.scale) + abs_mean / prior.scale) - q.entropy()


def _laplace_laplace(q: LaplacianParameter, prior: LaplacePrior):
    mu, b, s = q.mean, q.scale, prior.scale
    return jnp.sum(jnp.log(s / b) + (jnp.abs(mu) + b * jnp.exp(-jnp.abs(mu) / b)) / s - 1.0)


def _laplace_normal(q: LaplacianParameter, prior: NormalPrior):
    mu, b, s = q.mean, q.scale, prior.scale
    cross = jnp.sum(0.5 * jnp.log(2 * math.pi * s**2) + (mu**2 + 2 * b**2) / (2 * s**2))
    return cross - q.entropy()


KL_RULES.update({
    (GaussianParameter, NormalPrior): _gaussian_normal,
    (GaussianParameter, LaplacePrior): _gaussian_laplace,
    (LaplacianParameter, LaplacePrior): _laplace_laplace,
    (LaplacianParameter, NormalPrior): _laplace_normal,
})
