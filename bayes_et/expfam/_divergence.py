"""KL divergence between two members of one family, from exact log-partitions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._family import ExponentialFamily
from ._quadrature import exact_moments

PATH_NODES = 32


def log_partition_difference(family: ExponentialFamily, eta_from, eta_to) -> float:
    """A(eta_to) - A(eta_from), float64: the closed form, else the path integral
    int_0^1 mu(eta_from + t d) . d dt (d = eta_to - eta_from) over exact moments, by
    Gauss-Legendre (the segment between valid eta is valid: the space is convex)."""
    a, b = (np.asarray(e, np.float64) for e in (eta_from, eta_to))
    if family.has_log_partition:
        with jax.enable_x64(True):
            values = np.asarray(family.log_partition(jnp.stack([jnp.asarray(a), jnp.asarray(b)])))
        return float(values[1] - values[0])
    nodes, weights = np.polynomial.legendre.leggauss(PATH_NODES)
    t = (nodes + 1) / 2
    mu = exact_moments(family, a[None] + t[:, None] * (b - a)[None])[0]
    return float(weights / 2 @ (mu @ (b - a)))


def kl_divergence(family: ExponentialFamily, eta_q: Float[Array, " d"],
                  eta_p: Float[Array, " d"]) -> float:
    """KL(q || p) = A(eta_p) - A(eta_q) - (eta_p - eta_q) . mu(eta_q), in float64."""
    q, p = (np.asarray(family.validate_eta(np.asarray(e, np.float64), name), np.float64)
            for e, name in ((eta_q, "eta_q"), (eta_p, "eta_p")))
    mu_q = exact_moments(family, q)[0]
    return log_partition_difference(family, q, p) - float((p - q) @ mu_q)
