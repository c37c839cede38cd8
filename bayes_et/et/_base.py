"""What every ET network shares: the interface, standardisation, and parameter options."""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from bayes_et.params import (
    BayesianLinear,
    GaussianParameter,
    LaplacianParameter,
    sample_all_parameters,
)
from bayes_et.settings import boolean, choice, fail, integer, known_keys, number

PARAM_TYPES = {"gaussian": GaussianParameter, "laplacian": LaplacianParameter}
ACTIVATIONS = {"tanh": jax.nn.tanh, "gelu": jax.nn.gelu, "silu": jax.nn.silu,
               "softplus": jax.nn.softplus}
PARAM_DEFAULTS = {"bayesian": True, "param_type": "gaussian", "init_stdv": 1e-3}
MAX_WEIGHTS = 2 * 10**8  # a network larger than this is refused before it is built


class Standardizer(eqx.Module):
    """Affine maps z = (eta - eta_mean) / eta_scale and mu = mu_mean + mu_scale * y.
    Plain arrays (not parameters): no training stage ever moves them."""

    eta_mean: Array
    eta_scale: Array
    mu_mean: Array
    mu_scale: Array

    @classmethod
    def identity(cls, dim: int) -> Standardizer:
        """No scaling: zero means and unit scales of length `dim`."""
        zeros, ones = jnp.zeros(dim), jnp.ones(dim)
        return cls(zeros, ones, zeros, ones)

    @classmethod
    def fit(cls, eta, mu) -> Standardizer:
        """Means and standard deviations (floored) of data eta (n, d) and mu (n, d)."""
        eta, mu = np.asarray(eta, np.float64), np.asarray(mu, np.float64)
        floor = lambda s: np.where(s > 1e-12, s, 1.0)
        return cls(*(jnp.asarray(a, jnp.float32) for a in (
            eta.mean(0), floor(eta.std(0)), mu.mean(0), floor(mu.std(0)))))


class AbstractET(eqx.Module):
    """An ET network: ``model(eta, *, key=None, sample=False) -> mu_T`` for one eta of
    shape (eta_dim,); vmap for batches. ``sample=True`` evaluates one weight draw."""

    eta_dim: eqx.AbstractVar[int]
    scaler: eqx.AbstractVar[Standardizer]
    has_log_partition: ClassVar[bool] = False
    """Whether `log_partition(eta)` gives the network's own A (mu is its gradient)."""
    has_exact_inverse: ClassVar[bool] = False
    """Whether `inverse(mu)` gives eta exactly (else Newton in bayes_et.et.eta_from_mu)."""
    forward_mode: ClassVar[bool] = True
    """Whether the map has forward-mode derivatives (an ODE network's has not)."""

    def _forward(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        """mu_T at eta using the parameter means (a sampled model holds its draw there)."""
        raise NotImplementedError

    def draw(self, key: PRNGKeyArray | None, sample: bool) -> AbstractET:
        """The model itself, or one weight draw of it."""
        if not sample:
            return self
        if key is None:
            raise ValueError(f"{type(self).__name__}: sample=True needs key=...")
        return sample_all_parameters(self, key)

    def _check(self, eta) -> Array:
        eta = jnp.asarray(eta)
        if eta.shape != (self.eta_dim,):
            raise ValueError(
                f"{type(self).__name__} takes one eta of shape ({self.eta_dim},); got "
                f"{eta.shape} (use jax.vmap for a batch)"
            )
        return eta

    def __call__(self, eta, *, key: PRNGKeyArray | None = None, sample: bool = False):
        return self.draw(key, sample)._forward(self._check(eta))

    def fisher(self, eta, *, key: PRNGKeyArray | None = None, sample: bool = False):
        """d mu_T / d eta (d, d): the model's Fisher information (reverse mode where the
        map has no forward one)."""
        jacobian = jax.jacfwd if self.forward_mode else jax.jacrev
        return jacobian(self.draw(key, sample)._forward)(self._check(eta))

    def standardised(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        """One eta in the network's own standardised input coordinates."""
        return (eta - self.scaler.eta_mean) / self.scaler.eta_scale

    def centre(self) -> Float[Array, " d"]:
        """The eta at the centre of the training data (where a Newton inverse starts)."""
        return self.scaler.eta_mean

    def standardize(self, eta, mu) -> AbstractET:
        """A copy whose input/output scaling is fitted to data eta (n, d), mu (n, d)."""
        return eqx.tree_at(lambda m: m.scaler, self, Standardizer.fit(eta, mu))


def check_config(name: str, config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Defaults completed; unknown keys and bad options raise the settings' one error form
    (keys named `network.KEY`; `name` is the architecture, for the allowed keys)."""
    known_keys("network", config, set(defaults))
    cfg = {**defaults, **config}
    checks = {"param_type": choice(*PARAM_TYPES), "activation": choice(*ACTIVATIONS),
              "init_stdv": number(0.0, 10.0, low_open=True), "bayesian": boolean,
              "adaptive": boolean, "strong_convexity": number(0.0, 1e3),
              "epsilon": number(0.0, 1.0, low_open=True),
              "max_log_scale": number(0.0, 20.0, low_open=True),
              "rtol": number(0.0, 1.0, low_open=True), "atol": number(0.0, 1.0, low_open=True)}
    checks.update({k: integer(1, 4096) for k in ("width", "depth", "num_layers", "num_steps")})
    for key, check in checks.items():
        if key in cfg:
            check(f"network.{key}", cfg[key])
    size = cfg.get("width", 1) ** 2 * cfg.get("depth", 1) * cfg.get("num_layers", 1)
    if size > MAX_WEIGHTS:
        fail("network", {k: cfg[k] for k in ("width", "depth", "num_layers") if k in cfg},
             f"about width^2 x depth x num_layers <= {MAX_WEIGHTS:.0e} weights (this asks "
             f"{size:.1e})")
    return cfg


def dense(in_size: int, out_size: int, key, cfg: dict[str, Any], scale: float = 1.0,
          use_bias: bool = True):
    """A BayesianLinear with the config's parameter options, weights scaled by `scale`."""
    layer = BayesianLinear(in_size, out_size, key=key, bayesian=cfg["bayesian"],
                           param_type=PARAM_TYPES[cfg["param_type"]], init_stdv=cfg["init_stdv"],
                           use_bias=use_bias)
    return eqx.tree_at(lambda m: m.weight.mean, layer, layer.weight.mean * scale)


def apply(layer: BayesianLinear, x):
    """The layer at its parameter means (draws live there after sample_all_parameters)."""
    return layer(x, sample=False)
