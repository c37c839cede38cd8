"""The network's smooth error as a function of eta: a Gaussian process fitted to the
held-out residuals of each statistic. Its posterior mean corrects the answer where the
held-out targets show a one-signed error (a band centred on the network could not cover
it), its posterior variance joins the band, and a draw of it is a smooth function of eta,
values and slopes, shared by every member of a CAVI plate: the error that adds up in a
global update. Draws by pathwise conditioning (Wilson et al., ICML 2020): a prior draw in
random Fourier features moved by the exact kernel's update to the data, consistent at
any eta. The statistics' fields share their error as their held-out residuals do: a draw's
deviation of statistic j is s_j sum_l C_jl dev_l / s_l, the statistics' own deviations
mixed by the Cholesky factor C of that correlation (a linear model of coregionalisation),
so the band's covariance is full and a draw moves the statistics together."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize
from jaxtyping import Array, Float, PRNGKeyArray

NUM_FEATURES = 2048  # of a prior draw (256 overstated the variance 1.6x where data pin it)
MAX_STATISTICS = 16  # beyond, no field (k n^2 numbers to store)
MIN_ROWS = 16  # held-out rows below which there is no field
ROWS_PER_LENGTH = 32  # rows per eta coordinate for a length each (20-45 rows in 4-D overfit:
# an active-learning round's field made the network's max NRMSE 0.21 against 0.14)
# the starting grid of the marginal-likelihood fit, per statistic: the length (standardised
# eta), the field's sd (in units of the residuals' rms), the rest's variance (in units of
# the raw spread: what the weight draws and the misfit do not put in the field)
LENGTHSCALES = np.geomspace(0.1, 3.0, 6)
SIGNALS = np.geomspace(0.03, 3.0, 4)
NUGGETS = np.geomspace(1e-2, 1e2, 5)
OUTLIER = 10.0  # |r| beyond this many robust sds: left out of the fit (a few cannot bend it)
JITTER = 1e-3  # of the field's variance, on each noise variance: float32 keeps the factor
CORRELATION_JITTER = 1e-4  # on the statistics' correlation: a factor when they coincide
BOUNDS = np.log([[0.02, 10.0], [1e-4, 10.0], [1e-4, 1e4]])


class ResidualField(eqx.Module):
    """Per statistic j a GP with squared-exponential kernel
    s_j^2 exp(-sum_c (z_c - z'_c)^2 / 2 l_jc^2), one length per coordinate c of the
    standardised eta z (a plate's members share some coordinates and spread along others,
    and the error varies on its own scale along each), conditioned on residuals at z_i with
    noise variances v_ij:
    `alpha` = K_y^-1 r and `chol_inv` the inverse of the Cholesky factor of K_y = K + diag v
    (so the variance and the draws are matrix products: fast for a plate of members).
    `correlation` is the Cholesky factor C of the statistics' correlation R = C C' (None:
    independent, as a field of an earlier version): it mixes the deviations from the mean,
    in units of each statistic's prior sd s_j."""

    z: Float[Array, "n d"]
    log_lengthscale: Float[Array, "k d"]
    log_signal: Float[Array, " k"]
    chol_inv: Float[Array, "k n n"]
    alpha: Float[Array, "n k"]
    noise_var: Float[Array, "n k"]
    omega: Float[Array, "d F"]
    phase: Float[Array, " F"]
    correlation: Float[Array, "k k"] | None = None

    def _kernel(self, z: Float[Array, " d"]) -> Float[Array, "n k"]:
        d2 = (z - self.z) ** 2 @ jnp.exp(-2 * self.log_lengthscale).T
        return jnp.exp(2 * self.log_signal - 0.5 * d2)

    def __call__(self, z: Float[Array, " d"]) -> Float[Array, " k"]:
        """The posterior mean at one standardised eta (k,)."""
        return jnp.sum(self._kernel(z) * self.alpha, 0)

    def gradient(self, z: Float[Array, " d"]) -> Float[Array, "k d"]:
        """d mean / d z at one standardised eta (k, d), in closed form (autodiff's is 3-6x
        slower here)."""
        weight = self._kernel(z) * self.alpha  # (n, k)
        return -jnp.einsum("nk,nd->kd", weight, z - self.z) * jnp.exp(-2 * self.log_lengthscale)

    def _own_variance(self, z: Float[Array, " d"]) -> Float[Array, " k"]:
        """Each statistic's own posterior variance at one standardised eta (k,)."""
        solved = jnp.einsum("knm,mk->nk", self.chol_inv, self._kernel(z))
        return jnp.maximum(jnp.exp(2 * self.log_signal) - jnp.sum(solved**2, 0), 0.0)

    def _mixing(self) -> Float[Array, "k k"] | None:
        """A draw's deviation is this times the statistics' own (None: independent)."""
        if self.correlation is None:
            return None
        return _mixing(jnp.exp(self.log_signal), self.correlation)

    def variance(self, z: Float[Array, " d"]) -> Float[Array, " k"]:
        """The posterior variance at one standardised eta (k,)."""
        own, mixing = self._own_variance(z), self._mixing()
        return own if mixing is None else mixing**2 @ own

    def covariance(self, z: Float[Array, " d"]) -> Float[Array, "k k"]:
        """The posterior covariance of the statistics at one standardised eta (k, k)."""
        own, mixing = self._own_variance(z), self._mixing()
        return jnp.diag(own) if mixing is None else (mixing * own) @ mixing.T

    def _prior(self, z: Float[Array, "*m d"], weights: Float[Array, "k F"]
               ) -> Float[Array, "*m k"]:
        """A prior draw in random Fourier features of standard normal weights, at z."""
        arg = (z[..., None, :] * jnp.exp(-self.log_lengthscale)) @ self.omega + self.phase
        phi = jnp.sqrt(2.0 / self.phase.shape[0]) * jnp.cos(arg)
        return jnp.exp(self.log_signal) * jnp.sum(phi * weights, -1)

    def draws(self, key: PRNGKeyArray, num: int) -> tuple[Array, Array]:
        """`num` posterior draws, each as (prior weights (k, F), K_y^-1 (prior at z_i +
        noise) (n, k)): what `draw` needs."""
        k_w, k_e = jax.random.split(key)
        weights = jax.random.normal(k_w, (num, *self.log_signal.shape, len(self.phase)))
        eps = jnp.sqrt(self.noise_var) * jax.random.normal(k_e, (num, *self.noise_var.shape))
        data = jax.vmap(lambda w: self._prior(self.z, w))(weights) + eps  # (S, n, k)
        half = jnp.einsum("knm,smk->snk", self.chol_inv, data)  # L^-1 data
        return weights, jnp.einsum("kmn,smk->snk", self.chol_inv, half)  # L^-T L^-1 data

    def draw(self, z: Float[Array, " d"], one: tuple[Array, Array]) -> Float[Array, " k"]:
        """Draw `one` (an item of `draws`) at one standardised eta (k,): the prior draw
        moved by the exact kernel's update to the data (pathwise conditioning)."""
        weights, beta = one
        kernel = self._kernel(z)
        deviation = self._prior(z, weights) - jnp.sum(kernel * beta, 0)
        mixing = self._mixing()
        if mixing is not None:
            deviation = mixing @ deviation
        return jnp.sum(kernel * self.alpha, 0) + deviation

    @classmethod
    def empty(cls, n: int, d: int, k: int, correlated: bool = True,
              per_coordinate: bool = True) -> ResidualField:
        """A template of n held-out eta (for loading; `correlated`: with a correlation,
        `per_coordinate`: one length per coordinate, else one, as an earlier version)."""
        return cls(jnp.zeros((n, d)), jnp.zeros((k, d) if per_coordinate else k),
                   jnp.zeros(k), jnp.zeros((k, n, n)),
                   jnp.zeros((n, k)), jnp.zeros((n, k)), jnp.zeros((d, NUM_FEATURES)),
                   jnp.zeros(NUM_FEATURES), jnp.zeros((k, k)) if correlated else None)

    def with_length_per_coordinate(self) -> ResidualField:
        """This field with its one length per statistic repeated over the coordinates (an
        earlier version's field); itself if it has one each."""
        if self.log_lengthscale.ndim == 2:
            return self
        lengths = jnp.repeat(self.log_lengthscale[:, None], self.z.shape[1], 1)
        return eqx.tree_at(lambda f: f.log_lengthscale, self, lengths)


def _neg_log_lik(params, sq, r, u, noise):
    """-log N(r; 0, s^2 exp(-sum_d sq_d / 2 l_d^2) + diag(noise + c u + JITTER s^2)), its
    Cholesky factor and the noise variances; params = (log l_1..d, log s, log c), sq the
    squared differences per coordinate (n, m, d)."""
    log_l, log_s, log_c = params[:-2], params[-2], params[-1]
    v = noise + np.exp(log_c) * u + JITTER * np.exp(2 * log_s)
    ky = np.exp(2 * log_s) * np.exp(-0.5 * sq @ np.exp(-2 * log_l)) + np.diag(v)
    try:
        chol = scipy.linalg.cholesky(ky, lower=True)
    except np.linalg.LinAlgError:
        return np.inf, None, v
    alpha = scipy.linalg.cho_solve((chol, True), r)
    return 0.5 * r @ alpha + np.sum(np.log(np.diag(chol))), chol, v


def _refined(cost, start: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """L-BFGS-B from start within bounds; start where it does no better."""
    fit = scipy.optimize.minimize(cost, start, method="L-BFGS-B", bounds=bounds)
    return fit.x if fit.fun <= cost(start) else start


def fit_field(z: np.ndarray, residual: np.ndarray, raw_var: np.ndarray, noise: np.ndarray
              ) -> tuple[ResidualField, np.ndarray, np.ndarray]:
    """The field from held-out standardised eta z (n, d), residuals, raw predictive
    variances and target noise variances (n, k), target-std units: per statistic the
    lengths l, the field's sd s and the rest's variance noise + c u by maximum marginal
    likelihood (the best of a grid with one length, refined, then refined with one length
    per coordinate given ROWS_PER_LENGTH rows per coordinate), on the rows without an
    outlier (a residual beyond OUTLIER robust sds: a few cannot bend it). Returns the field and the
    held-out residuals and field variances (n, k): leave-one-out on the rows it was fitted
    on (exact for a GP), plain prediction on the others. The spread is then calibrated on
    them, so the band never counts the field's fit to a point as its accuracy."""
    outlier = np.abs(residual) > OUTLIER * 1.4826 * np.median(np.abs(residual), 0)
    fitted = ~np.any(outlier, 1)
    if fitted.sum() < MIN_ROWS:  # outliers everywhere: no row is one
        fitted[:] = True
    zf = z[fitted]
    n, d = zf.shape
    k = residual.shape[1]
    sq = (zf[:, None, :] - zf[None, :, :]) ** 2
    sq_all = (z[:, None, :] - zf[None, :, :]) ** 2
    params, alphas, chols, standard = np.zeros((k, d + 2)), np.zeros((n, k)), [], np.zeros((n, k))
    noise_var = np.zeros((n, k))
    held_residual, held_var = np.zeros(residual.shape), np.zeros(residual.shape)
    for j in range(k):
        r, u, e = residual[fitted, j], raw_var[fitted, j], noise[fitted, j]
        rms = np.sqrt(np.mean(r**2)) or 1.0
        cost = lambda p, args=(sq, r, u, e): _neg_log_lik(p, *args)[0]
        one_length = lambda p, cost=cost: cost(np.r_[np.repeat(p[0], d), p[1:]])
        grid = [np.log([length, signal * rms, nugget]) for length in LENGTHSCALES
                for signal in SIGNALS for nugget in NUGGETS]
        bounds = BOUNDS + np.array([0.0, np.log(rms), 0.0])[:, None]
        shared = _refined(one_length, min(grid, key=one_length), bounds)
        shared = np.r_[np.repeat(shared[0], d), shared[1:]]
        # one length for every coordinate, then from there one each where the rows allow:
        # the per-coordinate fit never starts where the shared one would not (a short-length
        # local optimum)
        best = shared if n < ROWS_PER_LENGTH * d else _refined(
            cost, shared, np.concatenate([np.repeat(bounds[:1], d, 0), bounds[1:]]))
        _, chol, v = _neg_log_lik(best, sq, r, u, e)
        inverse = scipy.linalg.cho_solve((chol, True), np.eye(n))
        alpha = inverse @ r
        k_all = np.exp(2 * best[-2]) * np.exp(-0.5 * sq_all @ np.exp(-2 * best[:-2]))
        held_residual[:, j] = residual[:, j] - k_all @ alpha
        held_var[:, j] = np.maximum(np.exp(2 * best[-2]) - np.sum((k_all @ inverse) * k_all,
                                                                  1), 0.0)
        held_residual[fitted, j] = alpha / np.diag(inverse)  # r_i - mean without i
        held_var[fitted, j] = np.maximum(1 / np.diag(inverse) - v, 0.0)
        standard[:, j] = alpha / np.sqrt(np.diag(inverse))  # z of the left-out residual
        params[j], alphas[:, j], noise_var[:, j] = best, alpha, v
        chols.append(scipy.linalg.solve_triangular(chol, np.eye(n), lower=True))
    rng = np.random.default_rng(0)
    omega = rng.standard_normal((d, NUM_FEATURES))
    phase = rng.uniform(0.0, 2 * np.pi, NUM_FEATURES)
    correlation = _correlation(standard)
    field = ResidualField(*(jnp.asarray(a, jnp.float32) for a in (
        zf, params[:, :-2], params[:, -2], np.stack(chols), alphas, noise_var, omega, phase,
        correlation)))
    return field, held_residual, held_var @ (_mixing(np.exp(params[:, -2]), correlation)**2).T


def _mixing(signal, correlation):
    """A = diag(s) C diag(1/s) (numpy or jax arrays): the statistics' own deviations, each
    in units of its prior sd s_j, mixed by the correlation's Cholesky factor C."""
    return signal[:, None] * correlation / signal[None, :]


def _correlation(standard: np.ndarray) -> np.ndarray:
    """The Cholesky factor of the statistics' correlation, from their left-out residuals'
    z-scores (n, k): the field's error is shared as theirs is. (These include the targets'
    noise and the weight draws' misfit: where those dominate, R tends to their correlation,
    where the smooth error does, to its.)"""
    gram = standard.T @ standard
    sd = np.sqrt(np.maximum(np.diag(gram), 1e-300))
    corr = gram / sd[:, None] / sd[None, :]
    return np.linalg.cholesky(corr + CORRELATION_JITTER * np.eye(len(corr))) \
        / np.sqrt(1 + CORRELATION_JITTER)
