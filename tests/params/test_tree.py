import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_et.params as bp


class Scale(eqx.Module):
    factor: bp.AbstractParameter

    def __call__(self, x, *, key=None):
        return x * self.factor.mean


class Nested(eqx.Module):
    """Parameters in a dict, a list, a tuple and an eqx.nn.Sequential, plus a buffer."""

    table: dict
    stack: list
    pair: tuple
    seq: eqx.nn.Sequential
    buffer: jax.Array

    def __init__(self, key):
        k = jax.random.split(key, 5)
        mk = lambda kk, shape: bp.make_parameter(jax.random.normal(kk, shape), init_stdv=0.1)
        lap = bp.make_parameter(jnp.ones(3), param_type=bp.LaplacianParameter, init_stdv=0.2)
        self.table = {"a": mk(k[0], (3,)), "b": lap}
        self.stack = [mk(k[1], (3,))]
        self.pair = (mk(k[2], (3,)), bp.make_parameter(jnp.full(3, 0.5), bayesian=False))
        self.seq = eqx.nn.Sequential([Scale(mk(k[3], (3,))), Scale(mk(k[4], (3,)))])
        self.buffer = jnp.arange(3.0)


def loss(dynamic, static, key):
    model = bp.sample_all_parameters(bp.unfreeze_all(dynamic, static), key)
    p = bp.get_parameters(model)
    x = sum(q.mean for q in p.values()) * model.buffer
    return jnp.sum(model.seq(x) ** 2) + jnp.sum(jnp.sin(x))


def grads_by_leaf(freeze):
    model = Nested(jax.random.key(0))
    dynamic, static = freeze(model)
    grads = eqx.filter_grad(loss)(dynamic, static, jax.random.key(1))
    return model, grads


NAMES = ["table['a']", "table['b']", "stack[0]", "pair[0]", "pair[1]", "seq.layers[0].factor",
         "seq.layers[1].factor"]


def test_names_are_pytree_paths():
    assert list(bp.get_parameters(Nested(jax.random.key(0)))) == NAMES


def test_freeze_stdvs_trains_means_only():
    model, grads = grads_by_leaf(bp.freeze_stdvs)
    for name, g in bp.get_parameters(grads).items():
        assert g.mean is not None and float(jnp.abs(g.mean).sum()) > 0, name
        if g.width_field is not None:
            assert getattr(g, g.width_field) is None, name
    assert grads.buffer is None


def test_freeze_means_trains_widths_only():
    model, grads = grads_by_leaf(bp.freeze_means)
    for name, g in bp.get_parameters(grads).items():
        assert g.mean is None, name
        if g.width_field is not None:
            assert float(jnp.abs(getattr(g, g.width_field)).sum()) > 0, name
    assert grads.buffer is None


def test_freeze_params_freezes_exactly_the_named_one():
    model = Nested(jax.random.key(0))
    dynamic, static = bp.freeze_params(model, ["stack[0]"])
    grads = bp.get_parameters(eqx.filter_grad(loss)(dynamic, static, jax.random.key(1)))
    assert grads["stack[0]"].mean is None and grads["stack[0]"].raw_stdv is None
    for name in set(NAMES) - {"stack[0]"}:
        assert float(jnp.abs(grads[name].mean).sum()) > 0, name
    with pytest.raises(ValueError, match=r"unknown parameter names \['nope'\].*table\['a'\]"):
        bp.freeze_params(model, ["nope"])


def test_unfreeze_all_restores_the_model():
    model = Nested(jax.random.key(0))
    restored = bp.unfreeze_all(*bp.freeze_means(model))
    assert eqx.tree_equal(model, restored)


def test_sample_all_parameters_vmap_and_single_trace():
    model = Nested(jax.random.key(0))
    keys = jax.random.split(jax.random.key(2), 8)
    draws = jax.vmap(lambda k: bp.flatten_means(bp.sample_all_parameters(model, k)))(keys)
    n_bayes = bp.get_parameter_count(model)["bayesian"]
    assert draws.shape == (8, bp.get_parameter_count(model)["total"])
    assert len({tuple(np.asarray(d[:n_bayes]).round(6)) for d in draws}) == 8
    traces = []

    @eqx.filter_jit
    def draw(m, k):
        traces.append(1)
        return bp.sample_all_parameters(m, k)

    for k in keys:
        draw(model, k)
    assert len(traces) == 1


