"""Exact moments by quadrature on the unconstrained line (any family with one-dimensional x).

Two passes per eta, in float64:
1. a coarse grid, sinh-spaced over |u| <= support.search_radius (fine near 0, coarse far
   out), locates where the log density is within `LOG_DROP` nats of its maximum;
2. composite Gauss-Legendre covers that bracket with panels sinh-spaced about the peak
   (fine in the core, growing geometrically into the tails), split at the family's
   `breakpoints` (kinks of the density), so each panel sees a smooth integrand. Endpoint
   singularities in x (Beta or Gamma with shape down to 1e-3) are exponential tails in u,
   long (~1e5 wide) but smooth.
The answer is checked, not trusted: mass within LOG_DROP nats of the peak at an end of the
search grid, or a difference above ERROR_TOL between the rule and the same rule on half the
panels, makes `quadrature_moments` raise (and `moments_at` return NaN, which the CAVI
providers flag as non-finite). Periodic supports (the circle) use the periodic trapezoid
rule over one period instead.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._family import ExponentialFamily
from ._routes import pick_route

LOG_DROP = 80.0  # nats below the peak that count as no mass
COARSE_POINTS = 2049
PANELS, NODES_PER_PANEL = 256, 16
ERROR_TOL = 1e-8  # largest accepted error estimate (relative to |mu| + sd)
PERIODIC_POINTS = 1024
BATCH = 128


def _finite_or_zero_mass(log_w):
    """Non-finite log densities only arise from overflow far out (e.g. x^2 at x = 1e200):
    they count as zero mass."""
    return jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)


def _weighted_moments(log_w, stats):
    """Normalised mean and covariance of stats (n, k) under weights exp(log_w) (n,)."""
    log_w = _finite_or_zero_mass(log_w)
    w = jnp.exp(log_w - jnp.max(log_w))
    w = w / jnp.sum(w)
    stats = jnp.where(w[:, None] > 0, stats, 0.0)  # T may overflow where the weight is 0
    mu = w @ stats
    centred = stats - mu
    cov = (centred * w[:, None]).T @ centred
    return mu, 0.5 * (cov + cov.T)


def _gauss_legendre_panels(edges, panels_per_segment):
    """Nodes and weights of composite Gauss-Legendre on consecutive segments of `edges`."""
    x, w = np.polynomial.legendre.leggauss(NODES_PER_PANEL)
    x01 = (np.arange(panels_per_segment)[:, None] + (x[None, :] + 1) / 2) / panels_per_segment
    w01 = np.broadcast_to(w / 2 / panels_per_segment, x01.shape)
    starts, lengths = edges[:-1, None], (edges[1:] - edges[:-1])[:, None]
    return jnp.ravel(starts + lengths * x01.ravel()), jnp.ravel(lengths * w01.ravel())


def _sinh_edges(lo, hi, centre, scale, count: int):
    """`count + 1` panel edges from lo to hi, fine (spacing ~ scale / 40) near `centre`
    and growing geometrically into long tails (an exp(a u) tail with a = 1e-3 spans
    ~1e5 in u)."""
    t0, t1 = jnp.arcsinh((lo - centre) / scale), jnp.arcsinh((hi - centre) / scale)
    return centre + scale * jnp.sinh(jnp.linspace(t0, t1, count + 1))


def _moments_one(family: ExponentialFamily, coarse, eta):
    """(mu, cov, error estimate) at one eta: mu is NaN where the density's mass reaches the
    end of the search grid (the answer would be wrong)."""
    def moments_on(u, log_quad_w):
        as_x = jnp.reshape(u, (-1, *family.x_shape))
        log_p = jax.vmap(lambda v: family.log_density_unconstrained(v, eta))(as_x)
        stats = jax.vmap(family.stats_from_unconstrained)(as_x)
        return _weighted_moments(log_p + log_quad_w, stats)

    if family.support.periodic:  # coarse is one period of x: the periodic trapezoid rule
        x = jnp.reshape(coarse, (-1, *family.x_shape))
        stats = family.compute_stats(x)
        log_w = stats @ eta + jax.vmap(family.log_base_measure)(x)
        mu, cov = _weighted_moments(log_w, stats)
        half, _ = _weighted_moments(log_w[::2], stats[::2])  # its error bounds this one's
        sd = jnp.sqrt(jnp.clip(jnp.diagonal(cov), 0.0))
        return mu, cov, jnp.max(jnp.abs(mu - half) / (jnp.abs(mu) + sd))
    log_w = jax.vmap(lambda v: family.log_density_unconstrained(v, eta))(
        jnp.reshape(coarse, (-1, *family.x_shape))
    )
    log_w = _finite_or_zero_mass(log_w)
    n, peak = coarse.shape[0], jnp.max(log_w)
    idx = jnp.arange(n)

    def bracket(drop):
        keep = log_w > peak - drop
        return jnp.min(jnp.where(keep, idx, n)), jnp.max(jnp.where(keep, idx, -1))

    first, last = bracket(LOG_DROP)
    inside = (first > 0) & (last < n - 1)  # no mass within LOG_DROP nats at the grid ends
    lo, hi = coarse[jnp.clip(first - 1, 0, n - 1)], coarse[jnp.clip(last + 1, 0, n - 1)]
    top = jnp.argmax(log_w)
    # panels as fine as the search grid at the peak, growing geometrically from there:
    # resolves a narrow core and reaches flat exp(a u) tails alike
    scale = coarse[jnp.clip(top + 1, 0, n - 1)] - coarse[jnp.clip(top - 1, 0, n - 1)]
    kinks = family.support.inverse(jnp.asarray(sorted(family.breakpoints), coarse.dtype))

    def on_panels(count: int):
        edges = _sinh_edges(lo, hi, coarse[top], scale, count)
        u, quad_w = _gauss_legendre_panels(jnp.sort(jnp.concatenate(
            [edges, jnp.clip(kinks, lo, hi)])), 1)
        return moments_on(u, jnp.log(quad_w))

    mu, cov = on_panels(PANELS)
    half, _ = on_panels(PANELS // 2)  # the error of the coarser rule bounds this one's
    sd = jnp.sqrt(jnp.clip(jnp.diagonal(cov), 0.0))
    error = jnp.max(jnp.abs(mu - half) / (jnp.abs(mu) + sd))
    return jnp.where(inside, mu, jnp.nan), cov, error


def _coarse_grid(family, dtype):
    if family.support.periodic:
        return jnp.linspace(-jnp.pi, jnp.pi, PERIODIC_POINTS, endpoint=False, dtype=dtype)
    radius = family.support.search_radius
    return jnp.sinh(jnp.linspace(-1.0, 1.0, COARSE_POINTS, dtype=dtype) * np.arcsinh(radius))


def moments_at(
    family: ExponentialFamily, eta: Float[Array, " eta_dim"]
) -> tuple[Float[Array, " eta_dim"], Float[Array, "eta_dim eta_dim"]]:
    """(mu_T, cov_TT) at one valid eta by quadrature, traceable (jit/vmap), in eta's dtype:
    for use inside jitted code. One-dimensional x only; no validation. mu is NaN where the
    answer fails its checks."""
    mu, cov, error = _moments_one(family, _coarse_grid(family, eta.dtype), eta)
    return jnp.where(error <= ERROR_TOL, mu, jnp.nan), cov


@functools.partial(jax.jit, static_argnums=0)
def _moments_batch(family, eta):
    coarse = _coarse_grid(family, eta.dtype)
    return jax.lax.map(lambda e: _moments_one(family, coarse, e), eta, batch_size=BATCH)


def _check_one_dimensional(family: ExponentialFamily):
    if int(np.prod(family.x_shape)) != 1:
        raise ValueError(
            f"quadrature_moments needs one-dimensional x; {family.name} has x_shape "
            f"{family.x_shape}: use its closed form or bayes_et.data.mcmc_moments"
        )


def quadrature_moments(
    family: ExponentialFamily, eta: Float[Array, "*batch eta_dim"]
) -> tuple[Float[Array, "*batch eta_dim"], Float[Array, "*batch eta_dim eta_dim"]]:
    """(mu_T, cov_TT) of a family with one-dimensional x, by quadrature in float64.

    `eta` may have any leading batch axes; the result is NumPy float64 (ground truth, safe
    to use with or without jax_enable_x64). Invalid eta raise ValueError naming the
    violated constraint; so do eta where the answer fails its checks (mass beyond the
    search grid, or an error estimate above ERROR_TOL relative to |mu| + sd).
    """
    _check_one_dimensional(family)
    with jax.enable_x64(True):
        eta = family.validate_eta(jnp.asarray(eta, jnp.float64))
        batch = eta.shape[:-1]
        flat = jnp.reshape(eta, (-1, family.eta_dim))
        mu, cov, error = (np.asarray(a) for a in _moments_batch(family, flat))
        bad = ~np.isfinite(mu).all(1) | ~(error <= ERROR_TOL)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            why = ("its mass reaches the end of the search grid (|u| <= "
                   f"{family.support.search_radius:g})" if not np.isfinite(mu[i]).all()
                   else f"the error estimate {error[i]:.1e} exceeds {ERROR_TOL:g}")
            raise ValueError(f"quadrature_moments: {family.name} at eta = "
                             f"{np.asarray(flat[i]).tolist()} ({int(bad.sum())} of {len(flat)} "
                             f"eta): {why}")
        k = family.eta_dim
        return np.asarray(mu).reshape(*batch, k), np.asarray(cov).reshape(*batch, k, k)


def exact_moments(
    family: ExponentialFamily, eta: Float[Array, "*batch eta_dim"]
) -> tuple[Float[Array, "*batch eta_dim"], Float[Array, "*batch eta_dim eta_dim"]]:
    """(mu_T, cov_TT) as NumPy float64: the closed form where the family has one, else
    quadrature for one-dimensional x; otherwise ValueError (use MCMC)."""
    route = pick_route(family, robust=True)
    name = None if route is None else route.name
    if name == "closed_form":
        with jax.enable_x64(True):
            eta = jnp.asarray(eta, jnp.float64)
            return np.asarray(family.mean_stats(eta)), np.asarray(family.fisher(eta))
    if name == "quadrature":
        return quadrature_moments(family, eta)
    raise ValueError(
        f"exact_moments: {family.name} has no closed form and {family.x_shape}-shaped x: "
        "use bayes_et.data.mcmc_moments"
    )
