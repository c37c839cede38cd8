"""A trained ET network: the network, its learned misfit variance and its calibration scale."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from bayes_et.et import AbstractET
from bayes_et.params import trainable_filter


class TrainedET(eqx.Module):
    """`net` maps eta to mu_T; `log_misfit` (k,) is the log variance, in units of the
    targets' standard deviation, of what the network cannot fit; `calibration` is the
    scale c of the predictive spread fitted on the validation split (1 until then)."""

    net: AbstractET
    log_misfit: Float[Array, " k"]
    calibration: Float[Array, ""]

    @classmethod
    def wrap(cls, net: AbstractET, misfit: float = 0.1) -> TrainedET:
        """`net` with an initial misfit standard deviation `misfit` (target-std units)."""
        k = net.eta_dim
        return cls(net, jnp.full((k,), 2 * jnp.log(misfit)), jnp.ones(()))

    @property
    def misfit_variance(self) -> Float[Array, " k"]:
        """The misfit variance per statistic in the targets' units."""
        return jnp.exp(self.log_misfit) * self.net.scaler.mu_scale**2


def stage_filter(model: TrainedET, *, means: bool, widths: bool) -> TrainedET:
    """Filter spec of a training stage: network means and/or widths, plus the misfit."""
    spec = jax.tree_util.tree_map(lambda _: False, model)
    net_spec = trainable_filter(model.net, means=means, widths=widths)
    return eqx.tree_at(lambda m: (m.net, m.log_misfit), spec, (net_spec, True))
