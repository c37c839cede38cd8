"""Quadrature meets its stated accuracy down to shape 1e-3, or says it cannot."""

import numpy as np
import pytest

from bayes_et.expfam import Beta, Gamma, exact_moments, quadrature_moments

SHAPES = (1e-3, 1e-2, 0.5, 10.0, 1e3)


@pytest.mark.parametrize("family, eta", [
    (Beta(), [[a - 1, b - 1] for a in SHAPES for b in SHAPES]),
    (Gamma(), [[a - 1, -rate] for a in SHAPES for rate in (1e-3, 1.0, 1e3)]),
], ids=["Beta", "Gamma"])
def test_quadrature_matches_closed_forms_to_1e8_down_to_shape_1e3(family, eta):
    eta = np.asarray(eta)
    mu, cov = quadrature_moments(family, eta)
    mu_exact, cov_exact = exact_moments(family, eta)
    np.testing.assert_allclose(mu, mu_exact, rtol=1e-8, atol=0)
    var, var_exact = (np.diagonal(c, axis1=1, axis2=2) for c in (cov, cov_exact))
    np.testing.assert_allclose(var, var_exact, rtol=1e-6, atol=0)


def test_gamma_shape_1e3_mean_log_x_is_right():
    """The reported case: eta = [-0.999, -1] has E[log x] = digamma(0.001) ~ -1000.6."""
    from scipy.special import digamma

    mu, _ = quadrature_moments(Gamma(), np.array([-0.999, -1.0]))
    assert mu[0] == pytest.approx(digamma(1e-3), rel=1e-9)


def test_quadrature_refuses_mass_beyond_its_grid():
    """Shape 1e-7: an exp(1e-7 u) tail reaches far past |u| = 1e6: an error, not a number."""
    with pytest.raises(ValueError, match="mass reaches the end of the search grid"):
        quadrature_moments(Gamma(), np.array([[1.0, -1.0], [-1 + 1e-7, -1.0]]))
