"""Recalibration of the predictive spread on the validation split: local (the scale follows
the raw spread across eta) and robust (heavy-tailed residuals, so a few outliers cannot set
it)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from bayes_et.data import Dataset

from ._model import TrainedET
from ._objective import mc_noise
from ._predictive import predict

Z2_LEVEL = 2.705543454095404  # chi^2_1 quantile at 0.9: |z| <= 1.645
MAX_BINS = 4
MIN_PER_BIN = 25
MAX_SLOPE = 1.0  # |b|: the scale may grow at most like the raw spread (sd ~ u^1)
# The residuals' likelihood: Student t with NU degrees of freedom (a few outliers cannot set
# the scale) of squared scale KAPPA x variance, KAPPA fitted so that Gaussian residuals of
# variance v give v (the maximum-likelihood scale of N(0, 1) draws under t_4 is 0.692).
NU, KAPPA = 4.0, 0.6921
PRIOR_SD = 2.0  # on log c^2: where the noise hides the error, the raw spread stands
LOG_C2 = np.linspace(-15.0, 15.0, 1501)


def _bin_scale(r2: np.ndarray, u: np.ndarray, noise: np.ndarray) -> float:
    """The posterior mode of log c^2 for residuals r ~ t_NU(0, KAPPA (c^2 u + noise)) under
    a N(0, PRIOR_SD^2) prior: the data decide where they see the network's error, the
    raw spread (c = 1) stands where the targets' noise hides it."""
    var = KAPPA * (np.exp(LOG_C2)[:, None] * u[None, :] + noise[None, :])
    log_lik = -0.5 * np.sum(np.log(var) + (NU + 1) * np.log1p(r2[None, :] / (NU * var)), 1)
    return float(LOG_C2[np.argmax(log_lik - 0.5 * (LOG_C2 / PRIOR_SD) ** 2)])


def fit_calibration(residual: np.ndarray, raw_var: np.ndarray, noise: np.ndarray
                    ) -> np.ndarray:
    """The (4, k) calibration rows a, b, lo, hi from validation residuals (n, k), raw
    predictive variances and target noise variances (n, k), all in target-std units.
    Per statistic: the eta are cut into up to MAX_BINS equal-count bins of log u; in each,
    the scale c^2 is fitted robustly (`_bin_scale`); a line log c^2 = a + b log u through
    the bins (|b| <= MAX_SLOPE), u clipped to [lo, hi], the range seen, so the scale never
    extrapolates."""
    n, k = residual.shape
    rows = np.zeros((4, k))
    num_bins = int(np.clip(n // MIN_PER_BIN, 1, MAX_BINS))
    for j in range(k):
        log_u = np.log(raw_var[:, j])
        order = np.argsort(log_u)
        bins = np.array_split(order, num_bins)
        x = np.array([log_u[i].mean() for i in bins])
        y = np.array([_bin_scale(residual[i, j] ** 2, raw_var[i, j], noise[i, j])
                      for i in bins])
        slope = 0.0
        if num_bins > 1 and np.ptp(x) > 0:
            slope = float(np.clip(np.polyfit(x, y, 1)[0], -MAX_SLOPE, MAX_SLOPE))
        rows[:, j] = (np.mean(y - slope * x), slope, log_u.min(), log_u.max())
    return rows


def recalibrate(model: TrainedET, val: Dataset, key: PRNGKeyArray,
                num_samples: int = 64) -> TrainedET:
    """A copy calibrated on the validation targets in bins of raw predictive spread, per
    statistic (`fit_calibration`); the targets' own MC noise counts toward their distance
    from the prediction."""
    mean, cov = (np.asarray(a, np.float64) for a in predict(
        model, val.eta, key, num_samples, calibrated=False))
    scale = np.asarray(model.net.scaler.mu_scale, np.float64)
    raw_var = np.diagonal(cov, axis1=1, axis2=2) / scale**2
    noise = np.diagonal(mc_noise(val), axis1=1, axis2=2) / scale**2
    residual = (np.asarray(val.mu_T, np.float64) - mean) / scale
    rows = fit_calibration(residual, raw_var, noise)
    return eqx.tree_at(lambda m: m.calibration, model, jnp.asarray(rows, jnp.float32))
