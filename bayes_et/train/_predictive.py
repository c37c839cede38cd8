"""Predictive mean and covariance of mu_T, and calibrated function draws."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._model import TrainedET

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


def predict(
    model: TrainedET, eta: Float[Array, "n d"], key: PRNGKeyArray, num_samples: int = 64,
    *, calibrated: bool = True,
) -> tuple[Float[Array, "n k"], Float[Array, "n k k"]]:
    """Predictive mean and covariance of mu_T at each eta: the spread of `num_samples`
    weight draws plus the misfit variance, each statistic's standard deviation scaled by
    the calibration m(eta), and the residual field's mean and variance added, once
    recalibrated (calibrated=False: the network's own)."""
    eta = _check(model, eta, num_samples)
    mean, cov, _ = raw_predictive(model, eta, key, num_samples)
    if not calibrated:
        return mean, cov
    m = jax.vmap(model.scale)(eta, jnp.diagonal(cov, axis1=1, axis2=2))
    cov = m[:, :, None] * cov * m[:, None, :] + jax.vmap(model.field_covariance)(eta)
    return mean + jax.vmap(model.correction)(eta), cov


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


def function_draws(
    model: TrainedET, eta: Float[Array, "n d"], key: PRNGKeyArray, num_samples: int = 64
) -> Float[Array, "S n k"]:
    """Calibrated function draws m + c(eta) (f_s - m + sqrt(misfit) eps_s) + g_s(eta) of
    mu_T at each eta: (S, n, k), c(eta) the calibration's scale of each statistic, g_s a
    draw of the residual field. Each draw is a whole function of eta whose pointwise spread
    matches the calibrated predictive covariance."""
    eta = _check(model, eta, num_samples)
    mean, cov, draws = raw_predictive(model, eta, key, num_samples)
    scale = jax.vmap(model.scale)(eta, jnp.diagonal(cov, axis1=1, axis2=2))
    offsets = misfit_offsets(model, key, num_samples)
    fields = field_draws(model, key, num_samples)
    field = (jax.vmap(lambda e: jax.vmap(lambda f: model.correction(e, f))(fields), 0, 1)(eta)
             if fields is not None else jnp.zeros_like(mean)[None])
    return mean + scale * (draws - mean + offsets[:, None, :]) + field
