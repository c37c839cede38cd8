"""The tensor Gauss-Hermite route for x in R^d, d <= 3 (ExactMoments 'gauss_hermite'),
against an independent computation: SciPy's nested quadrature and a NumPy Gauss-Legendre
product rule on a wide box around a SciPy-found mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_et.cavi import ExactMoments, MomentFlag, SamplingMoments, WithFallback
from bayes_et.expfam import GinzburgLandau, MultivariatePoissonLogNormal, PoissonLogNormal
from bayes_et.expfam._laplace import tensor_laplace_moments_at

integrate, optimize, special = (pytest.importorskip(f"scipy.{m}")
                                for m in ("integrate", "optimize", "special"))


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def natural(p: int, counts, exposure, prior_mean=-1.0):
    """eta of one member: y ~ Poisson(E e^x) per coordinate, x ~ N(m, P^-1), P = 4 I + 1."""
    precision = 4.0 * np.eye(p) + 1.0
    rows, cols = np.tril_indices(p)
    eta_xxT = np.where(rows == cols, -precision[rows, cols] / 2, -precision[rows, cols])
    eta_x = np.asarray(counts, float) + precision @ np.full(p, prior_mean)
    return np.concatenate([eta_x, eta_xxT, -np.asarray(exposure, float)])


def stats(x: np.ndarray) -> np.ndarray:
    """T = [x, tril(x x^T), e^x] in NumPy, x (n, p)."""
    rows, cols = np.tril_indices(x.shape[1])
    return np.concatenate([x, x[:, rows] * x[:, cols], np.exp(x)], 1)


def legendre_moments(eta: np.ndarray, p: int, nodes: int = 60, width: float = 9.0):
    """E[T] by a Gauss-Legendre product rule on mode +- width sd (SciPy's mode, sd from the
    Hessian by finite differences of SciPy's gradient)."""
    log_q = lambda x: stats(x[None])[0] @ eta
    mode = optimize.minimize(lambda x: -log_q(x), np.zeros(p), method="BFGS", tol=1e-12).x
    step = 1e-4
    hess = np.array([(optimize.approx_fprime(mode + step * e, log_q, 1e-7)
                      - optimize.approx_fprime(mode - step * e, log_q, 1e-7)) / (2 * step)
                     for e in np.eye(p)])
    sd = np.sqrt(np.diag(np.linalg.inv(-0.5 * (hess + hess.T))))
    t, w = special.roots_legendre(nodes)
    axes = [mode[k] + width * sd[k] * t for k in range(p)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, p)
    weight = np.prod(np.stack(np.meshgrid(*[w] * p, indexing="ij"), -1).reshape(-1, p), 1)
    values = stats(grid)
    log_w = values @ eta
    weight = weight * np.exp(log_w - log_w.max())
    return weight @ values / weight.sum(), mode


@pytest.mark.parametrize("p", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_tensor_gauss_hermite_matches_an_independent_product_rule(p):
    """Moments of Gaussian-times-Poisson factors (counts 0 to 12, exposures 0.3 to 3) match
    the Gauss-Legendre product rule to 1e-7 (relative to |value| + 1), no flag raised."""
    family = MultivariatePoissonLogNormal(p)
    rng = np.random.default_rng(p)
    etas = np.stack([natural(p, rng.integers(0, 13, p), rng.uniform(0.3, 3.0, p))
                     for _ in range(4)])
    got = ExactMoments(family, "gauss_hermite").evaluate(jnp.asarray(etas), None,
                                                          jax.random.key(0))
    assert np.all(np.asarray(got.flags) == 0)
    for eta, mean in zip(etas, np.asarray(got.mean), strict=True):
        truth, _ = legendre_moments(eta, p)
        np.testing.assert_array_less(np.abs(mean - truth) / (np.abs(truth) + 1), 1e-7)


@pytest.mark.slow
def test_two_dimensional_moments_match_scipy_nested_quadrature():
    """E[x1], E[x1 x2] and E[e^x2] of a 2-D factor by scipy.integrate.dblquad (adaptive,
    nested) on the box that holds the mass, against the tensor route: 1e-7."""
    eta = natural(2, [3.0, 0.0], [1.5, 0.7])
    _, mode = legendre_moments(eta, 2)
    shift = stats(mode[None])[0] @ eta
    density = lambda x2, x1: np.exp(stats(np.array([[x1, x2]]))[0] @ eta - shift)
    box = (mode[0] - 4, mode[0] + 4, mode[1] - 4, mode[1] + 4)
    quad = lambda f: integrate.dblquad(lambda x2, x1: f(x1, x2) * density(x2, x1), *box,
                                       epsabs=1e-13, epsrel=1e-12)[0]
    z = quad(lambda a, b: 1.0)
    truth = np.array([quad(lambda a, b: a), quad(lambda a, b: a * b),
                      quad(lambda a, b: np.exp(b))]) / z
    mean = np.asarray(ExactMoments(MultivariatePoissonLogNormal(2)).evaluate(
        jnp.asarray(eta[None]), None, jax.random.key(0)).mean)[0]
    got = mean[[0, 3, 6]]  # x1, tril (x1^2, x2 x1, x2^2), e^x: x1, x2 x1, e^x2
    np.testing.assert_array_less(np.abs(got - truth) / (np.abs(truth) + 1), 1e-7)


@pytest.mark.slow  # ~30 s: in the slow tier
def test_tensor_rule_covariance_is_the_derivative_of_the_mean():
    """jacobian (Cov[T] by the same rule) equals central differences of the mean."""
    provider = ExactMoments(MultivariatePoissonLogNormal(2))
    eta = jnp.asarray(natural(2, [2.0, 5.0], [1.0, 2.0])[None])
    cov = np.asarray(provider.jacobian(eta, jax.random.key(0)))[0]
    step = 1e-5
    columns = [(np.asarray(provider.evaluate(eta + step * e, None, None).mean)
                - np.asarray(provider.evaluate(eta - step * e, None, None).mean))[0] / (2 * step)
               for e in np.eye(eta.shape[1])]
    np.testing.assert_allclose(cov, np.stack(columns, 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cov, cov.T, atol=1e-12)


@pytest.mark.slow  # a heavier check of a kind the fast tier covers: in the slow tier
def test_a_ring_shaped_factor_is_flagged_not_answered():
    """The Ginzburg-Landau Mexican hat (a ring of modes): no Laplace frame fits it, the
    error estimate passes tol, and the row is NaN with OVER_TOLERANCE (a fallback answers
    it); a one-well row beside it is answered."""
    ring = [0.0, 0.0, 2.0, 2.0, 0.0, -0.5]
    well = [0.3, -0.2, -4.0, -4.0, 0.2, -0.05]
    got = ExactMoments(GinzburgLandau(), "gauss_hermite").evaluate(
        jnp.asarray([ring, well]), None, jax.random.key(0))
    flags, mean = np.asarray(got.flags), np.asarray(got.mean)
    assert flags[0] & MomentFlag.OVER_TOLERANCE and np.all(np.isnan(mean[0]))
    assert flags[1] == 0 and np.all(np.isfinite(mean[1]))


@pytest.mark.slow
def test_a_sampling_fallback_answers_the_flagged_ring():
    """With a sampling fallback the ring is answered by NUTS, the well by the tensor rule."""
    ring = [0.0, 0.0, 2.0, 2.0, 0.0, -0.5]
    well = [0.3, -0.2, -4.0, -4.0, 0.2, -0.05]
    mean = np.asarray(ExactMoments(GinzburgLandau(), "gauss_hermite").evaluate(
        jnp.asarray([ring, well]), None, jax.random.key(0)).mean)
    both = WithFallback(ExactMoments(GinzburgLandau(), "gauss_hermite"), SamplingMoments(
        GinzburgLandau(), num_chains=2, num_warmup=200, num_samples=200))
    got = both.evaluate(jnp.asarray([ring, well]), None, jax.random.key(0))
    flags, answer = np.asarray(got.flags), np.asarray(got.mean)
    assert flags[0] & MomentFlag.ANSWERED_BY_FALLBACK and np.all(np.isfinite(answer[0]))
    assert abs(answer[0][2] + answer[0][3] - 2.0) < 0.5  # E|x|^2 ~ the ring's radius^2 = 2
    assert flags[1] == 0 and np.array_equal(answer[1], mean[1])


def test_routes_are_checked_by_dimension():
    assert ExactMoments(MultivariatePoissonLogNormal(3)).route == "gauss_hermite"
    assert ExactMoments(PoissonLogNormal()).route == "quadrature"
    with pytest.raises(ValueError, match="robust quadrature needs 1-D x"):
        ExactMoments(MultivariatePoissonLogNormal(2), "quadrature")
    with pytest.raises(ValueError, match=r"d <= 3.*SamplingMoments"):
        ExactMoments(MultivariatePoissonLogNormal(4), "gauss_hermite")
    with pytest.raises(ValueError, match="no closed form"):
        ExactMoments(MultivariatePoissonLogNormal(2), "closed_form")


def test_a_row_retried_twice_is_judged_by_its_own_differences():
    """A scRT cell (counts 50, 8, 0 beside a library of e^8.3) whose rule converges slowly:
    12/24 nodes miss tol, 24/48 by a little, 48/96 meet it once extrapolated from the two
    raw differences. Extrapolating from the first retry's extrapolated error instead (the
    fault this guards) flagged the cell and stopped CAVI on the first 200 cells."""
    family = MultivariatePoissonLogNormal(3)
    eta = np.array([[4.9381528060370101e+01, 7.1032054954702231e+00, -1.0018895898719646e+00,
                     -1.0818023996419955e-01, 1.4332764342698345e-01, -1.1923469563416188e-01,
                     2.6203293674828581e-02, -1.7248032400330761e-04, -5.3630732129812606e-02,
                     -4.1239999999999982e+03, -4.1239999999999982e+03,
                     -4.1239999999999982e+03]])
    with jax.enable_x64(True):
        out = jax.jit(lambda e: ExactMoments(family).evaluate(e, None, jax.random.key(0)))(
            jnp.asarray(eta))
        finest, _ = tensor_laplace_moments_at(family, jnp.asarray(eta[0]), 96)
    assert int(out.flags[0]) == 0
    np.testing.assert_allclose(out.mean[0], finest, rtol=1e-5, atol=1e-5)
