"""Calibration of predictive means and variances against exact moments."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

LEVELS = (0.5, 0.8, 0.9, 0.95)
RELIABILITY_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
PIT_BINS = 10
SPREAD_BINS = 4
_erf = np.vectorize(math.erf, otypes=[float])


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(np.asarray(z, np.float64) / math.sqrt(2.0)))


def coverage(z: np.ndarray, level: float) -> float:
    """Fraction of |z| inside the central `level` interval of N(0, 1)."""
    return float(np.mean(np.abs(z) <= NormalDist().inv_cdf(0.5 + level / 2)))


def calibration_metrics(
    mean: np.ndarray, var: np.ndarray, truth: np.ndarray, mcse: np.ndarray | None = None,
    stat_names: list[str] | None = None, truth_noise: np.ndarray | None = None,
) -> dict:
    """Metrics of predictions N(mean, var) (n, k) against `truth` (n, k): coverage at
    LEVELS, mean z^2, Gaussian NLL, CRPS, PIT histogram, normalised RMSE per statistic
    (RMSE / std of the truth), 90% coverage and mean z^2 within SPREAD_BINS equal-count
    bins of predictive variance (per statistic, pooled: local calibration), with `mcse`
    (the MC standard errors of the training-style data at these eta) RMS((mean - truth) /
    mcse) per statistic, and with `truth_noise` (the variance of a noisy truth, already in
    `var`) the normalised RMSE with that noise subtracted."""
    mean, var, truth = (np.asarray(a, np.float64) for a in (mean, var, truth))
    if not (mean.shape == var.shape == truth.shape and mean.ndim == 2):
        raise ValueError(f"calibration_metrics: mean, var, truth must share a shape (n, k); "
                         f"got {mean.shape}, {var.shape}, {truth.shape}")
    if np.any(var <= 0):
        raise ValueError("calibration_metrics: var must be > 0")
    sd = np.sqrt(var)
    z = (truth - mean) / sd
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = normal_cdf(z)
    crps = sd * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    names = stat_names or [f"T{i}" for i in range(mean.shape[1])]
    err = mean - truth
    metrics = {
        "num_eta": int(mean.shape[0]),
        "coverage": {str(level): coverage(z, level) for level in LEVELS},
        "reliability": [[level, coverage(z, level)] for level in RELIABILITY_LEVELS],
        "mean_z2": float(np.mean(z**2)),
        "nll": float(np.mean(0.5 * z**2 + np.log(sd) + 0.5 * math.log(2 * math.pi))),
        "crps": float(np.mean(crps)),
        "pit_histogram": (np.histogram(cdf, PIT_BINS, (0.0, 1.0))[0] / cdf.size).tolist(),
        "nrmse": dict(zip(names, (np.sqrt(np.mean(err**2, 0)) / truth.std(0)).tolist(),
                          strict=True)),
    }
    ranks = np.argsort(np.argsort(var, axis=0), axis=0)  # per statistic
    bins = ranks * SPREAD_BINS // mean.shape[0]
    metrics["by_spread"] = [
        {"coverage_90": coverage(z[bins == b], 0.9), "mean_z2": float(np.mean(z[bins == b] ** 2)),
         "median_sd": float(np.median(sd[bins == b]))}
        for b in range(SPREAD_BINS) if np.any(bins == b)]
    if truth_noise is not None:
        excess = np.mean(err**2, 0) - np.mean(np.asarray(truth_noise, np.float64), 0)
        metrics["nrmse_noise_corrected"] = dict(zip(
            names, (np.sqrt(np.maximum(excess, 0.0)) / truth.std(0)).tolist(), strict=True))
    if mcse is not None:
        scaled = err / np.asarray(mcse, np.float64)
        metrics["rms_error_over_mcse"] = dict(zip(
            names, np.sqrt(np.mean(scaled**2, 0)).tolist(), strict=True))
    return metrics
