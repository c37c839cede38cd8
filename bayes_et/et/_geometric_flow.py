"""Geometric flow: integrate dmu/dt = Sigma(eta_t, mu_t, t) (eta - eta0) from an anchor.

Sigma = S (L L^T + eps I) S is positive semi-definite by construction (S = diag(sqrt(
mu_scale / eta_scale)) keeps that under standardisation), and Sigma at t = 1 is the
model's Fisher information.
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._base import ACTIVATIONS, PARAM_DEFAULTS, AbstractET, Standardizer, apply, dense

FLOW_DEFAULTS = {
    "width": 64, "depth": 2, "activation": "silu", "epsilon": 1e-4,
    "solver": "tsit5", "num_steps": 8, "adaptive": False, "rtol": 1e-6, "atol": 1e-8,
    "adjoint": "recursive_checkpoint", **PARAM_DEFAULTS,
}
SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "heun": diffrax.Heun,
           "euler": diffrax.Euler}
ADJOINTS = {"recursive_checkpoint": diffrax.RecursiveCheckpointAdjoint,
            "backsolve": diffrax.BacksolveAdjoint, "direct": diffrax.DirectAdjoint}


class LearnedField(eqx.Module):
    """(eta_t, mu_t, t) -> S (L L^T + eps I) S with L lower-triangular from a small MLP."""

    layers: tuple
    epsilon: float = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, dim: int, cfg: dict, key):
        sizes = [2 * dim + 1] + [cfg["width"]] * cfg["depth"] + [dim * (dim + 1) // 2]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            dense(a, b, k, cfg, scale=0.1 if i == len(sizes) - 2 else 1.0)
            for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys, strict=True))
        )
        self.epsilon, self.activation = cfg["epsilon"], cfg["activation"]

    def __call__(self, eta_t, mu_t, t, scaler: Standardizer):
        d = eta_t.shape[0]
        h = jnp.concatenate([(eta_t - scaler.eta_mean) / scaler.eta_scale,
                             (mu_t - scaler.mu_mean) / scaler.mu_scale, t[None]])
        for layer in self.layers[:-1]:
            h = ACTIVATIONS[self.activation](apply(layer, h))
        rows, cols = np.tril_indices(d)
        lower = jnp.zeros((d, d)).at[rows, cols].set(apply(self.layers[-1], h))
        lower = lower + jnp.eye(d)  # start near the identity metric
        s = jnp.sqrt(scaler.mu_scale / scaler.eta_scale)
        return s[:, None] * (lower @ lower.T + self.epsilon * jnp.eye(d)) * s[None, :]


class GeometricFlowET(AbstractET):
    """mu(eta) = mu0 + integral_0^1 Sigma(eta_t, mu_t, t) (eta - eta0) dt, eta_t on the
    segment from the anchor eta0 (whose mu0 is known accurately) to eta."""

    forward_mode: ClassVar[bool] = False  # diffrax's checkpointed adjoint has none

    eta_dim: int = eqx.field(static=True)
    scaler: Standardizer
    field: eqx.Module
    eta0: jax.Array
    mu0: jax.Array
    solver: str = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    adaptive: bool = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    adjoint: str = eqx.field(static=True)

    def __init__(self, eta_dim: int, cfg: dict, key, *, field=None, eta0=None, mu0=None):
        for name, table in (("solver", SOLVERS), ("adjoint", ADJOINTS)):
            if cfg[name] not in table:
                raise ValueError(f"et.geometric_flow: {name}={cfg[name]!r}; allowed: "
                                 f"{sorted(table)}")
        self.eta_dim, self.scaler = eta_dim, Standardizer.identity(eta_dim)
        self.field = field if field is not None else LearnedField(eta_dim, cfg, key)
        self.eta0 = jnp.zeros(eta_dim) if eta0 is None else jnp.asarray(eta0)
        self.mu0 = jnp.zeros(eta_dim) if mu0 is None else jnp.asarray(mu0)
        self.solver, self.num_steps, self.adjoint = cfg["solver"], cfg["num_steps"], cfg["adjoint"]
        self.adaptive, self.rtol, self.atol = cfg["adaptive"], cfg["rtol"], cfg["atol"]

    def with_anchor(self, eta0, mu0) -> GeometricFlowET:
        """A copy integrating from the anchor (eta0, mu0)."""
        return eqx.tree_at(lambda m: (m.eta0, m.mu0), self,
                           (jnp.asarray(eta0, self.eta0.dtype), jnp.asarray(mu0, self.mu0.dtype)))

    def standardize(self, eta, mu) -> GeometricFlowET:
        """Fit the scaling, and anchor at the data point nearest the centre of eta."""
        model = super().standardize(eta, mu)
        s = model.scaler
        eta, mu = np.asarray(eta), np.asarray(mu)
        nearest = np.argmin(np.sum(((eta - s.eta_mean) / s.eta_scale) ** 2, axis=1))
        return model.with_anchor(eta[nearest], mu[nearest])

    def _sigma(self, eta_t, mu_t, t):
        return self.field(eta_t, mu_t, t, self.scaler)

    def _forward(self, eta):
        delta = eta - self.eta0

        def rhs(t, mu_t, args):
            return self._sigma(self.eta0 + t * delta, mu_t, t) @ delta

        controller = (diffrax.PIDController(rtol=self.rtol, atol=self.atol) if self.adaptive
                      else diffrax.ConstantStepSize())
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(rhs), SOLVERS[self.solver](), 0.0, 1.0, 1.0 / self.num_steps,
            self.mu0, stepsize_controller=controller, adjoint=ADJOINTS[self.adjoint](),
            max_steps=4096 if self.adaptive else self.num_steps,
        )
        return solution.ys[-1]

    def fisher(self, eta, *, key=None, sample: bool = False):
        """Sigma at the endpoint: positive semi-definite for every weight draw."""
        model = self.draw(key, sample)
        eta = self._check(eta)
        return model._sigma(eta, model._forward(eta), jnp.asarray(1.0, eta.dtype))
