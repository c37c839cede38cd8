import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bayes_et.params as bp
from bayes_et.data import design_eta
from bayes_et.expfam import Gamma, exact_moments


@pytest.fixture(scope="session")
def gamma_points():
    """64 points of the exact Gamma moment map (float32)."""
    eta = design_eta(Gamma(), 64, seed=0)
    mu, _ = exact_moments(Gamma(), eta)
    return jnp.asarray(eta, jnp.float32), jnp.asarray(mu, jnp.float32)


def normalised_rmse(model, eta, mu):
    """Per statistic: RMS(prediction - target) / std(target)."""
    pred = jax.vmap(model)(eta)
    return np.asarray(jnp.sqrt(jnp.mean((pred - mu) ** 2, 0)) / jnp.std(mu, 0))


def fit_map(model, eta, mu, steps, lr):
    """MAP stage only (widths frozen): Adam with warm-up and cosine decay, full batch."""
    dynamic, static = bp.freeze_stdvs(model)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, steps // 20, steps, lr * 1e-3)
    optimiser = optax.adam(schedule)
    scale = jnp.std(mu, 0)

    def loss(dynamic):
        pred = jax.vmap(bp.unfreeze_all(dynamic, static))(eta)
        return jnp.mean(((pred - mu) / scale) ** 2)

    @eqx.filter_jit
    def run(dynamic, state):
        def step(carry, _):
            dynamic, state = carry
            grads = eqx.filter_grad(loss)(dynamic)
            updates, state = optimiser.update(grads, state, dynamic)
            return (eqx.apply_updates(dynamic, updates), state), None

        return jax.lax.scan(step, (dynamic, state), None, length=steps)[0]

    dynamic, _ = run(dynamic, optimiser.init(dynamic))
    return bp.unfreeze_all(dynamic, static)
