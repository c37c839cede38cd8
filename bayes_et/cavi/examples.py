"""Worked models.

`normal_gamma` and `quartic_prior` observe x_n ~ N(mu, 1/tau), n = 1..N, with
tau ~ Gamma(a0, b0) (shape, rate) and factors `mu` and `tau` (Gamma, T = [log tau, tau]);
they differ in the prior of mu. `poisson_lognormal` is the random-effects model of
over-dispersed counts, with a plate of N latent log-rates; `grouped_poisson_lognormal` adds
a level of groups linked by an index array; `gaussian_random_effects` has a closed-form
fixed point (a linear solve).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from bayes_et.expfam import (
    Gamma,
    Gaussian,
    MultivariateNormal,
    MultivariatePoissonLogNormal,
    PoissonLogNormal,
    Quartic,
    Wishart,
)

from ._model import CAVIModel, Factor, Model


def _data(data) -> np.ndarray:
    x = np.asarray(data, np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"data: expected one or more finite numbers; got {data!r}")
    return x


def _positive(**values: float) -> None:
    for name, value in values.items():
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if not (number and np.isfinite(value) and value > 0):
            raise ValueError(f"{name}: must be a positive number; got {value!r}")


def _tau_eta0(x: np.ndarray, a0: float, b0: float, extra_log: float = 0.0,
              extra_linear: float = 0.0) -> list[float]:
    return [a0 - 1 + x.size / 2 + extra_log, -b0 - 0.5 * np.sum(x**2) + extra_linear]


def normal_gamma(data, mu0: float, lambda0: float, a0: float, b0: float) -> CAVIModel:
    """Bishop (2006) §10.1.3: mu | tau ~ N(mu0, 1/(lambda0 tau)), tau ~ Gamma(a0, b0).
    Factor mu is Gaussian (T = [mu, mu^2]); all its terms involve tau, so its eta0 is 0."""
    x = _data(data)
    _positive(lambda0=lambda0, a0=a0, b0=b0)
    n = x.size
    coupling = np.zeros((2, 2))
    coupling[0, 1] = np.sum(x) + lambda0 * mu0  # tau * mu
    coupling[1, 1] = -(n + lambda0) / 2  # tau * mu^2
    return CAVIModel(
        {"mu": Factor(Gaussian(), [0.0, 0.0]),
         "tau": Factor(Gamma(), _tau_eta0(x, a0, b0, 0.5, -0.5 * lambda0 * mu0**2))},
        {("mu", "tau"): coupling})


def normal_gamma_fixed_point(data, mu0: float, lambda0: float, a0: float,
                             b0: float) -> dict[str, np.ndarray]:
    """The textbook mean-field fixed point in closed form (Bishop 10.26-10.30): mu_N,
    lambda_N = (lambda0 + N) E[tau], a_N = a0 + (N + 1)/2, b_N = b0 + (S + 1/E[tau]) / 2
    with S = sum (x_n - mu_N)^2 + lambda0 (mu_N - mu0)^2, whence
    E[tau] = (a_N - 1/2) / (b0 + S/2). Returned as natural parameters per factor."""
    x = _data(data)
    n = x.size
    mu_n = (lambda0 * mu0 + np.sum(x)) / (lambda0 + n)
    a_n = a0 + (n + 1) / 2
    spread = np.sum((x - mu_n) ** 2) + lambda0 * (mu_n - mu0) ** 2
    e_tau = (a_n - 0.5) / (b0 + spread / 2)
    lambda_n = (lambda0 + n) * e_tau
    b_n = b0 + 0.5 * (spread + 1 / e_tau)
    return {"mu": np.array([lambda_n * mu_n, -lambda_n / 2]), "tau": np.array([a_n - 1, -b_n])}


def quartic_prior(data, eta_prior, a0: float, b0: float) -> CAVIModel:
    """x_n ~ N(mu, 1/tau), mu ~ Quartic(eta_prior) over [mu, mu^2, mu^3, mu^4] (eta_prior[3]
    < 0; a double well when eta_prior[1] > 0), tau ~ Gamma(a0, b0). Factor mu is the
    non-named Quartic family: its moments need quadrature, sampling or a network."""
    x = _data(data)
    _positive(a0=a0, b0=b0)
    family = Quartic()
    eta_prior = np.asarray(eta_prior, np.float64)
    try:
        family.validate_eta(eta_prior, "eta_prior")
    except ValueError as err:
        raise ValueError(f"factor 'mu': {err}") from None
    coupling = np.zeros((4, 2))
    coupling[0, 1] = np.sum(x)  # tau * mu
    coupling[1, 1] = -x.size / 2  # tau * mu^2
    return CAVIModel({"mu": Factor(family, eta_prior), "tau": Factor(Gamma(), _tau_eta0(
        x, a0, b0))}, {("mu", "tau"): coupling})


def simulate(n: int, mean: float, sd: float, seed: int) -> np.ndarray:
    """n observations from N(mean, sd^2) with NumPy's generator `seed`."""
    return np.random.default_rng(seed).normal(mean, sd, size=n)


