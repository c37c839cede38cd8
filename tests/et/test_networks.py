import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fit_map, normalised_rmse

import bayes_et.params as bp
from bayes_et.et import ARCHITECTURES, GeometricFlowET, build, eta_from_mu
from bayes_et.expfam import Gaussian

NAMES = sorted(ARCHITECTURES)
# (Adam steps, peak learning rate, config) for the overfitting check, measured to reach
# normalised RMSE <= 1e-3 on the 64 Gamma points with margin (quadratic 5.7e-4, glow 3.4e-4;
# their former budgets ended at 1.01e-3 and 1.05e-3, so a long float32 run has no margin
# to give away).
BUDGETS = {
    "mlp": (6000, 1e-2, {}),
    "glu": (6000, 3e-3, {}),
    "quadratic": (60000, 1e-3, {}),
    "convex_potential": (60000, 1e-2, {}),
    "glow": (80000, 3e-3, {}),
    "geometric_flow": (50000, 1e-2, {"num_steps": 4, "width": 32}),
}

@pytest.mark.parametrize("name", NAMES)
def test_interface_batching_jit_and_sampling(name, gamma_points):
    eta, mu = gamma_points
    model = build(name, 2, {}, jax.random.key(0)).standardize(eta, mu)
    batch = jax.vmap(model)(eta[:5])
    assert batch.shape == (5, 2) and np.all(np.isfinite(batch))
    np.testing.assert_array_equal(model(eta[0]), model(eta[0]))  # sample=False: deterministic
    a = model(eta[0], key=jax.random.key(1), sample=True)
    b = model(eta[0], key=jax.random.key(2), sample=True)
    assert not np.allclose(a, b)
    traces = []

    @eqx.filter_jit
    def predict(m, e):
        traces.append(1)
        return jax.vmap(m)(e)

    for i in range(3):
        predict(model, eta[i : i + 4])
    assert len(traces) == 1
    assert model.fisher(eta[0]).shape == (2, 2)
    with pytest.raises(ValueError, match="needs key"):
        model(eta[0], sample=True)
    with pytest.raises(ValueError, match=r"one eta of shape \(2,\); got \(3, 2\)"):
        model(eta[:3])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_overfits_the_gamma_moment_map(name, gamma_points):
    eta, mu = gamma_points
    steps, lr, config = BUDGETS[name]
    model = build(name, 2, config, jax.random.key(0)).standardize(eta, mu)
    before = normalised_rmse(model, eta, mu)
    fitted = fit_map(model, eta, mu, steps, lr)
    error = normalised_rmse(fitted, eta, mu)
    print(f"{name}: normalised RMSE {before} -> {error}")
    assert np.all(error <= 1e-3), error
    # MAP only: no width moved, no buffer moved
    np.testing.assert_array_equal(bp.flatten_stdvs(fitted), bp.flatten_stdvs(model))
    np.testing.assert_array_equal(fitted.scaler.eta_mean, model.scaler.eta_mean)


def test_convex_potential_fisher_symmetric_psd_for_weight_draws(gamma_points):
    eta, mu = gamma_points
    model = build("convex_potential", 2, {"init_stdv": 0.3}, jax.random.key(0))
    model = model.standardize(eta, mu)
    grid = jnp.asarray(np.random.default_rng(0).uniform([-0.5, -5], [5, -0.2], (100, 2)),
                       jnp.float32)
    keys = jax.random.split(jax.random.key(3), 20)
    fishers = jax.vmap(lambda k: jax.vmap(lambda e: model.fisher(e, key=k, sample=True))(grid))(
        keys)
    fishers = np.asarray(fishers, np.float64)
    np.testing.assert_allclose(fishers, np.swapaxes(fishers, -1, -2), rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(fishers).min() >= -1e-6 * np.abs(fishers).max()
    draws = np.asarray(jax.vmap(lambda k: model(grid[0], key=k, sample=True))(keys))
    assert np.std(draws, 0).min() > 0  # the draws really differ


class GaussianFisherField(eqx.Module):
    """The exact Gaussian Fisher as the flow's vector field."""

    def __call__(self, eta_t, mu_t, t, scaler):
        return Gaussian()._fisher(eta_t)


def test_geometric_flow_with_exact_field_reproduces_closed_form():
    with jax.enable_x64(True):
        family = Gaussian()
        eta0 = jnp.array([0.5, -1.0])
        config = {"adaptive": True, "rtol": 1e-10, "atol": 1e-12, "solver": "dopri5"}
        model = build("geometric_flow", 2, config, jax.random.key(0),
                      field=GaussianFisherField(), eta0=eta0, mu0=family._mean_stats(eta0))
        targets = jnp.array([[2.0, -0.3], [-3.0, -4.0], [0.0, -0.15], [4.0, -2.5]])
        pred = jax.vmap(model)(targets)
        exact = family.mean_stats(targets)
        np.testing.assert_allclose(pred, exact, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(model.fisher(targets[0]), family.fisher(targets[0]), rtol=1e-5)


def test_geometric_flow_learned_fisher_is_psd_for_weight_draws(gamma_points):
    eta, mu = gamma_points
    model = build("geometric_flow", 2, {"init_stdv": 0.05}, jax.random.key(0))
    model = model.standardize(eta, mu)
    assert isinstance(model, GeometricFlowET)
    keys = jax.random.split(jax.random.key(4), 10)
    fishers = np.asarray(jax.vmap(lambda k: jax.vmap(
        lambda e: model.fisher(e, key=k, sample=True))(eta[:20]))(keys), np.float64)
    np.testing.assert_allclose(fishers, np.swapaxes(fishers, -1, -2), rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(fishers).min() > 0


def test_glow_inverse_round_trip(gamma_points):
    eta, mu = gamma_points
    model = build("glow", 2, {"init_stdv": 0.05}, jax.random.key(0)).standardize(eta, mu)
    for key in (None, jax.random.key(5)):
        kw = {"key": key, "sample": key is not None}
        pred = jax.vmap(lambda e, kw=kw: model(e, **kw))(eta)
        back = jax.vmap(lambda m, kw=kw: model.inverse(m, **kw))(pred)
        scale = np.asarray(model.scaler.eta_scale)
        assert np.max(np.abs(np.asarray(back - eta)) / scale) <= 1e-5


def test_eta_from_mu_on_convex_potential(gamma_points):
    eta, mu = gamma_points
    model = fit_map(build("convex_potential", 2, {}, jax.random.key(0)).standardize(eta, mu),
                    eta, mu, 2000, 1e-2)
    pred = jax.vmap(model)(eta[:16])
    back = jax.vmap(lambda m: eta_from_mu(model, m))(pred)
    scale = np.asarray(model.scaler.eta_scale)
    assert np.max(np.abs(np.asarray(back - eta[:16])) / scale) <= 1e-4


def test_bad_configs():
    with pytest.raises(ValueError, match="unknown architecture 'transformer'"):
        build("transformer", 2, {}, jax.random.key(0))
    with pytest.raises(ValueError, match=r"config key 'network.colour' is unknown"):
        build("mlp", 2, {"colour": 1}, jax.random.key(0))
    with pytest.raises(ValueError, match="config key 'network.width': got 0"):
        build("mlp", 2, {"width": 0}, jax.random.key(0))
    with pytest.raises(ValueError, match="glow needs eta_dim >= 2"):
        build("glow", 1, {}, jax.random.key(0))
    with pytest.raises(ValueError, match="solver='rk99'"):
        build("geometric_flow", 2, {"solver": "rk99"}, jax.random.key(0))
