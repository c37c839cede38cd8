"""Gamma, Beta, VonMises, LaplaceProduct (closed forms), Quartic, PoissonLogNormal and
GinzburgLandau (no closed form)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.nn import log_sigmoid
from jax.scipy.special import digamma, gammaln, i0e, i1e, polygamma

from ._charts import BetaShapes, GammaShapes
from ._family import ExponentialFamily, VectorFamily
from ._supports import Circle, Interval, Positive, Real


def trigamma(a):
    return polygamma(1, a)


class Gamma(ExponentialFamily):
    """Gamma(shape a, rate b) with T = [log x, x]; eta = [a - 1, -b]."""

    x_shape = ()
    stat_shapes = {"log_x": (), "x": ()}
    support = Positive()
    eta_box = {"log_x": (-0.5, 5.0), "x": (-5.0, -0.2)}
    chart = GammaShapes()

    def _compute_stats(self, x):
        return {"log_x": jnp.log(x), "x": x}

    def stats_from_unconstrained(self, u):
        return jnp.stack([u, jnp.exp(u)])

    def eta_constraints(self, eta):
        return {"eta['log_x'] > -1": eta["log_x"] > -1, "eta['x'] < 0": eta["x"] < 0}

    def _log_partition(self, eta):
        a, b = eta[0] + 1, -eta[1]
        return gammaln(a) - a * jnp.log(b)

    def _mean_stats(self, eta):
        a, b = eta[0] + 1, -eta[1]
        return jnp.stack([digamma(a) - jnp.log(b), a / b])

    def _fisher(self, eta):
        a, b = eta[0] + 1, -eta[1]
        return jnp.array([[trigamma(a), 1 / b], [1 / b, a / b**2]])


class Beta(ExponentialFamily):
    """Beta(a, b) on (0, 1) with T = [log x, log(1 - x)]; eta = [a - 1, b - 1]."""

    x_shape = ()
    stat_shapes = {"log_x": (), "log1m_x": ()}
    support = Interval(0.0, 1.0)
    eta_box = {"log_x": (-0.5, 5.0), "log1m_x": (-0.5, 5.0)}
    chart = BetaShapes()

    def _compute_stats(self, x):
        return {"log_x": jnp.log(x), "log1m_x": jnp.log1p(-x)}

    def stats_from_unconstrained(self, u):
        return jnp.stack([log_sigmoid(u), log_sigmoid(-u)])

    def eta_constraints(self, eta):
        return {
            "eta['log_x'] > -1": eta["log_x"] > -1,
            "eta['log1m_x'] > -1": eta["log1m_x"] > -1,
        }

    def _log_partition(self, eta):
        a, b = eta[0] + 1, eta[1] + 1
        return gammaln(a) + gammaln(b) - gammaln(a + b)

    def _mean_stats(self, eta):
        a, b = eta[0] + 1, eta[1] + 1
        return jnp.stack([digamma(a) - digamma(a + b), digamma(b) - digamma(a + b)])

    def _fisher(self, eta):
        a, b = eta[0] + 1, eta[1] + 1
        t = trigamma(a + b)
        return jnp.array([[trigamma(a) - t, -t], [-t, trigamma(b) - t]])


class VonMises(ExponentialFamily):
    """Von Mises on the circle with T = [cos x, sin x]; eta = kappa [cos m, sin m]."""

    x_shape = ()
    stat_shapes = {"cos_x": (), "sin_x": ()}
    support = Circle()
    eta_box = {"cos_x": (-4.0, 4.0), "sin_x": (-4.0, 4.0)}

    def _compute_stats(self, x):
        return {"cos_x": jnp.cos(x), "sin_x": jnp.sin(x)}

    @staticmethod
    def _kappa_and_ratios(eta):
        """kappa, A = I1/I0, A/kappa and A' = 1 - A/kappa - A^2 (series near kappa = 0)."""
        k2 = eta @ eta
        small = k2 < 1e-8
        kappa = jnp.sqrt(jnp.where(small, 1.0, k2))
        ratio = i1e(kappa) / i0e(kappa)
        a_over_k = jnp.where(small, 0.5 - k2 / 16, ratio / kappa)
        a = jnp.where(small, 0.0, ratio)
        return jnp.where(small, 0.0, kappa), a, a_over_k, 1 - a_over_k - a**2

    def _log_partition(self, eta):
        kappa = jnp.sqrt(eta @ eta)
        return math.log(2 * math.pi) + jnp.log(i0e(kappa)) + kappa

    def _mean_stats(self, eta):
        _, _, a_over_k, _ = self._kappa_and_ratios(eta)
        return a_over_k * eta

    def _fisher(self, eta):
        kappa, _, a_over_k, a_prime = self._kappa_and_ratios(eta)
        n = eta / jnp.where(kappa > 0, kappa, 1.0)
        nn = jnp.outer(n, n)
        return a_prime * nn + a_over_k * (jnp.eye(2) - nn)


def _log_sinhc(d):
    """log(sinh(d) / d), stable for all d with accurate first and second derivatives
    (a series to d^6 below |d| = 0.01; error there ~ d^8 / 37800)."""
    ad = jnp.abs(d)
    small = ad < 1e-2
    safe = jnp.where(small, 1.0, ad)
    series = d**2 / 6 - d**4 / 180 + d**6 / 2835
    return jnp.where(small, series, safe + jnp.log(-jnp.expm1(-2 * safe)) - jnp.log(2 * safe))