def _counts(counts, exposure) -> tuple[np.ndarray, np.ndarray]:
    y, e = (np.asarray(a, np.float64).ravel() for a in (counts, exposure))
    if y.size == 0 or y.shape != e.shape:
        raise ValueError(f"counts and exposure: expected two non-empty arrays of one length; "
                         f"got {y.size} and {e.size}")
    if not (np.all(np.isfinite(y)) and np.all(y >= 0) and np.all(y == np.round(y))):
        raise ValueError("counts: expected non-negative integers")
    if not (np.all(np.isfinite(e)) and np.all(e > 0)):
        raise ValueError("exposure: expected positive finite numbers")
    return y, e


def _random_effect(m: Model, z, mean, tau, offset: np.ndarray, mean_index=None) -> None:
    """The terms of z_i ~ N(mean + offset_i, 1/tau) but those in tau alone (the factor's
    eta0 holds N/2 log tau - sum(offset^2)/2 tau): -tau/2 (z - mean - o)^2 expanded."""
    mean_x, mean_x2 = (mean[k] if mean_index is None else mean[k][mean_index]
                       for k in ("x", "x2"))
    m.term(1.0, z["x"], mean_x, tau["x"])
    m.term(offset, z["x"], tau["x"])
    m.term(-0.5, z["x2"], tau["x"])
    if mean_index is None:  # mean is a single factor: sum the rows into one coefficient
        m.term(-0.5 * offset.size, mean["x2"], tau["x"])
        m.term(-np.sum(offset), mean["x"], tau["x"])
    else:
        m.term(-0.5, mean_x2, tau["x"])
        m.term(-offset, mean_x, tau["x"])


def _tau_of_random_effect(offset: np.ndarray, a0: float, b0: float) -> list[float]:
    return [a0 - 1 + offset.size / 2, -b0 - 0.5 * float(np.sum(offset**2))]


def poisson_lognormal(counts, exposure, mu_sd: float = 10.0, a0: float = 1.0,
                      b0: float = 1.0) -> CAVIModel:
    """y_i ~ Poisson(E_i e^{r_i}), r_i ~ N(mu, 1/tau), mu ~ N(0, mu_sd^2), tau ~ Gamma(a0, b0),
    under the full mean field q(mu) q(tau) prod q(z_i). The plate `z` is the log expected
    count z_i = log E_i + r_i (PoissonLogNormal, T = [z, z^2, e^z]): with the exposure as an
    offset in z's prior, every member has eta_3 = -1, so the network for z sees a 2-D eta
    box however much the exposures differ. E[r_i] = E[z_i] - log E_i."""
    y, exposure = _counts(counts, exposure)
    _positive(mu_sd=mu_sd, a0=a0, b0=b0)
    n, offset = y.size, np.log(exposure)
    m = Model()
    mu = m.factor("mu", Gaussian(), [0.0, -0.5 / mu_sd**2])
    tau = m.factor("tau", Gamma(), _tau_of_random_effect(offset, a0, b0))
    z = m.factor("z", PoissonLogNormal(), np.stack([y, np.zeros(n), -np.ones(n)], 1))
    _random_effect(m, z, mu, tau, offset)
    return m.build()


