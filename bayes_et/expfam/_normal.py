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
        """Parent normal (m, s) and alpha = -m / s, the standardised truncation point."""
        s = jnp.sqrt(-1 / (2 * eta[1]))
        m = -eta[0] / (2 * eta[1])
        return m, s, -m / s

    def _log_partition(self, eta):
        m, s, alpha = self._parent(eta)
        return m**2 / (2 * s**2) + jnp.log(s) + 0.5 * LOG_2PI + log_ndtr(-alpha)

    def _raw_moments(self, eta):
        """E[x^k], k = 1..4, by the recursion m_k = m m_{k-1} + (k-1) s^2 m_{k-2}
        (+ s * phi(alpha) / Z for k = 1, from the boundary at 0)."""
        m, s, alpha = self._parent(eta)
        mills = jnp.exp(-0.5 * alpha**2 - 0.5 * LOG_2PI - log_ndtr(-alpha))
        m1 = m + s * mills
        m2 = m * m1 + s**2
        m3 = m * m2 + 2 * s**2 * m1
        m4 = m * m3 + 3 * s**2 * m2
        return m1, m2, m3, m4

    def _mean_stats(self, eta):
        m1, m2, _, _ = self._raw_moments(eta)
        return jnp.stack([m1, m2])

    def _fisher(self, eta):
        m1, m2, m3, m4 = self._raw_moments(eta)
        c = m3 - m1 * m2
        return jnp.array([[m2 - m1**2, c], [c, m4 - m2**2]])
