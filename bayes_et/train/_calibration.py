"""Recalibration of the predictive on the validation split: local (the scale follows the raw
spread across eta), robust (heavy-tailed residuals, so a few outliers cannot set it), and
honest in the tails (a Student-t predictive where the residuals are heavy-tailed)."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray
from scipy import stats

from bayes_et.data import Dataset

from ._field import MAX_STATISTICS, MIN_ROWS, fit_field
from ._metrics import gaussianised
from ._model import (
    POWER,
    PRIOR_WEIGHT,
    Z90,
    LocalScale,
    SpreadCalibration,
    TailScale,
    TrainedET,
)
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
BANDWIDTHS = np.geomspace(0.03, 3.0, 25)  # of the local stage, in standardised eta
MAX_LOCAL = 512  # held-out eta kept by the local stage (a deterministic subset beyond)
# The tail stage's candidates for 1/nu (0: Gaussian; nu >= 2.5, a finite variance), and its
# bins: a tail's shape needs more held-out eta than a scale.
INV_NU = np.array([0.0, 1 / 30, 1 / 10, 1 / 6, 1 / 4, 1 / 3, 0.4])
MIN_PER_TAIL_BIN = 100


def _bin_scale(r2: np.ndarray, u: np.ndarray, noise: np.ndarray) -> float:
    """The posterior mode of log c^2 for residuals r ~ t_NU(0, KAPPA (c^2 u + noise)) under
    a N(0, PRIOR_SD^2) prior: the data decide where they see the network's error, the
    raw spread (c = 1) stands where the targets' noise hides it."""
    var = KAPPA * (np.exp(LOG_C2)[:, None] * u[None, :] + noise[None, :])
    log_lik = -0.5 * np.sum(np.log(var) + (NU + 1) * np.log1p(r2[None, :] / (NU * var)), 1)
    return float(LOG_C2[np.argmax(log_lik - 0.5 * (LOG_C2 / PRIOR_SD) ** 2)])


def fit_calibration(residual: np.ndarray, raw_var: np.ndarray, noise: np.ndarray
                    ) -> SpreadCalibration:
    """The spread stage from validation residuals (n, k), raw predictive variances and
    target noise variances (n, k), all in target-std units.
    Per statistic: the eta are cut into up to MAX_BINS equal-count bins of log u; in each,
    the scale c^2 is fitted robustly (`_bin_scale`); a line log c^2 = log_scale + slope
    log u through the bins (|slope| <= MAX_SLOPE), log u clipped to the range seen, so the
    scale never extrapolates."""
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
    return SpreadCalibration(*rows)


def _tail_scale(inv_nu: np.ndarray) -> np.ndarray:
    """The scale s of s t_nu whose central 90% interval is the Gaussian's, +-Z90."""
    with np.errstate(divide="ignore"):
        return Z90 / stats.t.ppf(0.95, 1.0 / np.asarray(inv_nu, np.float64))


