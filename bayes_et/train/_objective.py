"""The training objective: Gaussian likelihood of MC targets with known noise plus a learned
misfit, an optional Fisher-matching term, and KL(q || prior) per training point."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayes_et.data import Dataset
from bayes_et.params import AbstractPrior, kl_divergence

from ._model import TrainedET


class Targets(NamedTuple):
    """A dataset in the network's standardised units: eta (n, d), y (n, k), the MC noise
    covariance of y (n, k, k) and the sampled Fisher cov_TT (n, k, k)."""

    eta: jax.Array
    y: jax.Array
    noise: jax.Array
    cov: jax.Array


def mc_noise(data: Dataset) -> np.ndarray:
    """Covariance of each MC estimate mu_T: cov_TT[a, b] / sqrt(ess_a ess_b); 0 for exact data."""
    root = np.sqrt(np.asarray(data.ess, np.float64))
    return np.asarray(data.cov_TT, np.float64) / (root[:, :, None] * root[:, None, :])


def make_targets(data: Dataset, model: TrainedET, noise_floor: float) -> Targets:
    """`data` standardised by the network's scaler; `noise_floor` (target-std units) is
    added to the noise standard deviation so exact data keep a proper likelihood."""
    s = model.net.scaler
    scale = np.asarray(s.mu_scale, np.float64)
    outer = scale[:, None] * scale[None, :]
    noise = mc_noise(data) / outer + noise_floor**2 * np.eye(len(scale))
    y = (np.asarray(data.mu_T, np.float64) - np.asarray(s.mu_mean)) / scale
    # cov_TT is d mu / d eta: standardised like the model's Jacobian in fisher_mismatch.
    cov = np.asarray(data.cov_TT, np.float64) * np.asarray(s.eta_scale)[None, :] / scale[:, None]
    return Targets(*(jnp.asarray(a, jnp.float32) for a in (data.eta, y, noise, cov)))


def gaussian_nll(residual, cov):
    """-log N(residual | 0, cov) for one point: residual (k,), cov (k, k)."""
    chol = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(chol, residual, lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return 0.5 * (z @ z + logdet + residual.shape[0] * math.log(2 * math.pi))


def standardised(model: TrainedET, mu):
    s = model.net.scaler
    return (mu - s.mu_mean) / s.mu_scale


def nll_terms(model: TrainedET, batch: Targets, pred):
    """Per-point NLL of standardised targets given standardised predictions (n, k)."""
    misfit = jnp.diag(jnp.exp(model.log_misfit))
    return jax.vmap(lambda r, n: gaussian_nll(r, n + misfit))(batch.y - pred, batch.noise)


def fisher_mismatch(model: TrainedET, batch: Targets, net) -> jax.Array:
    """Mean squared Frobenius distance between the model's d mu / d eta and cov_TT, both in
    standardised units."""
    s = model.net.scaler
    jac = jax.vmap(net.fisher)(batch.eta) * s.eta_scale[None, None, :] / s.mu_scale[None, :, None]
    return jnp.mean(jnp.sum((jac - batch.cov) ** 2, axis=(1, 2)))


def objective(model: TrainedET, batch: Targets, key, *, prior: AbstractPrior, num_train: int,
              sample: bool, fisher_weight: float):
    """Loss per training point and its logged parts {nll, kl, fisher}. With `sample` the
    likelihood is evaluated on one weight draw (the ELBO's reparameterised estimate)."""
    net = model.net.draw(key, sample)
    pred = standardised(model, jax.vmap(net)(batch.eta))
    nll = jnp.mean(nll_terms(model, batch, pred))
    kl = kl_divergence(model.net, prior) / num_train
    fisher = fisher_mismatch(model, batch, net) if fisher_weight > 0 else jnp.zeros(())
    return nll + kl + fisher_weight * fisher, {"nll": nll, "kl": kl, "fisher": fisher}