def test_sample_all_parameters_draws_each_parameter_from_its_own_law():
    """One noise call per kind, split among the parameters: each parameter's draws have its
    own mean and width (Gaussian sd, Laplace scale: var 2 b^2), two parameters' draws are
    uncorrelated, a point mass stays put. Tolerances: 4 Monte-Carlo standard errors."""
    model = Nested(jax.random.key(0))
    num = 4000
    keys = jax.random.split(jax.random.key(3), num)
    draws = jax.vmap(lambda k: bp.get_parameters(bp.sample_all_parameters(model, k)))(keys)
    for name, p in bp.get_parameters(model).items():
        x = np.asarray(draws[name].mean, np.float64)
        mean, width = np.asarray(p.mean), np.asarray(p.width)
        if isinstance(p, bp.DeterministicParameter):
            assert np.array_equal(x, np.broadcast_to(mean, x.shape)), name
            continue
        sd = width * (np.sqrt(2) if isinstance(p, bp.LaplacianParameter) else 1.0)
        assert np.all(np.abs(x.mean(0) - mean) < 4 * sd / np.sqrt(num)), name
        kurtosis = 6.0 if isinstance(p, bp.LaplacianParameter) else 3.0
        var_se = np.sqrt((kurtosis - 1) / num)  # of the sample variance over the true one
        assert np.all(np.abs(x.std(0) / sd - 1) < 4 * var_se / 2), name
    first, second = (np.asarray(draws[n].mean) for n in ("table['a']", "stack[0]"))
    z = lambda a: (a - a.mean(0)) / a.std(0)
    assert np.all(np.abs((z(first).T @ z(second)) / num) < 4 / np.sqrt(num))


def test_counts_flattening_and_groups():
    model = Nested(jax.random.key(0))
    assert bp.get_parameter_count(model) == {"total": 21, "bayesian": 18, "deterministic": 3}
    widths = bp.flatten_stdvs(model)
    assert widths.shape == (21,) and np.all(np.asarray(widths[12:15]) == 0)
    np.testing.assert_allclose(widths[:3], 0.1, rtol=1e-4)
    assert bp.get_parameter_groups(model, by="kind") == {
        "gaussian": (
            "table['a']", "stack[0]", "pair[0]", "seq.layers[0].factor", "seq.layers[1].factor"
        ),
        "laplacian": ("table['b']",),
        "deterministic": ("pair[1]",),
    }
    assert bp.get_parameter_groups(model)["seq.layers[0]"] == ("seq.layers[0].factor",)


def test_entropy_and_kl_sum_over_parameters():
    model = Nested(jax.random.key(0))
    params = bp.get_parameters(model).values()
    gauss = sum(float(p.entropy()) for p in params if isinstance(p, bp.GaussianParameter))
    lap = sum(float(p.entropy()) for p in params if isinstance(p, bp.LaplacianParameter))
    np.testing.assert_allclose(bp.gaussian_entropy(model), gauss, rtol=1e-6)
    np.testing.assert_allclose(bp.laplacian_entropy(model), lap, rtol=1e-6)
    np.testing.assert_allclose(bp.entropy(model), gauss + lap, rtol=1e-6)
    prior = bp.NormalPrior(1.5)
    np.testing.assert_allclose(
        bp.kl_divergence(model, prior), sum(float(p.kl(prior)) for p in params), rtol=1e-6
    )


def test_adaptive_prior_empirical_bayes():
    model = Nested(jax.random.key(0))
    prior = bp.AdaptivePrior.for_model(model).empirical_bayes(model)
    a = bp.get_parameters(model)["table['a']"]
    expected = np.sqrt(np.mean(np.asarray(a.mean) ** 2 + np.asarray(a.stdv) ** 2))
    np.testing.assert_allclose(prior.prior_for("table['a']").scale, expected, rtol=1e-5)
    # The empirical-Bayes scale maximises the expected log prior: KL cannot drop below it.
    kl_eb = float(bp.kl_divergence(model, prior))
    for factor in (0.8, 1.25):
        scaled = bp.AdaptivePrior.for_model(model)
        shift = float(np.log(factor))
        scaled = jax.tree_util.tree_map(lambda a, b, s=shift: a + s, prior, scaled)
        assert float(bp.kl_divergence(model, scaled)) > kl_eb
    with pytest.raises(ValueError, match="no group"):
        prior.prior_for("missing")
