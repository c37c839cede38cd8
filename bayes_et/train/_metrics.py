"""Calibration of predictive means and variances against exact moments."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from scipy import special, stats

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
RELIABILITY_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
PIT_BINS = 10
SPREAD_BINS = 4
_erf = np.vectorize(math.erf, otypes=[float])


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(np.asarray(z, np.float64) / math.sqrt(2.0)))


def coverage(z: np.ndarray, level: float) -> float:
    """Fraction of |z| inside the central `level` interval of N(0, 1)."""
    return float(np.mean(np.abs(z) <= NormalDist().inv_cdf(0.5 + level / 2)))


def gaussianised(z: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """The normal score of each z under its Student t of `dof` degrees of freedom (z itself
    where dof is infinite): a t-calibrated z is standard normal, so coverage and mean z^2
    read as for a Gaussian predictive."""
    z, dof = np.broadcast_arrays(np.asarray(z, np.float64), np.asarray(dof, np.float64))
    score = -np.sign(z) * special.ndtri_exp(stats.t.logsf(np.abs(z), dof))  # log domain
    return np.where(np.isfinite(dof), score, z)


def _student_crps(z: np.ndarray, nu: np.ndarray) -> np.ndarray:
    """CRPS of the standard Student t of nu > 1 degrees of freedom at z (closed form)."""
    ratio = 2 * np.sqrt(nu) * np.exp(special.betaln(0.5, nu - 0.5)
                                     - 2 * special.betaln(0.5, nu / 2))
    return (z * (2 * stats.t.cdf(z, nu) - 1) + 2 * stats.t.pdf(z, nu) * (nu + z**2) / (nu - 1)
            - ratio / (nu - 1))


def calibration_metrics(
    mean: np.ndarray, var: np.ndarray, truth: np.ndarray, mcse: np.ndarray | None = None,
    stat_names: list[str] | None = None, truth_noise: np.ndarray | None = None,
    dof: np.ndarray | None = None,
) -> dict:
    """Metrics of predictions (n, k) against `truth` (n, k): Gaussian N(mean, var), or with
    `dof` (n, k) Student t of location mean, squared scale var and those degrees of freedom
    (infinite: Gaussian). Coverage at LEVELS and mean z^2 of the Gaussianised z (the
    normal score of each z under its t: 1 for a calibrated predictive), the log score
    (NLL), CRPS, PIT histogram, normalised RMSE per statistic (RMSE / std of the truth),
    and within SPREAD_BINS equal-count bins of predictive variance (per statistic, pooled:
    local calibration) the coverage at 50%, 90% and 99% and mean z^2; with `mcse` (the MC
    standard errors of the training-style data at these eta) RMS((mean - truth) / mcse)
    per statistic, and with `truth_noise` (the variance of a noisy truth, already in
    `var`) the normalised RMSE with that noise subtracted."""
    mean, var, truth = (np.asarray(a, np.float64) for a in (mean, var, truth))
    if not (mean.shape == var.shape == truth.shape and mean.ndim == 2):
        raise ValueError(f"calibration_metrics: mean, var, truth must share a shape (n, k); "
                         f"got {mean.shape}, {var.shape}, {truth.shape}")
    if np.any(var <= 0):
        raise ValueError("calibration_metrics: var must be > 0")
    dof = np.full(mean.shape, np.inf) if dof is None else np.broadcast_to(
        np.asarray(dof, np.float64), mean.shape)
    if np.any(~(dof > 2)):
        raise ValueError("calibration_metrics: dof must be > 2 (inf: Gaussian)")
    sd = np.sqrt(var)
    t = (truth - mean) / sd
    z = gaussianised(t, dof)
    finite = np.isfinite(dof)
    nu = np.where(finite, dof, 3.0)
    pdf = np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    cdf = np.where(finite, stats.t.cdf(t, nu), normal_cdf(t))
    crps = sd * np.where(finite, _student_crps(t, nu),
                         t * (2 * normal_cdf(t) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    log_density = np.where(finite, stats.t.logpdf(t, nu),
                           -0.5 * t**2 - 0.5 * math.log(2 * math.pi)) - np.log(sd)
    names = stat_names or [f"T{i}" for i in range(mean.shape[1])]
    err = mean - truth
    metrics = {
        "num_eta": int(mean.shape[0]),
        "coverage": {str(level): coverage(z, level) for level in LEVELS},
        "reliability": [[level, coverage(z, level)] for level in RELIABILITY_LEVELS],
        "mean_z2": float(np.mean(z**2)),
        "nll": float(-np.mean(log_density)),
        "crps": float(np.mean(crps)),
        "heavy_tailed": float(np.mean(finite)),
        "pit_histogram": (np.histogram(cdf, PIT_BINS, (0.0, 1.0))[0] / cdf.size).tolist(),
        "nrmse": dict(zip(names, (np.sqrt(np.mean(err**2, 0)) / truth.std(0)).tolist(),
                          strict=True)),
    }
    ranks = np.argsort(np.argsort(var, axis=0), axis=0)  # per statistic
    bins = ranks * SPREAD_BINS // mean.shape[0]
    metrics["by_spread"] = [
        {"coverage_50": coverage(z[bins == b], 0.5), "coverage_90": coverage(z[bins == b], 0.9),
         "coverage_99": coverage(z[bins == b], 0.99),
         "mean_z2": float(np.mean(z[bins == b] ** 2)),
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
