"""Laplace-centred Gauss-Hermite moments: fast where q is unimodal.

On the unconstrained line, g(u) = eta . T(x(u)) + log h + log|dx/du|. Newton (with an
uphill safeguard) finds the mode u*, s = (-g''(u*))^(-1/2) sets the local scale, and
K Gauss-Hermite nodes u_k = u* + sqrt(2) s t_k weighted by w_k exp(g(u_k) - g(u*) + t_k^2)
integrate T. The same with 2K nodes gives the answer and, by the difference, an error
estimate: where it is large (several modes, heavy skew) the caller falls back to the robust
quadrature of `_quadrature`.

For x in R^d, d <= MAX_TENSOR_DIM: the same on the tensor product of K nodes per axis, in
the frame L of the Laplace covariance (-g''(u*))^-1 = L L^T (u = u* + sqrt(2) L t); the mode
search starts from a coordinate-wise grid search. There is no robust route for d > 1: the
caller flags the members whose error estimate is over its tolerance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._family import ExponentialFamily

SEARCH_POINTS = 129
MAX_TENSOR_DIM = 3
NEWTON_STEPS = 16
LINE_SEARCH = 2.0 ** -np.arange(8)


def _search_grid(family: ExponentialFamily, dtype):
    radius = min(family.support.search_radius, 700.0)  # the mode of a shape > ~0.1
    return jnp.sinh(jnp.linspace(-1.0, 1.0, SEARCH_POINTS, dtype=dtype) * np.arcsinh(radius))


def _weighted(log_p, stats, u, log_w, second: bool = False):
    """E[T] (and E[T T^T] with `second`) under the normalised weights exp(log p(u) + log_w)."""
    log_w = jax.vmap(log_p)(u) + log_w
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    weights = jnp.exp(log_w - jnp.max(log_w))
    weights = weights / jnp.sum(weights)
    values = jax.vmap(stats)(u)
    values = jnp.where(weights[:, None] > 0, values, 0.0)
    mean = weights @ values
    return (mean, jnp.einsum("n,na,nb->ab", weights, values, values)) if second else mean


def _gauss_hermite(log_p, stats, mode, scale, nodes: int):
    t, w = (jnp.asarray(a, mode.dtype) for a in np.polynomial.hermite.hermgauss(nodes))
    return _weighted(log_p, stats, mode + jnp.sqrt(2.0) * scale * t, t**2 + jnp.log(w))


def _tensor_rule(d: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor product of `nodes` Gauss-Hermite nodes per axis: (t (K^d, d), log w)."""
    t, w = np.polynomial.hermite.hermgauss(nodes)
    grid = np.stack(np.meshgrid(*[t] * d, indexing="ij"), -1).reshape(-1, d)
    log_w = np.stack(np.meshgrid(*[np.log(w)] * d, indexing="ij"), -1).reshape(-1, d).sum(1)
    return grid, log_w


def _tensor_gauss_hermite(log_p, stats, mode, frame, nodes: int, second: bool = False):
    t, log_w = (jnp.asarray(a, mode.dtype) for a in _tensor_rule(mode.shape[0], nodes))
    u = mode + jnp.sqrt(2.0) * t @ frame.T
    return _weighted(log_p, stats, u, jnp.sum(t**2, 1) + log_w, second)