def grouped_poisson_lognormal(counts, exposure, group, mu_sd: float = 10.0, a0: float = 1.0,
                              b0: float = 1.0) -> CAVIModel:
    """Two levels: y_i ~ Poisson(E_i e^{r_i}), r_i ~ N(u_{g_i}, 1/tau), u_j ~ N(mu, 1/tau_u),
    mu ~ N(0, mu_sd^2), tau and tau_u ~ Gamma(a0, b0). Plates `z` (as in poisson_lognormal)
    and `u` (Gaussian, one member per group), linked by the index array `group` (g_i)."""
    y, exposure = _counts(counts, exposure)
    _positive(mu_sd=mu_sd, a0=a0, b0=b0)
    group = np.asarray(group)
    if group.shape != y.shape or not np.issubdtype(group.dtype, np.integer) or group.min() < 0:
        raise ValueError(f"group: expected {y.size} non-negative ints (one group per count); "
                         f"got shape {group.shape}, dtype {group.dtype}")
    n, j, offset = y.size, int(group.max()) + 1, np.log(exposure)
    m = Model()
    mu = m.factor("mu", Gaussian(), [0.0, -0.5 / mu_sd**2])
    tau_u = m.factor("tau_u", Gamma(), _tau_of_random_effect(np.zeros(j), a0, b0))
    u = m.factor("u", Gaussian(), np.zeros((j, 2)))
    tau = m.factor("tau", Gamma(), _tau_of_random_effect(offset, a0, b0))
    z = m.factor("z", PoissonLogNormal(), np.stack([y, np.zeros(n), -np.ones(n)], 1))
    _random_effect(m, u, mu, tau_u, np.zeros(j))
    _random_effect(m, z, u, tau, offset, mean_index=group)
    return m.build()


def gaussian_random_effects(data, noise_sd, prior_precision: float, m0: float = 0.0,
                            kappa0: float = 1.0) -> CAVIModel:
    """y_i ~ N(z_i, s_i^2) (s_i = noise_sd, known), z_i ~ N(mu, 1/lambda) (lambda =
    prior_precision, known), mu ~ N(m0, 1/kappa0): Gaussian factors `mu` and the plate `z`,
    whose fixed point is a linear solve (`gaussian_random_effects_fixed_point`)."""
    y = _data(data)
    s = np.broadcast_to(np.asarray(noise_sd, np.float64), y.shape)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"noise_sd: must be positive numbers; got {noise_sd!r}"[:200])
    _positive(prior_precision=prior_precision, kappa0=kappa0)
    lam, n = prior_precision, y.size
    m = Model()
    mu = m.factor("mu", Gaussian(), [kappa0 * m0, -0.5 * (kappa0 + n * lam)])
    z = m.factor("z", Gaussian(), np.stack([y / s**2, -0.5 * (1 / s**2 + lam)], 1))
    m.term(lam, z["x"], mu["x"])
    return m.build()


