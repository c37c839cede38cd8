import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _common import scaled_error
from scipy import integrate

from bayes_et.expfam import (
    Beta,
    ExponentialFamily,
    Gamma,
    Interval,
    MultivariateNormal,
    Positive,
    Quartic,
    Real,
    exact_moments,
    quadrature_moments,
)


class CauchyTilted(ExponentialFamily):
    """A family not in the library: T = [x, log x, log(1 + x^2)] on x > 0."""

    stat_shapes = {"x": (), "log_x": (), "log1p_x2": ()}
    support = Positive()

    def _compute_stats(self, x):
        return {"x": x, "log_x": jnp.log(x), "log1p_x2": jnp.log1p(x**2)}

    def eta_constraints(self, eta):
        return {"eta['x'] < 0": eta["x"] < 0, "eta['log_x'] > -1": eta["log_x"] > -1}


def test_user_family_works_with_exact_routes():
    family = CauchyTilted()
    assert not family.has_closed_form and family.eta_dim == 3
    eta = np.array([[-1.0, 0.5, -0.3], [-0.2, -0.5, 1.0]])
    mu, cov = exact_moments(family, eta)
    mu_q, cov_q = quadrature_moments(family, eta)
    np.testing.assert_array_equal(mu, mu_q)
    for e, m in zip(eta, np.asarray(mu), strict=True):  # independent check: scipy quad
        dens = lambda x, e=e: np.exp(e @ [x, np.log(x), np.log1p(x * x)])
        z = integrate.quad(dens, 0, np.inf, epsrel=1e-12, limit=200)[0]
        moment = lambda f, p=dens: integrate.quad(
            lambda x: f(x) * p(x), 0, np.inf, epsrel=1e-12, limit=200
        )[0]
        m_ref = [moment(f) / z for f in (lambda x: x, np.log, lambda x: np.log1p(x * x))]
        np.testing.assert_allclose(m, m_ref, rtol=1e-7)
    assert np.all(np.linalg.eigvalsh(cov)[:, 0] > 0)
    with pytest.raises(NotImplementedError, match="quadrature_moments"):
        family.mean_stats(eta)


def test_invalid_eta_names_family_statistic_and_constraint():
    with pytest.raises(ValueError, match=r"Gamma\(\).*eta\['x'\] < 0 is violated.*index \(1,\)"):
        exact_moments(Gamma(), [[0.5, -1.0], [0.5, 1.0]])
    with pytest.raises(ValueError, match=r"Beta\(\).*eta\['log_x'\] > -1"):
        quadrature_moments(Beta(), [-1.5, 0.0])
    with pytest.raises(ValueError, match=r"Quartic\(\).*eta\['x4'\] < 0"):
        quadrature_moments(Quartic(), [0.0, 0.0, 0.0, 0.1])
    with pytest.raises(ValueError, match="positive definite"):
        MultivariateNormal(2).mean_stats([0.0, 0.0, 1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="non-finite"):
        Gamma().mean_stats([np.nan, -1.0])


def test_invalid_eta_under_jit_is_nan():
    family = Gamma()
    out = jax.jit(family.mean_stats)(jnp.array([[0.5, -1.0], [0.5, 1.0]]))
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))
    assert list(np.asarray(family.is_valid_eta(jnp.array([[0.5, -1.0], [0.5, 1.0]])))) == [
        True, False,
    ]


def test_wrong_shapes_say_expected_and_received():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\).*got \(3,\)"):
        Gamma().mean_stats(jnp.ones(3))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\).*got \(4, 2\)"):
        MultivariateNormal(3).compute_stats(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="one-dimensional x"):
        quadrature_moments(MultivariateNormal(2), jnp.array([0.0, 0, -1, 0, -1]))
    with pytest.raises(ValueError, match="statistic 'x' expected shape"):
        Gamma().flatten_stats_or_eta({"log_x": jnp.ones(3), "x": jnp.ones(2)})


def test_missing_closed_form_names_the_numerical_route():
    with pytest.raises(NotImplementedError, match="quadrature_moments.*mcmc_moments"):
        Quartic().log_partition(jnp.array([0.0, 0.0, 0.0, -1.0]))

    class TwoD(ExponentialFamily):
        x_shape = (2,)
        stat_shapes = {"x": (2,)}
        support = Real()

        def _compute_stats(self, x):
            return {"x": x}

    with pytest.raises(ValueError, match="mcmc_moments"):
        exact_moments(TwoD(), jnp.zeros(2))


@pytest.mark.parametrize("support", [Real(), Positive(), Interval(-2.0, 3.0)], ids=repr)
def test_supports_are_bijections_with_correct_jacobians(support):
    u = jnp.linspace(-5.0, 5.0, 11)
    x = support.forward(u)
    assert np.all(np.asarray(support.contains(x)))
    np.testing.assert_allclose(support.inverse(x), u, rtol=1e-9, atol=1e-9)
    slope = jax.vmap(jax.grad(support.forward))(u)
    np.testing.assert_allclose(support.log_det_jacobian(u), np.log(np.abs(slope)), rtol=1e-10)


def test_interval_validates_its_bounds():
    with pytest.raises(ValueError, match="lo < hi"):
        Interval(1.0, 1.0)


def test_scaled_error_helper_can_fail():
    assert scaled_error(np.ones(1), np.eye(1), np.ones(1) * 1.1, np.eye(1)) > 1e-2


def test_circle_embeds_angles_in_the_plane():
    from bayes_et.expfam import Circle

    circle = Circle()
    x = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(circle.forward(circle.inverse(x)), x, atol=1e-12)
    assert circle.u_shape(()) == (2,) and circle.u_shape((3,)) == (3, 2)
    # The radial weight integrates to 1 along every ray: the angle marginal is untouched.
    r = np.linspace(0, 40, 400001)
    ray = r * np.exp(np.asarray(circle.log_det_jacobian(jnp.stack([r, 0 * r], -1))))
    np.testing.assert_allclose(np.trapezoid(ray, r), 1.0, rtol=1e-6)