def tensor_laplace_moments_at(family: ExponentialFamily, eta: Float[Array, " d"],
                              nodes: int, second: bool = False):
    """(mu_T by (2 nodes)^d tensor Gauss-Hermite nodes in the Laplace frame, error estimate)
    at one eta, for x of shape (d,), d <= MAX_TENSOR_DIM; with `second`, (mu_T, Cov[T],
    error). The error is max |mu_K - mu_2K| / (|mu_2K| + 1), +inf where the mode search or
    the frame failed. Traceable (jit, vmap); no validation."""
    shape = tuple(family.x_shape)
    d = int(np.prod(shape))
    log_p = lambda u: family.log_density_unconstrained(u.reshape(shape), eta)
    stats = lambda u: family.stats_from_unconstrained(u.reshape(shape))
    grid = _search_grid(family, eta.dtype)
    u = jnp.zeros(d, eta.dtype)
    for k in range(d):  # coordinate-wise grid search for a start
        candidates = jnp.tile(u, (len(grid), 1)).at[:, k].set(grid)
        values = jax.vmap(log_p)(candidates)
        u = candidates[jnp.argmax(jnp.where(jnp.isfinite(values), values, -jnp.inf))]
    grad, hess = jax.grad(log_p), jax.hessian(log_p)
    steps = jnp.asarray(LINE_SEARCH, eta.dtype)

    def newton(_, u):
        g, h = grad(u), hess(u)
        newton_step = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(-h), True), g)
        concave = jnp.all(jnp.isfinite(newton_step))  # -h positive definite
        step = jnp.where(concave, newton_step, g / (jnp.linalg.norm(g) + 1e-30))
        trial = u + steps[:, None] * step
        scores = jax.vmap(log_p)(trial)
        scores = jnp.where(jnp.isfinite(scores), scores, -jnp.inf)
        best = jnp.argmax(scores)
        return jnp.where(scores[best] > log_p(u), trial[best], u)

    mode = jax.lax.fori_loop(0, NEWTON_STEPS, newton, u)
    frame = jnp.linalg.cholesky(jnp.linalg.inv(-hess(mode)))
    ok = jnp.all(jnp.isfinite(frame))
    frame = jnp.where(ok, frame, jnp.eye(d, dtype=eta.dtype))
    coarse = _tensor_gauss_hermite(log_p, stats, mode, frame, nodes)
    fine = _tensor_gauss_hermite(log_p, stats, mode, frame, 2 * nodes, second)
    mean = fine[0] if second else fine
    error = jnp.max(jnp.abs(mean - coarse) / (jnp.abs(mean) + 1.0))
    error = jnp.where(ok & jnp.all(jnp.isfinite(mean)) & jnp.isfinite(error), error, jnp.inf)
    return (mean, fine[1] - jnp.outer(mean, mean), error) if second else (mean, error)


def laplace_moments_at(family: ExponentialFamily, eta: Float[Array, " d"], nodes: int = 16
                       ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
    """(mu_T by 2*nodes Gauss-Hermite nodes around the mode, error estimate) at one eta.

    The error is max |mu_K - mu_2K| / (|mu_2K| + 1), NaN-free: +inf where the mode search
    failed. Traceable (jit, vmap); one-dimensional, non-periodic x only; no validation."""
    shape = family.support.u_shape(family.x_shape)  # () or (1,): a scalar u either way
    log_p = lambda u: family.log_density_unconstrained(jnp.reshape(u, shape), eta)
    stats = lambda u: family.stats_from_unconstrained(jnp.reshape(u, shape))
    grid = _search_grid(family, eta.dtype)
    values = jax.vmap(log_p)(grid)
    start = grid[jnp.argmax(jnp.where(jnp.isfinite(values), values, -jnp.inf))]
    grad, hess = jax.grad(log_p), jax.grad(jax.grad(log_p))
    steps = jnp.asarray(LINE_SEARCH, eta.dtype)

    def newton(_, u):
        g, h = grad(u), hess(u)
        step = jnp.where(h < 0, -g / h, jnp.sign(g))  # Newton, or uphill where not concave
        trial = u + steps * step
        scores = jax.vmap(log_p)(trial)
        scores = jnp.where(jnp.isfinite(scores), scores, -jnp.inf)
        best = jnp.argmax(scores)
        return jnp.where(scores[best] > log_p(u), trial[best], u)

    mode = jax.lax.fori_loop(0, NEWTON_STEPS, newton, start)
    curvature = -hess(mode)
    ok = jnp.isfinite(curvature) & (curvature > 0)
    scale = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, curvature, 1.0)), 1.0)
    coarse = _gauss_hermite(log_p, stats, mode, scale, nodes)
    fine = _gauss_hermite(log_p, stats, mode, scale, 2 * nodes)
    error = jnp.max(jnp.abs(fine - coarse) / (jnp.abs(fine) + 1.0))
    error = jnp.where(ok & jnp.all(jnp.isfinite(fine)) & jnp.isfinite(error), error, jnp.inf)
    return fine, error
