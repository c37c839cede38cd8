"""Conjugate Bayesian linear regression: MAP-then-VI against the exact posterior.

Known noise, Normal prior, 5 correlated inputs of unequal scales. The exact posterior is
N(m, Λ⁻¹); the mean-field optimum has means m and widths 1/sqrt(Λ_ii). We count the steps
each optimiser needs to reach (and hold for `HOLD` steps) 2% on the means and 5% on the
widths. Run as a script to print and save the step counts.
"""

from __future__ import annotations

import json
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import save

import bayes_et.params as bp

HOLD = 20
MEAN_TOL, WIDTH_TOL = 0.02, 0.05
ADAM_LRS = (0.03, 0.1, 0.3)
NATURAL_LRS = (0.1, 0.3, 0.5)


def make_problem(seed: int = 0, n: int = 200, noise: float = 0.5, prior_scale: float = 2.0):
    rng = np.random.default_rng(seed)
    d = 5
    corr = 0.6 * np.ones((d, d)) + 0.4 * np.eye(d)
    scales = np.array([1.0, 3.0, 0.3, 2.0, 0.5])
    x = rng.standard_normal((n, d)) @ np.linalg.cholesky(corr).T * scales
    y = x @ np.array([1.0, -2.0, 0.5, 1.5, -1.0]) + noise * rng.standard_normal(n)
    precision = x.T @ x / noise**2 + np.eye(d) / prior_scale**2
    post_mean = np.linalg.solve(precision, x.T @ y / noise**2)
    return {
        "x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32),
        "noise": noise, "prior": bp.NormalPrior(prior_scale),
        "post_mean": post_mean, "opt_width": 1.0 / np.sqrt(np.diag(precision)),
    }


def _neg_log_lik(prob, w):
    return 0.5 * jnp.sum((prob["y"] - prob["x"] @ w) ** 2) / prob["noise"] ** 2


def _map_loss(dynamic, static, key, prob):
    w = bp.unfreeze_all(dynamic, static)["w"].mean
    return _neg_log_lik(prob, w) - prob["prior"].log_prob(w)


def _vi_loss(dynamic, static, key, prob, num_draws=4096):
    model = bp.unfreeze_all(dynamic, static)
    draws = jax.vmap(model["w"].sample)(jax.random.split(key, num_draws))
    expected = jnp.mean(jax.vmap(lambda w: _neg_log_lik(prob, w))(draws))
    return expected + bp.kl_divergence(model, prob["prior"])


def fit_stage(prob, model, stage: str, optimiser, key, max_steps: int = 600):
    """Train one stage ('map': means; 'vi': widths); return (model, steps to tolerance or None)."""
    freeze, loss, reached = {
        "map": (bp.freeze_stdvs, _map_loss, lambda m: means_ok(prob, m)),
        "vi": (bp.freeze_means, _vi_loss, lambda m: widths_ok(prob, m)),
    }[stage]
    dynamic, static = freeze(model)
    state = optimiser.init(dynamic)

    @eqx.filter_jit
    def step(dynamic, state, key):
        grads = eqx.filter_grad(loss)(dynamic, static, key, prob)
        updates, state = optimiser.update(grads, state, bp.unfreeze_all(dynamic, static))
        return eqx.apply_updates(dynamic, updates), state

    first = None
    for i in range(max_steps):
        dynamic, state = step(dynamic, state, jax.random.fold_in(key, i))
        if reached(bp.unfreeze_all(dynamic, static)):
            first = i + 1 if first is None else first
            if i + 1 - first >= HOLD:
                break
        else:
            first = None
    return bp.unfreeze_all(dynamic, static), first


def mean_errors(prob, model):
    return np.abs(np.asarray(model["w"].mean) - prob["post_mean"]) / np.abs(prob["post_mean"])


def width_errors(prob, model):
    return np.abs(np.asarray(model["w"].stdv) / prob["opt_width"] - 1)


def means_ok(prob, model):
    return bool(np.all(mean_errors(prob, model) <= MEAN_TOL))


def widths_ok(prob, model):
    return bool(np.all(width_errors(prob, model) <= WIDTH_TOL))


def best_steps(prob, start, make_optimiser, lrs, key):
    """Fewest VI steps over the learning-rate grid: (steps, lr, fitted model)."""
    runs = [(*fit_stage(prob, start, "vi", make_optimiser(lr), key)[::-1], lr) for lr in lrs]
    runs = [(steps, lr, model) for steps, model, lr in runs if steps is not None]
    return min(runs, key=lambda r: r[0]) if runs else (None, None, None)


def measure(seed: int = 0) -> dict:
    prob = make_problem(seed)
    key = jax.random.key(seed)
    start = {"w": bp.make_parameter(jnp.zeros(5))}
    fitted, map_steps = fit_stage(prob, start, "map", optax.adam(0.1), key)
    adam = best_steps(prob, fitted, optax.adam, ADAM_LRS, key)
    natural = best_steps(
        prob, fitted, lambda lr: optax.chain(bp.natural_gradient(), optax.sgd(lr)),
        NATURAL_LRS, key,
    )
    return {
        "map_steps_adam": map_steps,
        "map_max_rel_error_mean": float(mean_errors(prob, fitted).max()),
        "vi_steps_adam": adam[0], "adam_lr": adam[1],
        "vi_steps_natural": natural[0], "natural_lr": natural[1],
        "vi_max_rel_error_width_adam": float(width_errors(prob, adam[2]).max()),
        "vi_max_rel_error_width_natural": float(width_errors(prob, natural[2]).max()),
        "tolerances": {"mean": MEAN_TOL, "width": WIDTH_TOL, "hold_steps": HOLD},
    }


if __name__ == "__main__":
    t0 = time.perf_counter()
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    result["speedup"] = result["vi_steps_adam"] / result["vi_steps_natural"]
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    print("saved", save("natural_gradient", result))
