import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import bayes_et.params as bp

MEAN = jnp.array([0.0, 1.5, -2.0, 0.3])
WIDTH = jnp.array([0.5, 1.0, 2.0, 0.1])
N = 40_000


def gaussian(mean=MEAN, width=WIDTH):
    return bp.GaussianParameter(mean, bp.raw_from_width(width))


def laplacian(mean=MEAN, width=WIDTH):
    return bp.LaplacianParameter(mean, bp.raw_from_width(width))


@pytest.mark.parametrize(
    "make, variance, fourth_central",
    [
        (gaussian, lambda w: w**2, lambda w: 3 * w**4),
        (laplacian, lambda w: 2 * w**2, lambda w: 24 * w**4),
    ],
)
def test_sample_moments_within_four_mcse(make, variance, fourth_central):
    p = make()
    draws = np.asarray(jax.vmap(p.sample)(jax.random.split(jax.random.key(0), N)))
    var = np.asarray(variance(WIDTH))
    mean_se = np.sqrt(var / N)
    var_se = np.sqrt((np.asarray(fourth_central(WIDTH)) - var**2) / N)
    assert np.all(np.abs(draws.mean(0) - np.asarray(MEAN)) < 4 * mean_se)
    assert np.all(np.abs(draws.var(0) - var) < 4 * var_se)


def test_entropy_and_log_prob_match_scipy():
    g, lap = gaussian(), laplacian()
    m, w = np.asarray(MEAN), np.asarray(WIDTH)
    np.testing.assert_allclose(g.entropy(), stats.norm(m, w).entropy().sum(), rtol=1e-5)
    np.testing.assert_allclose(lap.entropy(), stats.laplace(m, w).entropy().sum(), rtol=1e-5)
    v = np.array([0.1, -0.4, 2.0, 0.35])
    np.testing.assert_allclose(g.log_prob(v), stats.norm(m, w).logpdf(v).sum(), rtol=1e-5)
    np.testing.assert_allclose(lap.log_prob(v), stats.laplace(m, w).logpdf(v).sum(), rtol=1e-5)


def _kl_by_quadrature(q, p):
    f = lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x))
    lo, hi = q.ppf(1e-14), q.ppf(1 - 1e-14)
    pts = [q.mean()]
    return integrate.quad(f, lo, hi, points=pts, limit=200, epsabs=1e-12, epsrel=1e-10)[0]


@pytest.mark.parametrize("kind", ["gaussian", "laplacian"])
@pytest.mark.parametrize("prior_kind", ["normal", "laplace"])
def test_closed_form_kl_matches_quadrature(kind, prior_kind):
    p = (gaussian if kind == "gaussian" else laplacian)()
    prior = bp.NormalPrior(1.3) if prior_kind == "normal" else bp.LaplacePrior(1.3)
    q_dist = stats.norm if kind == "gaussian" else stats.laplace
    p_dist = stats.norm(0, 1.3) if prior_kind == "normal" else stats.laplace(0, 1.3)
    expected = sum(
        _kl_by_quadrature(q_dist(m, w), p_dist)
        for m, w in zip(np.asarray(MEAN), np.asarray(WIDTH), strict=True)
    )
    np.testing.assert_allclose(p.kl(prior), expected, rtol=1e-4)


def test_gaussian_normal_kl_matches_monte_carlo():
    p, prior = gaussian(), bp.NormalPrior(0.8)
    draws = jax.vmap(p.sample)(jax.random.split(jax.random.key(1), N))
    log_ratio = np.asarray(jax.vmap(lambda w: p.log_prob(w) - prior.log_prob(w))(draws))
    se = log_ratio.std() / math.sqrt(N)
    assert abs(float(p.kl(prior)) - log_ratio.mean()) < 4 * se


class StudentTPrior(bp.AbstractPrior):
    """A prior with no closed-form KL: exercises the Monte-Carlo route."""

    def log_prob(self, value):
        return jnp.sum(jax.scipy.stats.t.logpdf(value, 3.0))


def test_monte_carlo_kl_fallback_and_missing_key():
    p = gaussian()
    with pytest.raises(ValueError, match="key"):
        p.kl(StudentTPrior())
    estimates = np.array(
        [float(p.kl(StudentTPrior(), key=jax.random.key(i), num_samples=256)) for i in range(40)]
    )
    expected = sum(
        _kl_by_quadrature(stats.norm(m, w), stats.t(3.0))
        for m, w in zip(np.asarray(MEAN), np.asarray(WIDTH), strict=True)
    )
    se = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - expected) < 4 * se


def test_deterministic_parameter_is_a_point_mass():
    p = bp.DeterministicParameter(MEAN)
    assert np.array_equal(p.sample(jax.random.key(0)), MEAN)
    assert float(p.entropy()) == 0.0
    prior = bp.NormalPrior(2.0)
    np.testing.assert_allclose(p.kl(prior), -prior.log_prob(MEAN), rtol=1e-6)
    with pytest.raises(ValueError, match="point mass"):
        p.log_prob(MEAN)


def test_width_bijection_round_trip_and_floor():
    widths = jnp.array([1e-5, 1e-3, 0.5, 3.0, 80.0], dtype=jnp.float32)
    np.testing.assert_allclose(bp.width_from_raw(bp.raw_from_width(widths)), widths, rtol=1e-4)
    assert np.all(np.isfinite(bp.raw_from_width(widths)))
    with pytest.raises(ValueError, match="width must be >"):
        bp.raw_from_width(jnp.array([0.5, 0.0]))


def test_make_parameter_casts_and_validates():
    p = bp.make_parameter(np.arange(3))
    assert isinstance(p, bp.GaussianParameter) and p.mean.dtype == jnp.float32
    np.testing.assert_allclose(p.stdv, 1e-2, rtol=1e-4)
    lap = bp.make_parameter(jnp.ones((2, 2)), param_type=bp.LaplacianParameter, init_stdv=0.3)
    np.testing.assert_allclose(lap.scale, 0.3, rtol=1e-5)
    assert isinstance(bp.make_parameter(1.0, bayesian=False), bp.DeterministicParameter)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="init_stdv must be > 0"):
            bp.make_parameter(1.0, init_stdv=bad)
    with pytest.raises(ValueError, match="param_type"):
        bp.make_parameter(1.0, param_type=dict)


@pytest.mark.parametrize("prior", [bp.NormalPrior, bp.LaplacePrior])
def test_priors_reject_non_positive_scale(prior):
    with pytest.raises(ValueError, match="scale must be > 0"):
        prior(0.0)
