"""A trained ET network: the network, its learned misfit variance and its calibration."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from bayes_et.et import AbstractET
from bayes_et.params import trainable_filter

UNBOUNDED = 1e30  # log-variance clip of an uncalibrated model: no clipping


class TrainedET(eqx.Module):
    """`net` maps eta to mu_T; `log_misfit` (k,) is the log variance, in units of the
    targets' standard deviation, of what the network cannot fit; `calibration` (4, k) maps
    the raw predictive variance u (weight spread plus misfit, target-std units) of each
    statistic to the calibrated one, u * exp(a + b clip(log u, lo, hi)): rows a, b, lo, hi,
    fitted on the validation split (a = b = 0 until then: the identity)."""

    net: AbstractET
    log_misfit: Float[Array, " k"]
    calibration: Float[Array, "4 k"]

    @classmethod
    def wrap(cls, net: AbstractET, misfit: float = 0.1) -> TrainedET:
        """`net` with an initial misfit standard deviation `misfit` (target-std units)."""
        k = net.eta_dim
        identity = jnp.stack([jnp.zeros(k), jnp.zeros(k), jnp.full(k, -UNBOUNDED),
                              jnp.full(k, UNBOUNDED)])
        return cls(net, jnp.full((k,), 2 * jnp.log(misfit)), identity)

    @property
    def misfit_variance(self) -> Float[Array, " k"]:
        """The misfit variance per statistic in the targets' units."""
        return jnp.exp(self.log_misfit) * self.net.scaler.mu_scale**2

    def spread_scale(self, raw_var: Float[Array, "*n k"]) -> Float[Array, "*n k"]:
        """The factor m (per statistic) that calibrates a deviation of raw predictive
        variance `raw_var` (targets' units): calibrated sd = m x raw sd."""
        a, b, lo, hi = self.calibration
        log_u = jnp.log(raw_var / self.net.scaler.mu_scale**2)
        return jnp.exp(0.5 * (a + b * jnp.clip(log_u, lo, hi)))


def stage_filter(model: TrainedET, *, means: bool, widths: bool) -> TrainedET:
    """Filter spec of a training stage: network means and/or widths, plus the misfit."""
    spec = jax.tree_util.tree_map(lambda _: False, model)
    net_spec = trainable_filter(model.net, means=means, widths=widths)
    return eqx.tree_at(lambda m: (m.net, m.log_misfit), spec, (net_spec, True))
