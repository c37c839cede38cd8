"""Recalibration of the predictive spread on the validation split: local (the scale follows
the raw spread across eta) and robust (a quantile, so a few outliers cannot set it)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from bayes_et.data import Dataset

from ._model import TrainedET
from ._objective import mc_noise
from ._predictive import predict

LEVEL = 0.9  # the coverage matched in each bin
Z2_LEVEL = 2.705543454095404  # chi^2_1 quantile at LEVEL
MAX_BINS = 4
MIN_PER_BIN = 25
MAX_SLOPE = 1.0  # |b|: the scale may grow at most like the raw spread (sd ~ u^1)
LOG_C2_RANGE = 20.0


def _bin_scale(r2: np.ndarray, u: np.ndarray, noise: np.ndarray) -> float:
    """log c^2 with which a fraction LEVEL of r^2 <= Z2_LEVEL (c^2 u + noise)."""
    lo, hi = -LOG_C2_RANGE, LOG_C2_RANGE  # bisection: coverage grows with c
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        covered = np.mean(r2 <= Z2_LEVEL * (np.exp(mid) * u + noise))
        lo, hi = (lo, mid) if covered >= LEVEL else (mid, hi)
    return 0.5 * (lo + hi)


def fit_calibration(residual: np.ndarray, raw_var: np.ndarray, noise: np.ndarray
                    ) -> np.ndarray:
    """The (4, k) calibration rows a, b, lo, hi from validation residuals (n, k), raw
    predictive variances and target noise variances (n, k), all in target-std units.
    Per statistic: the eta are cut into up to MAX_BINS equal-count bins of log u; in each,
    the scale c^2 that covers LEVEL of the residuals (with their noise) is found; a line
    log c^2 = a + b log u through the bins (|b| <= MAX_SLOPE), u clipped to [lo, hi], the
    range seen, so the scale never extrapolates."""
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
    """A copy whose calibration covers LEVEL of the validation targets in every bin of
    raw predictive spread, per statistic (`fit_calibration`); the targets' own MC noise
    counts toward their distance from the prediction."""
    mean, cov = (np.asarray(a, np.float64) for a in predict(
        model, val.eta, key, num_samples, calibrated=False))
    scale = np.asarray(model.net.scaler.mu_scale, np.float64)
    raw_var = np.diagonal(cov, axis1=1, axis2=2) / scale**2
    noise = np.diagonal(mc_noise(val), axis1=1, axis2=2) / scale**2
    residual = (np.asarray(val.mu_T, np.float64) - mean) / scale
    rows = fit_calibration(residual, raw_var, noise)
    return eqx.tree_at(lambda m: m.calibration, model, jnp.asarray(rows, jnp.float32))