class LaplaceProduct(VectorFamily, ExponentialFamily):
    """Independent coordinates with density exp(-eta_1 |x - 1| - eta_2 |x + 1|) each:
    T = [-|x - 1|, -|x + 1|] per coordinate on R^d. Proper iff eta_1 + eta_2 > 0."""

    support = Real()

    @property
    def stat_shapes(self):
        """Two statistics of shape (d,): -|x - 1| and -|x + 1| per coordinate."""
        return {"neg_abs_x_minus_1": (self.d,), "neg_abs_x_plus_1": (self.d,)}

    eta_box = {"neg_abs_x_minus_1": (0.05, 3.0), "neg_abs_x_plus_1": (0.05, 3.0)}
    breakpoints = (-1.0, 1.0)

    def _compute_stats(self, x):
        return {"neg_abs_x_minus_1": -jnp.abs(x - 1), "neg_abs_x_plus_1": -jnp.abs(x + 1)}

    def eta_constraints(self, eta):
        total = eta["neg_abs_x_minus_1"] + eta["neg_abs_x_plus_1"]
        return {"eta['neg_abs_x_minus_1'] + eta['neg_abs_x_plus_1'] > 0": jnp.all(total > 0, -1)}

    def _log_partition(self, eta):
        e1, e2 = eta[: self.d], eta[self.d :]
        s, d = e1 + e2, e1 - e2
        # Pieces x > 1, x < -1 and -1 < x < 1 of the piecewise-exponential density.
        right = -2 * e2 - jnp.log(s)
        left = -2 * e1 - jnp.log(s)
        middle = -s + math.log(2) + _log_sinhc(d)
        return jnp.sum(jnp.logaddexp(jnp.logaddexp(right, left), middle))


class Quartic(ExponentialFamily):
    """exp(eta_1 x + eta_2 x^2 + eta_3 x^3 + eta_4 x^4) on R, eta_4 < 0.

    No closed form; double wells appear for eta_2 > 0. The default box keeps the barrier
    between wells below ~3 nats so that samplers can still cross it.
    """

    x_shape = ()
    stat_shapes = {"x": (), "x2": (), "x3": (), "x4": ()}
    squares = {"x2": "x", "x4": "x2"}
    support = Real()
    eta_box = {"x": (-1.5, 1.5), "x2": (-2.0, 1.5), "x3": (-0.5, 0.5), "x4": (-1.0, -0.2)}

    def _compute_stats(self, x):
        return {"x": x, "x2": x**2, "x3": x**3, "x4": x**4}

    def eta_constraints(self, eta):
        return {"eta['x4'] < 0": eta["x4"] < 0}


class PoissonLogNormal(ExponentialFamily):
    """exp(eta_1 x + eta_2 x^2 + eta_3 e^x) on R, eta_2 < 0, eta_3 < 0: the posterior of the
    latent log-rate x of a count y ~ Poisson(e^x) under a Gaussian prior (eta_1 = y + prior
    precision x prior mean, eta_2 = -precision / 2, eta_3 = -exposure). No closed form."""

    x_shape = ()
    stat_shapes = {"x": (), "x2": (), "exp_x": ()}
    squares = {"x2": "x"}
    support = Real()
    eta_box = {"x": (0.0, 40.0), "x2": (-10.0, -0.1), "exp_x": (-2.0, -0.5)}

    def _compute_stats(self, x):
        return {"x": x, "x2": x**2, "exp_x": jnp.exp(x)}

    def eta_constraints(self, eta):
        return {"eta['x2'] < 0": eta["x2"] < 0, "eta['exp_x'] < 0": eta["exp_x"] < 0}


class GinzburgLandau(ExponentialFamily):
    """A two-component order parameter x in R^2 under a Ginzburg-Landau (O(2) phi^4)
    weight exp(eta . T(x)), T = [x1, x2, x1^2, x2^2, x1 x2, |x|^4], eta_r4 < 0: the
    Mexican hat (a ring of radius ~ sqrt(eta_x1sq / -2 eta_r4)) for positive quadratic
    terms, one well for negative ones, tilted by a field (eta_x1, eta_x2). No closed form
    and two-dimensional x: data by MCMC only."""

    x_shape = (2,)
    stat_shapes = {"x1": (), "x2": (), "x1_sq": (), "x2_sq": (), "x1x2": (), "r4": ()}
    squares = {"x1_sq": "x1", "x2_sq": "x2"}
    support = Real()
    eta_box = {"x1": (-1.0, 1.0), "x2": (-1.0, 1.0), "x1_sq": (-1.0, 1.0),
               "x2_sq": (-1.0, 1.0), "x1x2": (-0.5, 0.5), "r4": (-1.0, -0.25)}

    def _compute_stats(self, x):
        r2 = x[0] ** 2 + x[1] ** 2
        return {"x1": x[0], "x2": x[1], "x1_sq": x[0] ** 2, "x2_sq": x[1] ** 2,
                "x1x2": x[0] * x[1], "r4": r2**2}

    def eta_constraints(self, eta):
        return {"eta['r4'] < 0": eta["r4"] < 0}
