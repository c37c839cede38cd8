"""An ET network that learns in a family's chart: mu(eta) = offset(eta) + net(coords(eta))."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from bayes_et.expfam import Chart

from ._base import AbstractET, Standardizer


class ChartedET(AbstractET):
    """`inner` maps the chart's coordinates z = chart.coords(eta) to mu - chart.offset(eta).

    The offset is exact, so a weight draw of this network is the offset plus a draw of
    `inner`: the predictive's spread is inner's, carried to mu exactly. Its mu is not the
    gradient of a convex A of eta, and it has no exact inverse (Newton finds eta)."""

    inner: AbstractET
    chart: Chart = eqx.field(static=True)
    eta_dim: int = eqx.field(static=True)
    scaler: Standardizer  # inner's (the units of mu - offset), kept equal by standardize

    def __init__(self, inner: AbstractET, chart: Chart):
        self.inner, self.chart = inner, chart
        self.eta_dim, self.scaler = inner.eta_dim, inner.scaler

    @property
    def forward_mode(self) -> bool:
        """inner's."""
        return self.inner.forward_mode

    def _forward(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        return self.chart.offset(eta) + self.inner._forward(self.chart.coords(eta))

    def standardised(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        """inner's standardised coordinates of the chart's coordinates."""
        return self.inner.standardised(self.chart.coords(eta))

    def centre(self) -> Float[Array, " d"]:
        """The eta at inner's centre."""
        return self.chart.eta_from(self.inner.centre())

    def standardize(self, eta, mu) -> ChartedET:
        """inner's scaling fitted to the chart's coordinates and mu minus the offset."""
        eta = jnp.asarray(eta, jnp.float32)
        z, offset = jax.vmap(self.chart.coords)(eta), jax.vmap(self.chart.offset)(eta)
        return ChartedET(self.inner.standardize(z, mu - offset), self.chart)
