"""The multivariate Poisson log-normal model (Wishart precision, tensor Gauss-Hermite plate):
its terms, written with Model.product, against the conditionals derived by hand."""

import numpy as np
import pytest

from bayes_et.cavi import Model, examples, load_cavi_config, model_from_config, run_cavi
from bayes_et.cavi._model import bilinear_form, trace_form
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


def assert_conditionals(y, offset, result, prior_sd, nu0, scale0):
    """q(z_i) ~ exp((y_i + E[L] E[mu]) . z - tr(E[L] z z^T)/2 - e^o_i . e^z),
    q(mu) = N with precision S0 + N E[L] and eta E[L] sum E[z_i] (prior mean 0),
    q(L) = Wishart(nu0 + N, (V0^-1 + sum E[(z_i - mu)(z_i - mu)^T])^-1)."""
    n, p = y.shape
    assert result.converged and not any(result.flags.values())
    k = p * (p + 1) // 2
    mean = result.mean_stats
    e_lam = square(mean["Lambda"][1:], p)
    e_mu, e_mumu = mean["mu"][:p], square(mean["mu"][p:], p)
    e_z, e_zz = mean["z"][:, :p], square(mean["z"][:, p:p + k], p)
    o = np.repeat(offset[:, None], p, 1)
    np.testing.assert_allclose(result.eta["z"][:, :p], y + e_mu @ e_lam, rtol=1e-8)
    np.testing.assert_allclose(result.eta["z"][:, p:p + k],
                               np.broadcast_to(tril(e_lam, p), (n, k)), rtol=1e-8)
    np.testing.assert_allclose(result.eta["z"][:, p + k:], -np.exp(o), rtol=1e-12)
    s0 = np.eye(p) / prior_sd**2
    np.testing.assert_allclose(result.eta["mu"][:p], e_lam @ e_z.sum(0), rtol=1e-8)
    np.testing.assert_allclose(result.eta["mu"][p:], tril(s0 + n * e_lam, p), rtol=1e-8)
    spread = (e_zz.sum(0) - np.outer(e_z.sum(0), e_mu) - np.outer(e_mu, e_z.sum(0))
              + n * e_mumu)
    np.testing.assert_allclose(result.eta["Lambda"][0], (nu0 - p - 1) / 2 + n / 2)
    np.testing.assert_allclose(result.eta["Lambda"][1:],
                               tril(np.linalg.inv(scale0) + spread, p), rtol=1e-8)


def test_the_fixed_point_satisfies_the_conditionals_derived_by_hand(solved):
    y, offset, result = solved
    assert_conditionals(y, offset, result, 3.0, 4.0, 0.5 * np.eye(2))


def test_the_shipped_real_counts_load_as_the_model_takes_them():
    """scRT: 2000 cells x 3 genes of non-negative integer counts, offsets the log library
    size (at least the three genes' total), three cell types; `data: {dataset: scrt, rows:
    K}` gives the model builder its first K rows."""
    data = examples.scrt_data()
    counts, offsets = data["counts"], data["offsets"]
    assert counts.shape == (2000, 3) and np.all(counts >= 0) and np.all(counts % 1 == 0)
    assert np.all(np.exp(offsets) >= counts.sum(1)) and np.all(np.isfinite(offsets))
    assert set(data["cell_type"]) == {"T_cells_CD4+", "T_cells_CD8+", "Macrophages"}
    config = {"example": "multivariate_poisson_lognormal", "arguments": {},
              "data": {"dataset": "scrt", "rows": 5}}
    model = load_cavi_config(config).model
    np.testing.assert_allclose(model.eta0[2][:, :3], counts[:5])
    np.testing.assert_allclose(model.eta0[2][:, -3:], -np.exp(offsets[:5, None]) * np.ones(3))


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


def test_the_forms_are_the_trace_and_the_bilinear_form_of_lower_triangles():
    """On random symmetric 3 x 3 matrices and vectors: tr(A B) and a^T M b, by the forms."""
    rng = np.random.default_rng(1)
    a, b, m = (x + x.T for x in rng.normal(size=(3, 3, 3)))
    u, v = rng.normal(size=(2, 3))
    rows, cols = np.tril_indices(3)
    low = lambda x: x[rows, cols]
    assert np.isclose(low(a) @ trace_form(3) @ low(b), np.trace(a @ b), rtol=1e-12)
    assert np.isclose(np.einsum("i,itj,t,j->", u, bilinear_form(3), low(m), v), u @ m @ v,
                      rtol=1e-12)


def test_the_yaml_model_with_products_equals_the_python_builder():
    """The model written as a config (factors and three `products` with forms) gives the
    builder's CAVI update of every factor at random means (the updates are multilinear)."""
    rng = np.random.default_rng(2)
    y, offsets = rng.poisson(3.0, (5, 3)).astype(float), rng.normal(0.0, 0.3, 5)
    built = examples.multivariate_poisson_lognormal(y, offsets, nu0=5.0)
    families = {"mu": "MultivariateNormal", "Lambda": "Wishart",
                "z": "MultivariatePoissonLogNormal"}
    spec = {"factors": {name: {"family": {"name": families[name], "args": {"d": 3}},
                               "eta0": f"eta0_{name}"}
                        for name in built.names},
            "products": [
                {"coef": -0.5, "blocks": ["Lambda.x", "z.xxT"], "form": "trace"},
                {"coef": -2.5, "blocks": ["Lambda.x", "mu.xxT"], "form": "trace"},
                {"coef": 1.0, "blocks": ["mu.x", "Lambda.x", "z.x"], "form": "bilinear"}]}
    arrays = {f"eta0_{name}": np.asarray(e if size else e[0]) for name, e, size in zip(
        built.names, built.eta0, built.sizes, strict=True)}  # a single factor's eta0 is (d,)
    written = model_from_config(spec, arrays)
    means = tuple(rng.normal(size=np.shape(e)) for e in built.eta0)
    for i in range(len(built.names)):
        np.testing.assert_allclose(written.target(i, means), built.target(i, means),
                                   rtol=1e-12, atol=1e-12)
    per_row = {**spec, "products": [{**spec["products"][0], "coef": "half"},
                                    *spec["products"][1:]]}  # one coefficient per member
    rowwise = model_from_config(per_row, {**arrays, "half": np.full(5, -0.5)})
    np.testing.assert_allclose(rowwise.target(1, means), built.target(1, means), rtol=1e-12)
    bad = {**spec, "products": [{"coef": 1.0, "blocks": ["mu.x", "Lambda.x"], "form": "trace"}]}
    with pytest.raises(ValueError, match=r"model.products\[0\]': product: form 'trace' of "
                       r"blocks of sizes \(3, 6\)"):
        model_from_config(bad, arrays)
    bad["products"][0]["form"] = "outer"
    with pytest.raises(ValueError, match="form 'outer'; allowed: \\['bilinear', 'trace'\\]"):
        model_from_config(bad, arrays)


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
