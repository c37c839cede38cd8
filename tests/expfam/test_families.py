import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _common import scaled_error
from scipy import stats

from bayes_et.data import design_eta
from bayes_et.expfam import (
    Beta,
    Gamma,
    Gaussian,
    LaplaceProduct,
    MultivariateNormal,
    Quartic,
    TruncatedNormal,
    VonMises,
    exact_moments,
    quadrature_moments,
)

CLOSED = [Gaussian(), MultivariateNormal(3), Gamma(), Beta(), VonMises(), LaplaceProduct(1),
          LaplaceProduct(2), TruncatedNormal()]
ONE_D = [f for f in CLOSED if int(np.prod(f.x_shape)) == 1]
# Shapes that once broke a closed form: LaplaceProduct with eta_1 ~ eta_2 (sinh(d)/d, d ~ 0).
HARD_ETA = {LaplaceProduct(1): [[1.73799554, 1.73719615], [1.0, 1.0], [2.0, 2.004]]}


@pytest.mark.parametrize("family", CLOSED, ids=repr)
def test_closed_forms_are_derivatives_of_log_partition(family):
    eta = jnp.asarray(design_eta(family, 50, seed=1))
    grad = jax.jit(jax.vmap(jax.grad(family._log_partition)))(eta)
    hess = jax.jit(jax.vmap(jax.hessian(family._log_partition)))(eta)
    assert scaled_error(family.mean_stats(eta), family.fisher(eta), grad, hess) < 1e-8


@pytest.mark.parametrize("family", ONE_D, ids=repr)
def test_quadrature_matches_closed_form(family):
    eta = design_eta(family, 50, seed=2)
    lo, hi = family.eta_bounds()  # the box corners too: the hardest shapes live there
    corners = np.array(np.meshgrid(*zip(lo, hi, strict=True))).reshape(len(lo), -1).T
    eta = np.concatenate([eta, corners[np.asarray(family.is_valid_eta(jnp.asarray(corners)))]])
    eta = np.concatenate([eta, np.reshape(HARD_ETA.get(family, []), (-1, family.eta_dim))])
    mu_q, cov_q = quadrature_moments(family, eta)
    assert scaled_error(mu_q, cov_q, family.mean_stats(eta), family.fisher(eta)) < 1e-8


@pytest.mark.parametrize(
    "family, eta, scipy_dist, xs",
    [
        (Gaussian(), [1.5, -0.5], stats.norm(1.5, 1.0), [-1.0, 0.3, 2.0]),
        (Gamma(), [1.0, -2.0], stats.gamma(2.0, scale=0.5), [0.1, 1.0, 3.0]),
        (Beta(), [-0.5, 2.0], stats.beta(0.5, 3.0), [0.01, 0.3, 0.9]),
        (VonMises(), [0.0, 2.0], stats.vonmises(2.0, loc=np.pi / 2), [-1.0, 0.5, 3.0]),
        (TruncatedNormal(), [1.0, -0.5], stats.truncnorm(-1.0, np.inf, 1.0, 1.0), [0.1, 2.0]),
    ],
    ids=["Gaussian", "Gamma", "Beta", "VonMises", "TruncatedNormal"],
)
def test_log_density_matches_scipy(family, eta, scipy_dist, xs):
    """log p = eta.T(x) + log h(x) - A(eta) against independent implementations."""
    eta, xs = jnp.asarray(eta), jnp.asarray(xs)
    log_p = family.log_unnormalized(xs, eta) - family.log_partition(eta)
    np.testing.assert_allclose(log_p, scipy_dist.logpdf(np.asarray(xs)), rtol=1e-10)


def test_multivariate_normal_tril_convention():
    family = MultivariateNormal(3)
    mean = np.array([0.5, -1.0, 2.0])
    cov = np.array([[1.0, 0.3, 0.1], [0.3, 2.0, -0.4], [0.1, -0.4, 1.5]])
    prec = np.linalg.inv(cov)
    rows, cols = np.tril_indices(3)
    # eta_ii = -P_ii / 2 and eta_ij = -P_ij (i > j): the convention in the docstring.
    eta_xxT = np.where(rows == cols, -0.5, -1.0) * prec[rows, cols]
    eta = np.concatenate([prec @ mean, eta_xxT])
    np.testing.assert_allclose(family.precision(jnp.asarray(eta_xxT)), prec, rtol=1e-12)
    xs = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    log_p = family.log_unnormalized(xs, eta) - family.log_partition(eta)
    np.testing.assert_allclose(log_p, stats.multivariate_normal(mean, cov).logpdf(xs), rtol=1e-10)
    stats_x = family.compute_stats(jnp.asarray(xs[1]), flatten=False)
    assert stats_x["xxT"].shape == (6,)
    np.testing.assert_allclose(stats_x["xxT"][1], xs[1, 1] * xs[1, 0])
    mu = family.mean_stats(eta)
    np.testing.assert_allclose(mu[3:], (cov + np.outer(mean, mean))[rows, cols], rtol=1e-12)


def test_quartic_covariance_is_jacobian_of_mean():
    family = Quartic()
    eta = design_eta(family, 20, seed=3)
    double_well = np.array([[0.0, 1.5, 0.0, -0.2], [0.3, 1.2, -0.1, -0.25]])
    eta = np.concatenate([eta, double_well])
    _, cov = quadrature_moments(family, eta)
    h = 1e-5
    mean_at = lambda e: quadrature_moments(family, e)[0]
    jac = np.stack([(mean_at(eta + h * e) - mean_at(eta - h * e)) / (2 * h) for e in np.eye(4)], -1)
    assert scaled_error(np.zeros(1), jac, np.zeros(1), cov) < 1e-6
    # The double wells really are bimodal: the density at 0 is below the density at a well.
    x = jnp.array([0.0, np.sqrt(1.5 / 0.4)])
    assert float(jnp.diff(family.log_unnormalized(x, double_well[0]))[0]) > 2.0


FISHER_FAMILIES = CLOSED + [Quartic()]


@pytest.mark.parametrize("family", FISHER_FAMILIES, ids=repr)
def test_fisher_symmetric_positive_definite(family):
    eta = design_eta(family, 30, seed=4)
    _, cov = exact_moments(family, eta)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-12, atol=1e-14)
    assert np.all(np.linalg.eigvalsh(cov)[:, 0] > 0)


def test_batch_axes_broadcast():
    family = Gamma()
    eta = design_eta(family, 6, seed=5).reshape(2, 3, 2)
    mu, cov = exact_moments(family, eta)
    assert mu.shape == (2, 3, 2) and cov.shape == (2, 3, 2, 2)
    mu_q, cov_q = quadrature_moments(family, eta)
    assert scaled_error(mu_q, cov_q, mu, cov) < 1e-8
    x = jnp.ones((4, 5))
    assert family.compute_stats(x).shape == (4, 5, 2)
    assert family.log_unnormalized(x, eta[0, 0]).shape == (4, 5)
    d = family.unflatten_stats_or_eta(eta)
    assert d["log_x"].shape == (2, 3)
    np.testing.assert_array_equal(family.flatten_stats_or_eta(d), eta)
