"""Worked models: the textbook normal-gamma and a quartic (double-well capable) prior.

Both observe x_n ~ N(mu, 1/tau), n = 1..N, with tau ~ Gamma(a0, b0) (shape, rate) and
factors `mu` and `tau` (Gamma, T = [log tau, tau]); they differ in the prior of mu.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_et.expfam import Gamma, Gaussian, Quartic

from ._model import CAVIModel, Factor


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


EXAMPLES: dict[str, Any] = {"normal_gamma": normal_gamma, "quartic_prior": quartic_prior}
"""Example builders by name (as used in configs)."""