def gaussian_random_effects_fixed_point(data, noise_sd, prior_precision: float,
                                        m0: float = 0.0, kappa0: float = 1.0
                                        ) -> dict[str, np.ndarray]:
    """The mean-field fixed point of `gaussian_random_effects` by one linear solve of
    E[z_i] (1/s_i^2 + lambda) - lambda E[mu] = y_i / s_i^2 and
    E[mu] (kappa0 + N lambda) - lambda sum E[z_i] = kappa0 m0; natural parameters."""
    y = _data(data)
    s2 = np.broadcast_to(np.asarray(noise_sd, np.float64), y.shape) ** 2
    lam, n = prior_precision, y.size
    system = np.zeros((n + 1, n + 1))
    system[np.arange(n), np.arange(n)] = 1 / s2 + lam
    system[:n, n] = -lam
    system[n, :n] = -lam
    system[n, n] = kappa0 + n * lam
    means = np.linalg.solve(system, np.append(y / s2, kappa0 * m0))
    z_prec, mu_prec = 1 / s2 + lam, kappa0 + n * lam
    return {"mu": np.array([mu_prec * means[n], -mu_prec / 2]),
            "z": np.stack([z_prec * means[:n], -z_prec / 2], 1)}


def cancer_data() -> dict[str, np.ndarray]:
    """statsmodels' `cancer` data (301 counties): counts `cancer` and exposure `population`
    (needs the `bench` extra: pip install "bayes-et[bench]")."""
    try:
        from statsmodels.datasets import cancer
    except ImportError:
        raise ValueError("data {dataset: cancer} needs statsmodels: pip install "
                         "'bayes-et[bench]'") from None
    frame = cancer.load_pandas().data
    return {"counts": frame["cancer"].to_numpy(np.float64),
            "exposure": frame["population"].to_numpy(np.float64)}


def scrt_data() -> dict[str, np.ndarray]:
    """Real multivariate counts shipped with the package (bayes_et/cavi/data/scrt.csv, whose
    header names its source and the rule that chose its columns): 2000 cells x 3 genes
    (SPP1, APOC1, CXCL8) of the scMARK single-cell RNA data as pyPLNmodels ships it (MIT).
    `counts` (2000, 3), `offsets` the log library size (2000,), `cell_type` (strings)."""
    path = Path(__file__).with_name("data") / "scrt.csv"
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    column = lambda name: np.array([r[name] for r in rows], np.float64)
    return {"counts": np.stack([column(g) for g in ("SPP1", "APOC1", "CXCL8")], 1),
            "offsets": np.log(column("library_size")),
            "cell_type": np.array([r["cell_type"] for r in rows])}


DATASETS: dict[str, Any] = {"cancer": cancer_data, "scrt": scrt_data}
"""Real data sets by name (as used in configs: data: {dataset: NAME, rows: K})."""


def simulate_counts(n: int, mu: float, tau: float, seed: int, exposure=None,
                    groups: int = 0, tau_u: float = 4.0) -> dict[str, np.ndarray]:
    """Counts from the (grouped) Poisson log-normal model: exposures log-uniform on
    [1e3, 1e5] (or the ones given), r_i ~ N(mu, 1/tau) (or N(u_g, 1/tau) with
    u_g ~ N(mu, 1/tau_u) and groups g_i uniform over `groups` groups)."""
    rng = np.random.default_rng(seed)
    exposure = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n)) if exposure is None \
        else np.asarray(exposure, np.float64)
    out = {"exposure": exposure}
    centre = np.full(n, mu)
    if groups:
        out["group"] = rng.integers(0, groups, n)
        centre = rng.normal(mu, 1 / np.sqrt(tau_u), groups)[out["group"]]
    rate = centre + rng.normal(0.0, 1 / np.sqrt(tau), n)
    out["counts"] = rng.poisson(exposure * np.exp(rate)).astype(np.float64)
    return out


def _tril_convention(d: int) -> np.ndarray:
    """Per entry of a lower triangle (row-major): 1/2 on the diagonal, 1 off it, so that
    -(c * tril(M)) . tril(X) = -tr(M X) / 2 for symmetric M and X."""
    rows, cols = np.tril_indices(d)
    return np.where(rows == cols, 0.5, 1.0)


