import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def sample_valid_eta(family, n, seed=0):
    """n eta drawn uniformly from the family's default box, rejecting invalid ones."""
    lo, hi = family.eta_bounds()
    rng = np.random.default_rng(seed)
    out = np.empty((0, family.eta_dim))
    while len(out) < n:
        draw = rng.uniform(lo, hi, size=(4 * n, family.eta_dim))
        out = np.concatenate([out, draw[np.asarray(family.is_valid_eta(jnp.asarray(draw)))]])
    return out[:n]


def scaled_error(mu, cov, mu_ref, cov_ref):
    """Largest error relative to |reference| + its standard-deviation scale."""
    sd = np.sqrt(np.diagonal(cov_ref, axis1=-2, axis2=-1))
    e_mu = np.abs(mu - mu_ref) / (np.abs(mu_ref) + sd)
    e_cov = np.abs(cov - cov_ref) / (np.abs(cov_ref) + sd[..., :, None] * sd[..., None, :])
    return max(e_mu.max(), e_cov.max())
