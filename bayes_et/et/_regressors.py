"""Direct regressors of mu_T(eta): residual MLP, gated-linear-unit and quadratic blocks."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import ACTIVATIONS, PARAM_DEFAULTS, AbstractET, Standardizer, apply, dense

REGRESSOR_DEFAULTS = {"width": 64, "depth": 3, "activation": "silu", **PARAM_DEFAULTS}


class _Regressor(AbstractET):
    eta_dim: int = eqx.field(static=True)
    scaler: Standardizer
    embed: object
    blocks: tuple
    readout: object
    activation: str = eqx.field(static=True)

    def __init__(self, eta_dim: int, cfg: dict, key):
        keys = jax.random.split(key, cfg["depth"] + 2)
        self.eta_dim, self.activation = eta_dim, cfg["activation"]
        self.scaler = Standardizer.identity(eta_dim)
        self.embed = dense(eta_dim, cfg["width"], keys[0], cfg)
        self.blocks = tuple(self._block(cfg, k) for k in keys[1:-1])
        self.readout = dense(cfg["width"], eta_dim, keys[-1], cfg, scale=0.1)

    def _forward(self, eta):
        s = self.scaler
        h = apply(self.embed, (eta - s.eta_mean) / s.eta_scale)
        for block in self.blocks:
            h = h + self._residual(block, h)
        return s.mu_mean + s.mu_scale * apply(self.readout, ACTIVATIONS[self.activation](h))


class MLPET(_Regressor):
    """Residual MLP: h <- h + W2 act(W1 act(h))."""

    def _block(self, cfg, key):
        k1, k2 = jax.random.split(key)
        return (dense(cfg["width"], cfg["width"], k1, cfg),
                dense(cfg["width"], cfg["width"], k2, cfg, scale=0.5))

    def _residual(self, block, h):
        act = ACTIVATIONS[self.activation]
        return apply(block[1], act(apply(block[0], act(h))))


class GLUET(_Regressor):
    """Gated-linear-unit blocks: h <- h + W_o ((W_a h) * sigmoid(W_b h))."""

    def _block(self, cfg, key):
        ka, kb, ko = jax.random.split(key, 3)
        w = cfg["width"]
        return (dense(w, w, ka, cfg), dense(w, w, kb, cfg), dense(w, w, ko, cfg, scale=0.5))

    def _residual(self, block, h):
        return apply(block[2], apply(block[0], h) * jax.nn.sigmoid(apply(block[1], h)))


class QuadraticET(_Regressor):
    """Multiplicative residual blocks h <- h + W h + (B h) * (C h), on a bounded embedding:
    products of linear maps represent 1/eta-like curvature with few layers."""

    def _block(self, cfg, key):
        kw, kb, kc = jax.random.split(key, 3)
        w = cfg["width"]
        return (dense(w, w, kw, cfg, scale=0.3), dense(w, w, kb, cfg, scale=0.5),
                dense(w, w, kc, cfg, scale=0.5))

    def _residual(self, block, h):
        return apply(block[0], h) + apply(block[1], h) * apply(block[2], h)

    def _forward(self, eta):
        s = self.scaler
        h = jnp.tanh(apply(self.embed, (eta - s.eta_mean) / s.eta_scale))
        for block in self.blocks:
            h = h + self._residual(block, h)
        return s.mu_mean + s.mu_scale * apply(self.readout, h)