def multivariate_poisson_lognormal(counts, offsets=None, prior_mean: float = 0.0,
                                   prior_sd: float = 10.0, nu0: float | None = None,
                                   scale0=None) -> CAVIModel:
    """y_ij ~ Poisson(e^{o_ij + z_ij}), z_i ~ N(mu, Lambda^-1) in R^p,
    mu ~ N(prior_mean, prior_sd^2 I), Lambda ~ Wishart(nu0, scale0) (default nu0 = p + 1,
    scale0 = I / nu0: E[Lambda] = I), under the full mean field q(mu) q(Lambda) prod q(z_i).
    Factors `mu` (MultivariateNormal(p)), `Lambda` (Wishart(p)) and the plate `z`
    (MultivariatePoissonLogNormal(p), eta_exp = -e^{o_i}: the offsets, e.g. log library
    sizes, one per sample or per count, enter the likelihood). The Gaussian's terms
    mu^T Lambda z_i, tr(Lambda z_i z_i^T) and tr(Lambda mu mu^T) are written once each by
    `Model.product` over the statistics' components."""
    y = np.asarray(counts, np.float64)
    if y.ndim != 2 or y.shape[1] < 1 or not np.all(np.isfinite(y)) or np.any(y < 0):
        raise ValueError(f"counts: expected finite non-negative counts of shape (N, p); got "
                         f"shape {y.shape}" + (", negative entries" if y.size and np.nanmin(
                             y) < 0 else ""))
    n, p = y.shape
    o = np.zeros_like(y) if offsets is None else np.asarray(offsets, np.float64)
    if o.ndim == 1 and len(o) == n:
        o = np.repeat(o[:, None], p, 1)  # one offset per sample (log library size)
    if o.shape != y.shape or not np.all(np.isfinite(o)):
        raise ValueError(f"offsets: expected finite values of shape ({n},) or {y.shape}; got "
                         f"shape {o.shape}")
    nu0 = p + 1.0 if nu0 is None else float(nu0)
    scale0 = np.eye(p) / nu0 if scale0 is None else np.asarray(scale0, np.float64)
    _positive(prior_sd=prior_sd)
    if not nu0 > p - 1:
        raise ValueError(f"nu0: got {nu0}; allowed: > p - 1 = {p - 1} (a proper Wishart)")
    if scale0.shape != (p, p) or not np.all(np.linalg.eigvalsh(scale0) > 0):
        raise ValueError(f"scale0: expected a ({p}, {p}) positive-definite matrix; got "
                         f"{scale0.tolist() if scale0.size <= 16 else scale0.shape}")
    rows, cols = np.tril_indices(p)
    half = _tril_convention(p)
    m = Model()
    mu = m.factor("mu", MultivariateNormal(p), np.concatenate(
        [np.full(p, prior_mean / prior_sd**2), -half * np.eye(p)[rows, cols] / prior_sd**2]))
    lam = m.factor("Lambda", Wishart(p), np.concatenate(
        [[(nu0 - p - 1) / 2 + n / 2], -half * np.linalg.inv(scale0)[rows, cols]]))
    z = m.factor("z", MultivariatePoissonLogNormal(p), np.concatenate(
        [y, np.zeros((n, len(rows))), -np.exp(o)], 1))
    m.product(-0.5, lam.block("x"), z.block("xxT"), form="trace")  # -tr(Lambda z_i z_i^T) / 2
    m.product(-0.5 * n, lam.block("x"), mu.block("xxT"), form="trace")  # -N tr(L mu mu^T) / 2
    m.product(1.0, mu.block("x"), lam.block("x"), z.block("x"), form="bilinear")  # mu^T L z_i
    return m.build()


EXAMPLES: dict[str, Any] = {
    "normal_gamma": normal_gamma, "quartic_prior": quartic_prior,
    "poisson_lognormal": poisson_lognormal,
    "grouped_poisson_lognormal": grouped_poisson_lognormal,
    "gaussian_random_effects": gaussian_random_effects,
    "multivariate_poisson_lognormal": multivariate_poisson_lognormal}
"""Example builders by name (as used in configs)."""
