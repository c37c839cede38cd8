"""Predictive mean and covariance of mu_T, recalibration on validation data, function draws."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from bayes_et.data import Dataset

from ._model import TrainedET
from ._objective import mc_noise

ETA_BLOCK = 1024  # eta per vmapped block: bounds memory for large batches


@eqx.filter_jit
def raw_predictive(model: TrainedET, eta, key, num_samples: int):
    """(mean (n, k), uncalibrated covariance (n, k, k) with the misfit, draws (S, n, k))."""
    keys = jax.random.split(key, num_samples)
    per_eta = lambda e: jax.vmap(lambda k: model.net(e, key=k, sample=True))(keys)
    draws = jnp.swapaxes(jax.lax.map(per_eta, eta, batch_size=ETA_BLOCK), 0, 1)
    mean = draws.mean(0)
    dev = draws - mean
    cov = jnp.einsum("sna,snb->nab", dev, dev) / (num_samples - 1)
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
    weight draws plus the misfit variance, times c^2 once recalibrated."""
    mean, cov, _ = raw_predictive(model, _check(model, eta, num_samples), key, num_samples)
    return mean, cov * (model.calibration**2 if calibrated else 1.0)


def misfit_offsets(model: TrainedET, key: PRNGKeyArray, num_samples: int
                   ) -> Float[Array, "S k"]:
    """One constant offset per function draw, c sqrt(misfit) eps_s with eps_s ~ N(0, I):
    the misfit as a smooth (locally constant) error rather than independent noise."""
    eps = jax.random.normal(jax.random.fold_in(key, 1), (num_samples, model.net.eta_dim))
    return model.calibration * jnp.sqrt(model.misfit_variance) * eps


def function_draws(
    model: TrainedET, eta: Float[Array, "n d"], key: PRNGKeyArray, num_samples: int = 64
) -> Float[Array, "S n k"]:
    """Calibrated function draws m + c (f_s - m) + c sqrt(misfit) eps_s of mu_T at each eta:
    (S, n, k). Each draw is a whole function of eta whose pointwise spread matches the
    calibrated predictive covariance."""
    mean, _, draws = raw_predictive(model, _check(model, eta, num_samples), key, num_samples)
    offsets = misfit_offsets(model, key, num_samples)
    return mean + model.calibration * (draws - mean) + offsets[:, None, :]


def mean_z2(mean, var, target, noise_var) -> float:
    """Mean over points and statistics of (target - mean)^2 / (var + noise_var)."""
    return float(np.mean((target - mean) ** 2 / (var + noise_var)))


def recalibrate(model: TrainedET, val: Dataset, key: PRNGKeyArray,
                num_samples: int = 64) -> TrainedET:
    """A copy whose calibration c makes the validation mean z^2 equal 1, where the validation
    targets carry their own MC noise: z^2 = (y - m)^2 / (c^2 v + noise)."""
    mean, cov = (np.asarray(a, np.float64) for a in predict(
        model, val.eta, key, num_samples, calibrated=False))
    var = np.diagonal(cov, axis1=1, axis2=2)
    noise = np.diagonal(mc_noise(val), axis1=1, axis2=2)
    y = np.asarray(val.mu_T, np.float64)
    lo, hi = -20.0, 20.0  # bisection on log c^2: mean z^2 decreases in c
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_z2(mean, np.exp(mid) * var, y, noise) > 1 else (lo, mid)
    return eqx.tree_at(lambda m: m.calibration, model, jnp.asarray(np.exp(0.25 * (lo + hi)),
                                                                   jnp.float32))
