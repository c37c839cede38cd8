"""Glow on R^d: ActNorm, invertible LU-linear and affine-coupling layers, each block ending
in a per-coordinate sinh-arcsinh map (skew and tails). Every weight draw is a bijection
with a closed-form inverse, so the inverse mu -> eta is exact."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from bayes_et.params import make_parameter

from ._base import ACTIVATIONS, PARAM_DEFAULTS, PARAM_TYPES, AbstractET, Standardizer, apply, dense

GLOW_DEFAULTS = {"num_layers": 6, "width": 64, "depth": 2, "max_log_scale": 2.0,
                 "activation": "silu", **PARAM_DEFAULTS}


def _param(value, cfg):
    return make_parameter(value, bayesian=cfg["bayesian"],
                          param_type=PARAM_TYPES[cfg["param_type"]], init_stdv=cfg["init_stdv"])


class ActNorm(eqx.Module):
    log_scale: object
    shift: object

    def __init__(self, dim, cfg):
        self.log_scale, self.shift = _param(jnp.zeros(dim), cfg), _param(jnp.zeros(dim), cfg)

    def forward(self, z):
        return z * jnp.exp(self.log_scale.mean) + self.shift.mean

    def inverse(self, y):
        return (y - self.shift.mean) * jnp.exp(-self.log_scale.mean)


class SinhArcsinh(eqx.Module):
    """Per coordinate y = sinh(delta * asinh(x) - skew), delta = exp(log_delta) > 0:
    a monotone bijection with a closed-form inverse that adds skew and tail weight."""

    log_delta: object
    skew: object

    def __init__(self, dim, cfg):
        self.log_delta, self.skew = _param(jnp.zeros(dim), cfg), _param(jnp.zeros(dim), cfg)

    def forward(self, z):
        return jnp.sinh(jnp.exp(self.log_delta.mean) * jnp.arcsinh(z) - self.skew.mean)

    def inverse(self, y):
        return jnp.sinh((jnp.arcsinh(y) + self.skew.mean) * jnp.exp(-self.log_delta.mean))


class LULinear(eqx.Module):
    """y = P L U z with L unit lower-triangular and U upper-triangular with diagonal
    sign * exp(log_abs_diag): invertible for every weight value."""

    lower: object
    upper: object
    log_abs_diag: object
    perm: jax.Array
    sign: jax.Array

    def __init__(self, dim, key, cfg):
        q, _ = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
        p, low, up = (np.asarray(a) for a in jax.scipy.linalg.lu(q))  # q = p @ low @ up
        diag = np.diag(up)
        self.perm = jnp.asarray(np.argmax(p, axis=0))  # P as row indices: (P x)[i] = x[perm[i]]
        self.sign = jnp.asarray(np.sign(diag), jnp.float32)
        self.lower = _param(jnp.asarray(np.tril(low, -1), jnp.float32), cfg)
        self.upper = _param(jnp.asarray(np.triu(up, 1), jnp.float32), cfg)
        self.log_abs_diag = _param(jnp.asarray(np.log(np.abs(diag)), jnp.float32), cfg)

    def _factors(self):
        d = self.sign.shape[0]
        low = jnp.tril(self.lower.mean, -1) + jnp.eye(d)
        up = jnp.triu(self.upper.mean, 1) + jnp.diag(self.sign * jnp.exp(self.log_abs_diag.mean))
        return low, up

    def forward(self, z):
        low, up = self._factors()
        return (low @ (up @ z))[self.perm]

    def inverse(self, y):
        low, up = self._factors()
        x = jnp.zeros_like(y).at[self.perm].set(y)
        x = solve_triangular(low, x, lower=True, unit_diagonal=True)
        return solve_triangular(up, x, lower=False)


class AffineCoupling(eqx.Module):
    """The second half moves by a scale and shift computed from the first half."""

    hidden: tuple
    out: object
    split: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    flip: bool = eqx.field(static=True)
    max_log_scale: float = eqx.field(static=True)

    def __init__(self, dim, key, cfg, flip):
        keys = jax.random.split(key, cfg["depth"] + 1)
        self.split, self.flip, self.max_log_scale = dim // 2, flip, cfg["max_log_scale"]
        self.activation = cfg["activation"]
        n_in = dim - self.split if flip else self.split
        sizes = [n_in] + [cfg["width"]] * cfg["depth"]
        self.hidden = tuple(dense(a, b, k, cfg)
                            for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-1], strict=True))
        self.out = dense(cfg["width"], 2 * (dim - n_in), keys[-1], cfg, scale=0.01)

    def _halves(self, z):
        a, b = z[: self.split], z[self.split :]
        return (b, a) if self.flip else (a, b)

    def _join(self, cond, moved):
        return jnp.concatenate([moved, cond] if self.flip else [cond, moved])

    def _scale_shift(self, cond):
        for layer in self.hidden:
            cond = ACTIVATIONS[self.activation](apply(layer, cond))
        raw = apply(self.out, cond)
        log_s, shift = jnp.split(raw, 2)
        return self.max_log_scale * jnp.tanh(log_s / self.max_log_scale), shift

    def forward(self, z):
        cond, moved = self._halves(z)
        log_s, shift = self._scale_shift(cond)
        return self._join(cond, moved * jnp.exp(log_s) + shift)

    def inverse(self, y):
        cond, moved = self._halves(y)
        log_s, shift = self._scale_shift(cond)
        return self._join(cond, (moved - shift) * jnp.exp(-log_s))


class GlowET(AbstractET):
    """mu = mu_mean + mu_scale * flow((eta - eta_mean) / eta_scale)."""

    eta_dim: int = eqx.field(static=True)
    scaler: Standardizer
    layers: tuple
    has_exact_inverse: ClassVar[bool] = True

    def __init__(self, eta_dim: int, cfg: dict, key):
        if eta_dim < 2:
            raise ValueError(f"et.glow needs eta_dim >= 2 (coupling splits eta); got {eta_dim}")
        self.eta_dim, self.scaler = eta_dim, Standardizer.identity(eta_dim)
        layers = []
        for i, k in enumerate(jax.random.split(key, cfg["num_layers"])):
            k1, k2 = jax.random.split(k)
            layers += [ActNorm(eta_dim, cfg), LULinear(eta_dim, k1, cfg),
                       AffineCoupling(eta_dim, k2, cfg, flip=bool(i % 2)),
                       SinhArcsinh(eta_dim, cfg)]
        self.layers = tuple(layers)

    def _forward(self, eta):
        s = self.scaler
        z = (eta - s.eta_mean) / s.eta_scale
        for layer in self.layers:
            z = layer.forward(z)
        return s.mu_mean + s.mu_scale * z

    def inverse(self, mu, *, key=None, sample: bool = False):
        """The exact eta whose prediction is `mu` (one draw when `sample`)."""
        model = self.draw(key, sample)
        s = model.scaler
        y = (self._check(mu) - s.mu_mean) / s.mu_scale
        for layer in reversed(model.layers):
            y = layer.inverse(y)
        return s.eta_mean + s.eta_scale * y
