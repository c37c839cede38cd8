"""The predictive of mu_T (mean, scale, degrees of freedom), and calibrated function draws."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from scipy import stats

from ._model import TrainedET, chi_mixing

ETA_BLOCK = 1024  # eta per vmapped block: bounds memory for large batches


@eqx.filter_jit
def raw_predictive(model: TrainedET, eta, key, num_samples: int, answers: bool = True):
    """(mean (n, k), uncalibrated covariance (n, k, k) with the misfit, draws (S, n, k)) of
    the model's answers (`TrainedET.answer`), or with answers=False of the network's raw
    outputs (what training fits). The mean is the answer at the weight means, what CAVI
    consumes (the draws' average would add their Monte-Carlo noise, a smooth function of
    eta that changes with the key); the covariance is the draws' spread about it."""
    keys = jax.random.split(key, num_samples)

    def one(e, k):
        draw = lambda x: model.net(x, key=k, sample=True)
        return model.answer(draw, e) if answers else draw(e)

    def per_eta(e):
        point = model.answer(model.net, e) if answers else model.net(e)
        return point, jax.vmap(lambda k: one(e, k))(keys)

    mean, draws = jax.lax.map(per_eta, eta, batch_size=ETA_BLOCK)
    draws = jnp.swapaxes(draws, 0, 1)
    dev = draws - mean
    cov = jnp.einsum("sna,snb->nab", dev, dev) / num_samples
    return mean, cov + jnp.diag(model.misfit_variance), draws


def _check(model: TrainedET, eta, num_samples: int) -> Array:
    eta = jnp.asarray(eta, jnp.float32)
    if eta.ndim != 2 or eta.shape[1] != model.net.eta_dim:
        raise ValueError(f"predict: eta must have shape (n, {model.net.eta_dim}); got {eta.shape}")
    if not (isinstance(num_samples, int) and num_samples >= 2):
        raise ValueError(f"predict: num_samples={num_samples!r}; allowed: an int >= 2")
    return eta


class Predictive(NamedTuple):
    """The predictive of mu_T at n eta: per statistic a Student t (Gaussian where `dof` is
    infinite) of location `mean` (n, k) and scale the square root of the diagonal of `cov`
    (n, k, k), the scale matrix (the covariance where the predictive is Gaussian)."""

    mean: Float[Array, "n k"]
    cov: Float[Array, "n k k"]
    dof: Float[Array, "n k"]

    def half_width(self, level: float = 0.9) -> np.ndarray:
        """The half-width of each statistic's central `level` interval (n, k)."""
        sd = np.sqrt(np.diagonal(np.asarray(self.cov, np.float64), axis1=1, axis2=2))
        return sd * stats.t.ppf(0.5 + level / 2, np.asarray(self.dof, np.float64))


def predict(
    model: TrainedET, eta: Float[Array, "n d"], key: PRNGKeyArray, num_samples: int = 64,
    *, calibrated: bool = True,
) -> Predictive:
    """The predictive at each eta: the spread of `num_samples` weight draws plus the misfit
    variance, each statistic's standard deviation scaled by the calibration m(eta), the
    residual field's mean and variance added, and the tail stage's scale and degrees of
    freedom, once recalibrated (calibrated=False: the network's own, Gaussian)."""
    eta = _check(model, eta, num_samples)
    mean, cov, _ = raw_predictive(model, eta, key, num_samples)
    if not calibrated:
        return Predictive(mean, cov, jnp.full(mean.shape, jnp.inf, mean.dtype))
    m = jax.vmap(model.scale)(eta, jnp.diagonal(cov, axis1=1, axis2=2))
    cov = m[:, :, None] * cov * m[:, None, :] + jax.vmap(model.field_covariance)(eta)
    s, inv_nu = jax.vmap(model.tail_at)(jnp.diagonal(cov, axis1=1, axis2=2))
    return Predictive(mean + jax.vmap(model.correction)(eta),
                      s[:, :, None] * cov * s[:, None, :], 1.0 / inv_nu)


def misfit_offsets(model: TrainedET, key: PRNGKeyArray, num_samples: int
                   ) -> Float[Array, "S k"]:
    """One constant offset per function draw, sqrt(misfit) eps_s with eps_s ~ N(0, I)
    (before calibration): the misfit as a smooth (locally constant) error rather than
    independent noise."""
    eps = jax.random.normal(jax.random.fold_in(key, 1), (num_samples, model.net.eta_dim))
    return jnp.sqrt(model.misfit_variance) * eps


def field_draws(model: TrainedET, key: PRNGKeyArray, num_samples: int) -> tuple | None:
    """The residual field's draw in each function draw (`ResidualField.draws`; None
    without a field)."""
    if model.field is None:
        return None
    return model.field.draws(jax.random.fold_in(key, 2), num_samples)


def tail_scores(model: TrainedET, key: PRNGKeyArray, num_samples: int) -> Float[Array, "S k"]:
    """The normal score behind each function draw's chi^2 mixing (`chi_mixing`), one per
    draw and statistic: a draw is t-distributed where the tail stage says so."""
    return jax.random.normal(jax.random.fold_in(key, 3), (num_samples, model.net.eta_dim))


def function_draws(
    model: TrainedET, eta: Float[Array, "n d"], key: PRNGKeyArray, num_samples: int = 64
) -> Float[Array, "S n k"]:
    """Calibrated function draws m + c(eta) (f_s - m + sqrt(misfit) eps_s) + g_s(eta) of
    mu_T at each eta, the deviation from the corrected mean scaled by the tail stage's s
    and chi^2 mixing: (S, n, k), c(eta) the calibration's scale of each statistic, g_s a
    draw of the residual field. Each draw is a whole function of eta whose pointwise
    distribution is the calibrated predictive's."""
    eta = _check(model, eta, num_samples)
    mean, cov, draws = raw_predictive(model, eta, key, num_samples)
    raw_var = jnp.diagonal(cov, axis1=1, axis2=2)
    scale = jax.vmap(model.scale)(eta, raw_var)
    offsets = misfit_offsets(model, key, num_samples)
    fields = field_draws(model, key, num_samples)
    correction = jax.vmap(model.correction)(eta)
    field = (jax.vmap(lambda e: jax.vmap(lambda f: model.correction(e, f))(fields), 0, 1)(eta)
             if fields is not None else correction[None])
    variance = scale**2 * raw_var + jnp.diagonal(
        jax.vmap(model.field_covariance)(eta), axis1=1, axis2=2)
    s, inv_nu = jax.vmap(model.tail_at)(variance)
    mixing = chi_mixing(inv_nu[None], tail_scores(model, key, num_samples)[:, None, :])
    deviation = scale * (draws - mean + offsets[:, None, :]) + field - correction
    return mean + correction + s * mixing * deviation
