"""The multivariate Poisson log-normal model (Wishart precision, tensor Gauss-Hermite plate):
its terms, written with Model.product, against the conditionals derived by hand."""

import numpy as np
import pytest

from bayes_et.cavi import Model, examples, run_cavi
from bayes_et.expfam import Gaussian, MultivariateNormal


@pytest.fixture(scope="module")
def solved():
    rng = np.random.default_rng(0)
    n = 30
    precision = np.array([[4.0, -1.5], [-1.5, 3.0]])
    r = rng.multivariate_normal([0.5, -0.3], np.linalg.inv(precision), n)
    offset = np.log(rng.uniform(1.0, 5.0, n))
    y = rng.poisson(np.exp(offset[:, None] + r)).astype(float)
    model = examples.multivariate_poisson_lognormal(y, offset, prior_sd=3.0, nu0=4.0,
                                                    scale0=0.5 * np.eye(2))
    return y, offset, run_cavi(model, tol=1e-10, max_iter=500)


def tril(matrix, p=2):
    """The natural-parameter convention of a lower triangle: -M_ii / 2, -M_ij off it."""
    rows, cols = np.tril_indices(p)
    return -np.where(rows == cols, 0.5, 1.0) * matrix[..., rows, cols]


def square(flat, p=2):
    rows, cols = np.tril_indices(p)
    out = np.zeros(flat.shape[:-1] + (p, p))
    out[..., rows, cols] = flat
    out[..., cols, rows] = flat
    return out


def test_the_fixed_point_satisfies_the_conditionals_derived_by_hand(solved):
    """q(z_i) ~ exp((y_i + E[L](E[mu] + o_i)) . z - tr(E[L] z z^T)/2 - 1 . e^z),
    q(mu) = N with precision S0 + N E[L] and eta S0 m0 + E[L] sum(E[z_i] - o_i),
    q(L) = Wishart(nu0 + N, (V0^-1 + sum E[(z_i - o_i - mu)(z_i - o_i - mu)^T])^-1)."""
    y, offset, result = solved
    n, p = y.shape
    assert result.converged and not any(result.flags.values())
    mean = result.mean_stats
    e_lam = square(mean["Lambda"][1:])
    e_mu, e_mumu = mean["mu"][:2], square(mean["mu"][2:])
    e_z, e_zz = mean["z"][:, :2], square(mean["z"][:, 2:5])
    o = np.repeat(offset[:, None], p, 1)
    np.testing.assert_allclose(result.eta["z"][:, :2], y + (e_mu + o) @ e_lam, rtol=1e-8)
    np.testing.assert_allclose(result.eta["z"][:, 2:5], np.broadcast_to(tril(e_lam), (n, 3)),
                               rtol=1e-8)
    np.testing.assert_allclose(result.eta["z"][:, 5:], -1.0)
    s0 = np.eye(p) / 9.0
    np.testing.assert_allclose(result.eta["mu"][:2], e_lam @ (e_z - o).sum(0), rtol=1e-8)
    np.testing.assert_allclose(result.eta["mu"][2:], tril(s0 + n * e_lam), rtol=1e-8)
    spread = (e_zz.sum(0) - (e_z.T @ (o + e_mu)) - ((o + e_mu).T @ e_z) + o.T @ o
              + np.outer(o.sum(0), e_mu) + np.outer(e_mu, o.sum(0)) + n * e_mumu)
    np.testing.assert_allclose(result.eta["Lambda"][0], (4.0 - p - 1) / 2 + n / 2)
    np.testing.assert_allclose(result.eta["Lambda"][1:], tril(np.linalg.inv(0.5 * np.eye(p))
                                                              + spread), rtol=1e-8)


def test_product_adds_one_term_per_nonzero_entry_and_checks_its_shape():
    """x^T A y over two blocks equals the terms written one by one."""
    m = Model()
    a = m.factor("a", MultivariateNormal(2), [0.0, 0.0, -0.5, 0.0, -0.5])
    b = m.factor("b", Gaussian(), [0.0, -0.5])
    coef = np.array([[2.0], [0.0]])
    m.product(coef, a.block("x"), b.block("x"))
    built = m.build()
    assert len(built.terms) == 1 and built.terms[0].coordinates == (0, 0)
    with pytest.raises(ValueError, match=r"product: coef of shape \(3,\); allowed: \(2, 1\)"):
        m.product(np.ones(3), a.block("x"), b.block("x"))
    with pytest.raises(ValueError, match="unknown statistic 'y'"):
        a.block("y")


@pytest.mark.parametrize("kwargs, message", [
    ({"counts": -np.ones((3, 2))}, "counts: expected finite non-negative"),
    ({"offsets": np.zeros((3, 3))}, r"offsets: expected finite values of shape \(3,\)"),
    ({"nu0": 0.5}, "nu0: got 0.5; allowed: > p - 1"),
    ({"scale0": -np.eye(2)}, "scale0: expected a"),
])
def test_bad_input_names_the_field(kwargs, message):
    args = {"counts": np.ones((3, 2)), **kwargs}
    with pytest.raises(ValueError, match=message):
        examples.multivariate_poisson_lognormal(**args)
