"""The Wishart family: closed forms against SciPy, its SPD support's Jacobian, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_et.expfam import PositiveDefinite, Wishart, exact_moments

stats, special = (pytest.importorskip(f"scipy.{m}") for m in ("stats", "special"))


def natural(d: int, nu: float, scale: np.ndarray) -> np.ndarray:
    b = -0.5 * np.linalg.inv(scale)
    rows, cols = np.tril_indices(d)
    return np.concatenate([[(nu - d - 1) / 2], np.where(rows == cols, b[rows, cols],
                                                          2 * b[rows, cols])])


@pytest.mark.parametrize("d", [1, 2, 3])
def test_closed_forms_match_scipy(d):
    """E[x] = nu V and E[log|x|] = psi_d(nu/2) + d log 2 + log|V| exactly; Cov[T] against
    200 000 SciPy draws within 5 Monte-Carlo standard errors per entry (seeded)."""
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d))
    scale, nu = a @ a.T / d + 0.5 * np.eye(d), d + 2.5
    family = Wishart(d)
    with jax.enable_x64(True):
        mu, cov = (np.asarray(v)[0] for v in exact_moments(family, natural(d, nu, scale)[None]))
        rows, cols = np.tril_indices(d)
        np.testing.assert_allclose(mu[1:], (nu * scale)[rows, cols], rtol=1e-12)
        log_det = (sum(special.digamma((nu - i) / 2) for i in range(d)) + d * np.log(2.0)
                   + np.linalg.slogdet(scale)[1])
        np.testing.assert_allclose(mu[0], log_det, rtol=1e-12)
        draws = stats.wishart(df=nu, scale=scale).rvs(200_000, random_state=1)
        t = np.asarray(family.compute_stats(jnp.asarray(draws.reshape(-1, d, d))))
    centred = t - mu
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(0) / np.sqrt(len(t))
    assert np.all(np.abs(products.mean(0) - cov) <= 5 * se), np.max(
        np.abs(products.mean(0) - cov) / se)


def test_positive_definite_support_jacobian_and_inverse():
    """log|dx/du| equals autodiff's log-determinant of tril(forward(u)); inverse(forward(u))
    = u; forward(u) is symmetric positive definite."""
    support = PositiveDefinite(3)
    u = jnp.asarray(np.random.default_rng(0).normal(size=support.u_size))
    with jax.enable_x64(True):
        u = u.astype(jnp.float64)
        tril = np.tril_indices(3)
        jac = jax.jacfwd(lambda v: support.forward(v)[tril])(u)
        np.testing.assert_allclose(support.log_det_jacobian(u), jnp.linalg.slogdet(jac)[1],
                                   rtol=1e-12)
        x = support.forward(u)
        np.testing.assert_allclose(support.inverse(x), u, atol=1e-12)
        assert bool(support.contains(x)) and not bool(support.contains(-x))


def test_bad_arguments_and_eta_name_the_rule():
    with pytest.raises(ValueError, match="Wishart: d must be an int"):
        Wishart(0)
    family = Wishart(2)
    with pytest.raises(ValueError, match=r"eta\['logdet'\] > -1"):
        family.validate_eta(np.array([-1.5, -1.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="negative definite"):
        family.validate_eta(np.array([0.5, -1.0, 3.0, -1.0]))
