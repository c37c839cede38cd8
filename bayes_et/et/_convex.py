"""Convex potential: an input-convex network A(eta) with mu = grad A and Fisher = Hess A."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._base import PARAM_DEFAULTS, AbstractET, Standardizer, apply, dense

CONVEX_DEFAULTS = {"width": 64, "depth": 3, "strong_convexity": 1e-3, **PARAM_DEFAULTS}


class ConvexPotentialET(AbstractET):
    """A(eta) = c * A_hat(z) + mu_mean . eta, z = (eta - eta_mean) / eta_scale, where

        h_1 = softplus(W_0 z + b_0),  h_{k+1} = softplus(pos(U_k) h_k + W_k z + b_k),
        A_hat = pos(u) . h_K + w . z + (strong_convexity / 2) |z|^2,

    pos = softplus applied after sampling, so every weight draw is convex. The single
    scale c (the geometric mean of mu_scale * eta_scale) scales the potential, not each
    output, so mu = grad A and Fisher = Hess A stay a gradient and symmetric PSD.
    """

    has_log_partition: ClassVar[bool] = True

    eta_dim: int = eqx.field(static=True)
    scaler: Standardizer
    inputs: tuple
    hidden: tuple
    readout: object
    linear: object
    strong_convexity: float = eqx.field(static=True)

    def __init__(self, eta_dim: int, cfg: dict, key):
        keys = jax.random.split(key, 2 * cfg["depth"] + 2)
        w = cfg["width"]
        self.eta_dim, self.scaler = eta_dim, Standardizer.identity(eta_dim)
        self.inputs = tuple(dense(eta_dim, w, k, cfg) for k in keys[: cfg["depth"]])
        # hidden-path raw weights start where softplus gives ~1/width: sums stay O(1)
        raw = float(np.log(np.expm1(1.0 / w)))
        self.hidden = tuple(self._raw(dense(w, w, k, cfg, scale=0.1), raw)
                            for k in keys[cfg["depth"] : 2 * cfg["depth"] - 1])
        self.readout = self._raw(dense(w, 1, keys[-2], cfg, scale=0.1, use_bias=False), raw)
        self.linear = dense(eta_dim, 1, keys[-1], cfg, scale=0.1, use_bias=False)
        self.strong_convexity = cfg["strong_convexity"]

    @staticmethod
    def _raw(layer, offset):
        return eqx.tree_at(lambda m: m.weight.mean, layer, layer.weight.mean + offset)

    @staticmethod
    def _positive(layer, x):
        out = jax.nn.softplus(layer.weight.mean) @ x
        return out if layer.bias is None else out + layer.bias.mean

    def _potential_hat(self, z):
        h = jax.nn.softplus(apply(self.inputs[0], z))
        for pos, lin in zip(self.hidden, self.inputs[1:], strict=True):
            h = jax.nn.softplus(self._positive(pos, h) + apply(lin, z))
        out = self._positive(self.readout, h) + apply(self.linear, z)
        return out[0] + 0.5 * self.strong_convexity * z @ z

    def _potential(self, eta):
        s = self.scaler
        c = jnp.exp(jnp.mean(jnp.log(s.mu_scale * s.eta_scale)))
        return c * self._potential_hat((eta - s.eta_mean) / s.eta_scale) + s.mu_mean @ eta

    def _forward(self, eta):
        return jax.grad(self._potential)(eta)

    def fisher(self, eta, *, key=None, sample: bool = False):
        """Hessian of A: symmetric positive semi-definite for every weight draw."""
        return jax.hessian(self.draw(key, sample)._potential)(self._check(eta))

    def log_partition(self, eta, *, key=None, sample: bool = False):
        """A(eta) - A(eta_mean): the log-partition up to a constant fixed at the anchor
        eta_mean (the centre of the training data)."""
        model = self.draw(key, sample)
        eta = self._check(eta)
        return model._potential(eta) - model._potential(model.scaler.eta_mean)
