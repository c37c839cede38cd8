"""Gaussian, MultivariateNormal and TruncatedNormal (x >= 0)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from ._family import ExponentialFamily, VectorFamily
from ._supports import Positive, Real

LOG_2PI = math.log(2 * math.pi)


class Gaussian(ExponentialFamily):
    """N(mu, s^2) with T = [x, x^2]; eta = [mu / s^2, -1 / (2 s^2)]."""

    x_shape = ()
    stat_shapes = {"x": (), "x2": ()}
    squares = {"x2": "x"}
    support = Real()
    eta_box = {"x": (-5.0, 5.0), "x2": (-5.0, -0.1)}

    def _compute_stats(self, x):
        return {"x": x, "x2": x**2}

    def eta_constraints(self, eta):
        return {"eta['x2'] < 0": eta["x2"] < 0}

    def _log_partition(self, eta):
        return -(eta[0] ** 2) / (4 * eta[1]) + 0.5 * jnp.log(jnp.pi / -eta[1])

    def _mean_stats(self, eta):
        mu, var = -eta[0] / (2 * eta[1]), -1 / (2 * eta[1])
        return jnp.stack([mu, mu**2 + var])

    def _fisher(self, eta):
        mu, var = -eta[0] / (2 * eta[1]), -1 / (2 * eta[1])
        c = 2 * mu * var
        return jnp.array([[var, c], [c, 4 * mu**2 * var + 2 * var**2]])


class MultivariateNormal(VectorFamily, ExponentialFamily):
    """N(mu, P^-1) on R^d with T = [x, tril(x x^T)].

    The second statistic is the lower triangle of x x^T in row-major order
    (``numpy.tril_indices(d)``), entries x_i x_j for i >= j, so no product is repeated.
    The density is exp(eta_x . x + sum_{i>=j} eta_ij x_i x_j), hence the precision P has
    P_ii = -2 eta_ii and P_ij = P_ji = -eta_ij for i > j, and eta_x = P mu.
    """

    support = Real()

    def __init__(self, d: int = 2):
        super().__init__(d)

    @property
    def stat_shapes(self):
        """x: (d,), xxT: (d (d + 1) / 2,) (the lower triangle of x x^T, row-major)."""
        return {"x": (self.d,), "xxT": (self.d * (self.d + 1) // 2,)}

    @property
    def tril(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the lower triangle, each (d (d + 1) / 2,): the order of xxT."""
        return np.tril_indices(self.d)

    @property
    def eta_box(self):
        """Default box: eta_x in [-2, 2]; eta_xxT in [-3, -0.5] on the diagonal and
        [-0.5, 0.5] off it."""
        rows, cols = self.tril
        diag = rows == cols
        return {
            "x": (-2.0, 2.0),
            "xxT": (np.where(diag, -3.0, -0.5), np.where(diag, -0.5, 0.5)),
        }

    def _compute_stats(self, x):
        return {"x": x, "xxT": jnp.outer(x, x)[self.tril]}

    def precision(self, eta_xxT):
        """The precision matrix P (d, d) from the flat tril natural parameters."""
        rows, cols = self.tril
        off = jnp.zeros(eta_xxT.shape[:-1] + (self.d, self.d)).at[..., rows, cols].set(eta_xxT)
        return -(off + jnp.swapaxes(off, -1, -2))  # the diagonal doubles: P_ii = -2 eta_ii

    def eta_constraints(self, eta):
        eigmin = jnp.linalg.eigvalsh(self.precision(eta["xxT"]))[..., 0]
        return {"precision from eta['xxT'] is positive definite": eigmin > 0}

    def _split(self, eta):
        prec = self.precision(eta[self.d :])
        cov = jnp.linalg.inv(prec)
        return cov @ eta[: self.d], cov, prec

    def _log_partition(self, eta):
        mu, _, prec = self._split(eta)
        logdet = jnp.linalg.slogdet(prec)[1]
        return 0.5 * eta[: self.d] @ mu - 0.5 * logdet + 0.5 * self.d * LOG_2PI

    def _mean_stats(self, eta):
        mu, cov, _ = self._split(eta)
        return jnp.concatenate([mu, (cov + jnp.outer(mu, mu))[self.tril]])

    def _fisher(self, eta):
        mu, s, _ = self._split(eta)
        i, j = self.tril
        # Isserlis: Cov(x_a, x_i x_j) = mu_i S_aj + mu_j S_ai, and
        # Cov(x_i x_j, x_k x_l) = S_ik S_jl + S_il S_jk + mu_i mu_k S_jl + mu_i mu_l S_jk
        #                         + mu_j mu_k S_il + mu_j mu_l S_ik.
        cross = mu[i][None, :] * s[:, j] + mu[j][None, :] * s[:, i]
        k, l_ = i[:, None], j[:, None]
        ii, jj = i[None, :], j[None, :]
        quad = (
            s[k, ii] * s[l_, jj] + s[k, jj] * s[l_, ii]
            + mu[k] * mu[ii] * s[l_, jj] + mu[k] * mu[jj] * s[l_, ii]
            + mu[l_] * mu[ii] * s[k, jj] + mu[l_] * mu[jj] * s[k, ii]
        )
        return jnp.block([[s, cross], [cross.T, quad]])


