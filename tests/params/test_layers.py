import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayes_et.params as bp


def test_linear_shapes_mean_and_errors():
    layer = bp.BayesianLinear(3, 2, key=jax.random.key(0))
    x = jnp.ones((5, 3))
    mean = layer(x, sample=False)
    np.testing.assert_allclose(mean, x @ layer.weight.mean.T + layer.bias.mean, rtol=1e-6)
    assert layer(x, key=jax.random.key(1)).shape == (5, 2)
    with pytest.raises(ValueError, match="needs key"):
        layer(x)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\); got \(5, 4\)"):
        layer(jnp.ones((5, 4)), sample=False)
    with pytest.raises(ValueError, match="in_features"):
        bp.BayesianLinear(0, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="local_reparam"):
        bp.BayesianLinear(3, 2, key=jax.random.key(0), param_type=bp.LaplacianParameter,
                          local_reparam=True)


def test_local_reparam_moments_and_per_example_noise():
    layer = bp.BayesianLinear(3, 2, key=jax.random.key(0), init_stdv=0.3, bayesian_bias=False,
                              local_reparam=True)
    x = jnp.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]])
    n = 20_000
    out = np.asarray(jax.vmap(lambda k: layer(x, key=k))(jax.random.split(jax.random.key(1), n)))
    mean = np.asarray(x @ layer.weight.mean.T + layer.bias.mean)
    var = np.asarray(x**2 @ (layer.weight.stdv**2).T)
    assert np.all(np.abs(out.mean(0) - mean) < 4 * np.sqrt(var / n))
    assert np.all(np.abs(out.var(0) - var) < 4 * np.sqrt(2 * var**2 / n))
    # Identical rows get independent noise: their correlation is ~0 (shared draw would give 1).
    corr = np.corrcoef(out[:, 0, 0], out[:, 1, 0])[0, 1]
    assert abs(corr) < 4 / np.sqrt(n)


def test_shared_draw_without_local_reparam():
    layer = bp.BayesianLinear(3, 2, key=jax.random.key(0), init_stdv=0.3)
    x = jnp.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]])
    out = layer(x, key=jax.random.key(3))
    np.testing.assert_allclose(out[0], out[1])
    assert not np.allclose(out, layer(x, sample=False))


def test_mlp_mean_is_deterministic_and_draws_differ():
    mlp = bp.BayesianMLP(2, 1, 8, 2, key=jax.random.key(0), init_stdv=0.1)
    x = jnp.ones((4, 2))
    np.testing.assert_array_equal(mlp(x, sample=False), mlp(x, sample=False))
    a, b = mlp(x, key=jax.random.key(1)), mlp(x, key=jax.random.key(2))
    assert not np.allclose(a, b)
