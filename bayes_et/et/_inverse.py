"""The inverse map mu -> eta for any ET network."""

from __future__ import annotations

import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from ._base import AbstractET


def eta_from_mu(
    model: AbstractET,
    mu: Float[Array, " d"],
    *,
    eta_init: Float[Array, " d"] | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    max_steps: int = 256,
) -> Float[Array, " d"]:
    """The eta with model(eta) = mu: exact for glow; otherwise damped Newton
    (Levenberg-Marquardt, optimistix) on the model's Jacobian, which is the Fisher and so
    positive definite for the structured models, started from `eta_init` (default: the
    data centre). Damping keeps far targets from overshooting."""
    if model.has_exact_inverse:
        return model.inverse(mu)
    mu = model._check(mu)
    start = model.centre() if eta_init is None else jnp.asarray(eta_init)
    solution = optx.least_squares(lambda eta, _: model._forward(eta) - mu,
                                  optx.LevenbergMarquardt(rtol=rtol, atol=atol), start,
                                  max_steps=max_steps, throw=False)
    return solution.value