class TruncatedNormal(ExponentialFamily):
    """A normal restricted to x >= 0: T = [x, x^2], density exp(eta_1 x + eta_2 x^2)."""

    x_shape = ()
    stat_shapes = {"x": (), "x2": ()}
    squares = {"x2": "x"}
    support = Positive()
    eta_box = {"x": (-3.0, 3.0), "x2": (-3.0, -0.2)}

    def _compute_stats(self, x):
        return {"x": x, "x2": x**2}

    def eta_constraints(self, eta):
        return {"eta['x2'] < 0": eta["x2"] < 0}

    @staticmethod
    def _parent(eta):
        """Parent normal sd s and alpha = -m / s, the standardised truncation point."""
        s = jnp.sqrt(-1 / (2 * eta[1]))
        return s, -eta[0] * s  # -m / s with m = -eta_1 / (2 eta_2) = eta_1 s^2

    def _log_partition(self, eta):
        s, alpha = self._parent(eta)
        log_j0, _ = _shifted_moments(alpha)
        return jnp.log(s) + log_j0

    def _raw_moments(self, eta):
        """E[x^k], k = 1..4: x = s u with u = z - alpha >= 0, z standard normal truncated to
        z >= alpha, so E[x^k] = s^k E[u^k] (`_shifted_moments`: stable in the far tail)."""
        s, alpha = self._parent(eta)
        _, u = _shifted_moments(alpha)
        return tuple(s ** (k + 1) * u[k] for k in range(4))

    def _mean_stats(self, eta):
        m1, m2, _, _ = self._raw_moments(eta)
        return jnp.stack([m1, m2])

    def _fisher(self, eta):
        m1, m2, m3, m4 = self._raw_moments(eta)
        c = m3 - m1 * m2
        return jnp.array([[m2 - m1**2, c], [c, m4 - m2**2]])


TAIL_ALPHA = 3.0  # beyond it the continued fraction (60 terms: relative error ~ 3e-16)
FRACTION_TERMS = 60


def _shifted_moments(alpha):
    """(log J_0, (E[u], ..., E[u^4])) with J_k = int_0^inf u^k exp(-alpha u - u^2/2) du, the
    moments of u = z - alpha for z ~ N(0, 1) truncated to z >= alpha. The ratios
    rho_k = J_k / J_{k-1} satisfy rho_k = k / (alpha + rho_{k+1}) and J_0 = 1 / (alpha +
    rho_1): for alpha > TAIL_ALPHA this continued fraction, run backwards, sums positive
    terms only (no cancellation however far the tail: E[x] at mean -1000 sd 1 to 1e-16);
    below it the forward recursion J_{k+1} = k J_{k-1} - alpha J_k from the Mills ratio."""
    tail = alpha > TAIL_ALPHA
    far = jnp.where(tail, alpha, TAIL_ALPHA + 1.0)  # each branch sees only its own alpha
    rho, rhos = jnp.sqrt(FRACTION_TERMS + 1.0), {}
    for k in range(FRACTION_TERMS, 0, -1):
        rho = k / (far + rho)
        rhos[k] = rho
    tail_u = [rhos[1]]
    for k in (2, 3, 4):
        tail_u.append(tail_u[-1] * rhos[k])
    near = jnp.where(tail, 0.0, alpha)
    near_log_j0 = log_ndtr(-near) + 0.5 * near**2 + 0.5 * LOG_2PI
    near_u = [jnp.exp(-near_log_j0) - near]
    near_u.append(1 - near * near_u[0])
    near_u.append(2 * near_u[0] - near * near_u[1])
    near_u.append(3 * near_u[1] - near * near_u[2])
    log_j0 = jnp.where(tail, -jnp.log(far + rhos[1]), near_log_j0)
    return log_j0, tuple(jnp.where(tail, t, n) for t, n in zip(tail_u, near_u, strict=True))


class MultivariatePoissonLogNormal(MultivariateNormal):
    """exp(eta_x . x + eta_xxT . tril(x x^T) + eta_exp . e^x) on R^d: the posterior of the
    latent log-rates x of d counts y_k ~ Poisson(e^{x_k}) under a Gaussian prior N(m, P^-1)
    (eta_x = y + P m, eta_xxT the precision's lower triangle as in MultivariateNormal,
    eta_exp = -exposures). T = [x, tril(x x^T), e^x]; no closed form (the tensor
    Gauss-Hermite route for d <= 3, else sampling)."""

    @property
    def stat_shapes(self):
        """x: (d,), xxT: (d (d + 1) / 2,) (row-major lower triangle), exp_x: (d,)."""
        return {**super().stat_shapes, "exp_x": (self.d,)}

    @property
    def eta_box(self):
        """Default box: MultivariateNormal's, eta_x in [0, 20], eta_exp in [-2, -0.5]."""
        return {**super().eta_box, "x": (0.0, 20.0), "exp_x": (-2.0, -0.5)}

    def _compute_stats(self, x):
        return {**super()._compute_stats(x), "exp_x": jnp.exp(x)}

    def eta_constraints(self, eta):
        return {**super().eta_constraints(eta),
                "eta['exp_x'] < 0": jnp.all(eta["exp_x"] < 0, -1)}

    # no closed form: the Gaussian's are not inherited
    _log_partition = ExponentialFamily._log_partition
    _mean_stats = ExponentialFamily._mean_stats
    _fisher = ExponentialFamily._fisher
