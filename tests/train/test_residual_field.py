"""The residual field keeps the statistics' shared error: a full covariance, matched by
its draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_et.train._field import fit_field

SHARED = 0.9 / np.sqrt(0.9**2 + 0.3**2)  # the correlation of the two statistics' noise


def _smooth(z):
    return 0.3 * np.stack([np.sin(1.5 * z[:, 0]) + 0.5 * z[:, 1],
                           np.cos(z[:, 0]) - 0.3 * z[:, 1]], 1)


def _fitted(seed, n=120):
    """A field of two statistics whose residuals share most of their noise."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-2, 2, (n, 2))
    e = rng.standard_normal((n, 2))
    noise = 0.1 * np.stack([e[:, 0], 0.9 * e[:, 0] + 0.3 * e[:, 1]], 1)
    field, _, _ = fit_field(z, _smooth(z) + noise, np.full((n, 2), 1e-6), np.zeros((n, 2)))
    return field, jnp.asarray(rng.uniform(-1.5, 1.5, (200, 2)))


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_the_field_band_carries_the_statistics_correlation_and_its_draws_match_it():
    combination = np.array([0.9, -1.0])  # nearly the shared noise's null direction
    full, diagonal = [], []
    for seed in range(4):
        field, z = _fitted(seed)
        correlation = np.asarray(field.correlation @ field.correlation.T)
        assert abs(correlation[0, 1] - SHARED) < 0.05  # estimated from left-out residuals
        cov = np.asarray(jax.vmap(field.covariance)(z), np.float64)
        np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2),
                                   jax.vmap(field.variance)(z), rtol=1e-5)
        error = (np.asarray(jax.vmap(field)(z)) - _smooth(np.asarray(z))) @ combination
        full.append(error**2 / np.einsum("i,nij,j->n", combination, cov, combination))
        diagonal.append(error**2 / np.einsum("i,nii->n", combination**2, cov))
    # The combination's band: the full covariance is within a factor 4 of calibrated and
    # nearer than the diagonal one (which overstates this error's variance many times).
    z2_full, z2_diagonal = np.mean(full), np.mean(diagonal)
    assert 0.25 < z2_full < 4.0
    assert abs(np.log(z2_full)) < abs(np.log(z2_diagonal))

    # The draws: each statistic's variance and their correlation are the covariance's.
    num = 2000
    draws = field.draws(jax.random.key(0), num)
    for point in z[:3]:
        values = np.asarray(jax.vmap(lambda w, b, p=point: field.draw(p, (w, b)))(*draws),
                            np.float64)
        cov = np.asarray(field.covariance(point), np.float64)
        np.testing.assert_allclose(values.var(0, ddof=1) / np.diag(cov), 1.0,
                                   atol=5 * np.sqrt(2 / (num - 1)))
        rho = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
        se = (1 - rho**2) / np.sqrt(num)
        assert abs(np.corrcoef(values.T)[0, 1] - rho) < 5 * se + 0.01
        assert rho > 0.8