def fit_tail(z: np.ndarray, variance: np.ndarray) -> TailScale:
    """The tail stage from held-out z (n, k), standardised by the stages before, and their
    calibrated variances (n, k), target-std units: per statistic, in up to MAX_BINS
    equal-count bins of log variance (MIN_PER_TAIL_BIN each), the nu of z ~ s t_nu of
    largest likelihood, s keeping the 90% interval the stages before set (their job) so
    that nu moves the 50% and 99% ones; a finite nu costs 0.5 log n (the BIC's price of a
    parameter), so Gaussian residuals stay Gaussian."""
    n, k = z.shape
    num_bins = int(np.clip(n // MIN_PER_TAIL_BIN, 1, MAX_BINS))
    scale = _tail_scale(INV_NU)
    nu = 1.0 / np.maximum(INV_NU, 1e-12)
    out = np.zeros((3, num_bins, k))
    for j in range(k):
        log_v = np.log(variance[:, j])
        for b, rows in enumerate(np.array_split(np.argsort(log_v), num_bins)):
            x = z[rows, j][None, :] / scale[:, None]
            log_lik = np.where(INV_NU[:, None] > 0, stats.t.logpdf(x, nu[:, None]),
                               stats.norm.logpdf(x)).sum(1) - len(rows) * np.log(scale)
            i = int(np.argmax(log_lik - 0.5 * np.log(len(rows)) * (INV_NU > 0)))
            out[:, b, j] = log_v[rows].mean(), np.log(scale[i]), INV_NU[i]
    return TailScale(*(jnp.asarray(a, jnp.float32) for a in out))


def _held_out_local(local: LocalScale) -> np.ndarray:
    """The local stage's c at each of its own held-out eta with that eta left out (n, k):
    in sample, a large |z| would raise its own scale and hide the tail it is in."""
    eta, power_z = np.asarray(local.eta, np.float64), np.asarray(local.power_z, np.float64)
    d2 = np.sum((eta[:, None, :] - eta[None, :, :]) ** 2, -1)[:, :, None]
    w = np.exp(-0.5 * d2 * np.exp(-2 * np.asarray(local.log_bandwidth, np.float64)))
    w[np.arange(len(eta)), np.arange(len(eta))] = 0.0
    level = np.asarray(local.level, np.float64)
    mean = (PRIOR_WEIGHT * level + np.einsum("ijk,jk->ik", w, power_z)) / (
        PRIOR_WEIGHT + w.sum(1))
    return np.asarray(local.factor, np.float64) * mean ** (1 / POWER)


def _interval_score(c: np.ndarray, abs_z: np.ndarray) -> float:
    """Mean interval score of the central 90% intervals +-Z90 c for |z| (a proper score:
    width plus 20 x the miss)."""
    return float(np.mean(2 * Z90 * c + 20.0 * np.maximum(abs_z - Z90 * c, 0.0)))


def fit_local(eta: np.ndarray, abs_z: np.ndarray) -> LocalScale:
    """The local stage from held-out standardised eta (n, d) and |z| (n, k): per statistic
    the bandwidth with the best leave-one-out interval score, the factor k that puts 90% of
    the held-out |z| inside (leave-one-out)."""
    power_z = abs_z**POWER
    level = power_z.mean(0)
    d2 = np.sum((eta[:, None, :] - eta[None, :, :]) ** 2, -1)
    k = abs_z.shape[1]
    best, factor = np.zeros(k), np.ones(k)
    for j in range(k):
        scores = []
        for h in BANDWIDTHS:
            w = np.exp(-0.5 * d2 / h**2)
            np.fill_diagonal(w, 0.0)  # leave one out
            s = ((PRIOR_WEIGHT * level[j] + w @ power_z[:, j]) / (PRIOR_WEIGHT + w.sum(1))) \
                ** (1 / POWER)
            f = np.quantile(abs_z[:, j] / s, 0.9) / Z90
            scores.append((_interval_score(f * s, abs_z[:, j]), f))
        i = int(np.argmin([score for score, _ in scores]))
        best[j], factor[j] = np.log(BANDWIDTHS[i]), scores[i][1]
    return LocalScale(*(jnp.asarray(x, jnp.float32) for x in (eta, power_z, level, factor,
                                                              best)))


def choose_squares(model: TrainedET, val: Dataset,
                   squares: tuple[tuple[int, int], ...]) -> TrainedET:
    """The model answering T_b = T_a^2 by the slope (mu_a^2 + d mu_a / d eta_a) for those
    pairs of `squares` only, in order, where that answer is closer to the validation targets
    than the answer without it: the slope wins on smooth exact targets, but the slope of a
    fit to noisy Monte-Carlo targets can be far worse than the fit itself."""
    eta = jnp.asarray(val.eta, jnp.float32)
    target = np.asarray(val.mu_T, np.float64)

    def error(pairs, b):
        trial = dataclasses.replace(model, square_of=pairs)
        answers = np.asarray(jax.vmap(lambda e: trial.answer(trial.net, e))(eta), np.float64)
        return float(np.sum((answers[:, b] - target[:, b]) ** 2))

    kept: tuple[tuple[int, int], ...] = ()
    for b, a in squares:
        if error(kept + ((b, a),), b) < error(kept, b):
            kept += ((b, a),)
    return dataclasses.replace(model, square_of=kept)


def recalibrate(model: TrainedET, val: Dataset, key: PRNGKeyArray, num_samples: int = 64,
                squares: tuple[tuple[int, int], ...] | None = None
                ) -> tuple[TrainedET, np.ndarray]:
    """A copy calibrated on the validation targets in four stages, per statistic: the
    residual field (`fit_field`: the smooth error, corrected and carried in the band), then
    on the residuals it leaves (leave-one-out where it was fitted) in bins of raw
    predictive spread (`fit_calibration`), then locally in eta (`LocalScale`); the targets'
    own MC noise and the field's variance count toward their distance from the
    prediction; last the tail stage (`fit_tail`) on the z they leave. Also returns the
    calibrated z^2 of the validation rows (n, k), Gaussianised (`gaussianised`) and held
    out from the field (leave-one-out): the in-sample band of a fitted field would flatter.
    First the squares' route (`choose_squares`) among `squares` (default: the model's own).
    """
    model = choose_squares(model, val, model.square_of if squares is None else squares)
    mean, cov, _ = (np.asarray(a, np.float64) for a in predict(
        model, val.eta, key, num_samples, calibrated=False))
    scale = np.asarray(model.net.scaler.mu_scale, np.float64)
    raw_var = np.diagonal(cov, axis1=1, axis2=2) / scale**2
    noise = np.diagonal(mc_noise(val), axis1=1, axis2=2) / scale**2
    residual = (np.asarray(val.mu_T, np.float64) - mean) / scale
    with jax.enable_x64(True):
        eta = np.asarray(jax.vmap(model._standardised)(jnp.asarray(val.eta, jnp.float64)))
    keep = np.sort(np.random.default_rng(0).permutation(len(eta))[:MAX_LOCAL])
    field, field_var = None, np.zeros_like(residual)
    if residual.shape[1] <= MAX_STATISTICS and len(keep) >= MIN_ROWS:
        field, held_residual, held_var = fit_field(eta[keep], residual[keep], raw_var[keep],
                                                   noise[keep])
        rest = np.setdiff1d(np.arange(len(eta)), keep)  # held out from the field: as is
        z_rest = jnp.asarray(eta[rest], jnp.float32)
        residual[rest] -= np.asarray(jax.vmap(field)(z_rest), np.float64)
        field_var[rest] = np.asarray(jax.vmap(field.variance)(z_rest), np.float64)
        residual[keep], field_var[keep] = held_residual, held_var
    spread = fit_calibration(residual, raw_var, noise + field_var)
    spread_var = raw_var * np.exp(spread.log_scale + spread.slope * np.clip(
        np.log(raw_var), spread.log_u_min, spread.log_u_max))
    abs_z = np.abs(residual) / np.sqrt(spread_var + noise + field_var)
    local = fit_local(eta[keep], abs_z[keep])
    model = eqx.tree_at(lambda m: (m.calibration, m.local, m.field), model,
                        (jnp.asarray(np.stack(spread), jnp.float32), local, field),
                        is_leaf=lambda x: x is None)
    c2 = np.asarray(jax.vmap(model.local_scale)(jnp.asarray(val.eta, jnp.float32)),
                    np.float64) ** 2
    c2[keep] = _held_out_local(local) ** 2
    variance = c2 * (spread_var + field_var)
    z = residual / np.sqrt(variance + noise)
    tail = fit_tail(z, variance)
    model = eqx.tree_at(lambda m: m.tail, model, tail, is_leaf=lambda x: x is None)
    s, inv_nu = (np.asarray(a, np.float64) for a in jax.vmap(tail)(
        jnp.asarray(variance, jnp.float32)))
    with np.errstate(divide="ignore"):
        return model, gaussianised(z / s, 1.0 / inv_nu) ** 2
