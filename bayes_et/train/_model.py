"""A trained ET network: the network, its learned misfit variance and its calibration."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from bayes_et.et import AbstractET
from bayes_et.params import trainable_filter

UNBOUNDED = 1e30  # log-variance clip of an uncalibrated model: no clipping
PRIOR_WEIGHT = 2.0  # pseudo-points at |z| = Z90 in the local stage: far from data, no change
Z90 = 1.6448536269514722  # |z| of a two-sided 90% interval


class LocalScale(eqx.Module):
    """The calibration's second stage, local in eta: per statistic c(eta) = q(eta) / Z90, q
    the kernel-weighted 90% quantile of the held-out |z| (after the spread calibration) near
    eta, with PRIOR_WEIGHT pseudo-points at Z90, so c -> 1 far from the held-out eta. A
    smooth one-signed error that the weight draws do not show (near the edge of the training
    box, say) raises |z| there, and so the band there; a quantile, not a mean of z^2, so a
    few heavy-tailed errors do not widen the band everywhere near them. Gaussian kernel in
    standardised eta, one bandwidth per statistic (chosen by the leave-one-out interval
    score)."""

    eta: Float[Array, "n d"]  # held-out eta, standardised
    abs_z: Float[Array, "n k"]
    order: Int[Array, "n k"]  # argsort of abs_z per statistic
    log_bandwidth: Float[Array, " k"]

    def __call__(self, eta: Float[Array, " d"]) -> Float[Array, " k"]:
        """c at one standardised eta (k,)."""
        d2 = jnp.sum((eta - self.eta) ** 2, -1)  # (n,)
        w = jnp.exp(-0.5 * d2[:, None] * jnp.exp(-2 * self.log_bandwidth))  # (n, k)
        return jax.vmap(_weighted_quantile, in_axes=1)(
            jnp.take_along_axis(self.abs_z, self.order, 0),
            jnp.take_along_axis(w, self.order, 0)) / Z90

    @classmethod
    def empty(cls, n: int, d: int, k: int) -> LocalScale:
        """A template of n held-out eta (for loading)."""
        return cls(jnp.zeros((n, d)), jnp.zeros((n, k)), jnp.zeros((n, k), jnp.int32),
                   jnp.zeros(k))


def _weighted_quantile(values, weights):
    """The 90% quantile of ascending `values` with `weights`, and PRIOR_WEIGHT more at Z90
    (a pseudo-point that sorts in before the first value >= Z90)."""
    cumulative = jnp.cumsum(weights)
    level = 0.9 * (cumulative[-1] + PRIOR_WEIGHT)
    split = jnp.searchsorted(values, Z90)  # the pseudo-point's place
    with_prior = cumulative + PRIOR_WEIGHT * (jnp.arange(len(values)) >= split)
    first = jnp.argmax(with_prior >= level)
    prior_cumulative = jnp.where(split > 0, cumulative[jnp.maximum(split - 1, 0)], 0.0) \
        + PRIOR_WEIGHT
    return jnp.where((split <= first) & (prior_cumulative >= level), Z90, values[first])


class TrainedET(eqx.Module):
    """`net` maps eta to mu_T; `log_misfit` (k,) is the log variance, in units of the
    targets' standard deviation, of what the network cannot fit; `calibration` (4, k) maps
    the raw predictive variance u (weight spread plus misfit, target-std units) of each
    statistic to the calibrated one, u * exp(a + b clip(log u, lo, hi)): rows a, b, lo, hi,
    fitted on the validation split (a = b = 0 until then: the identity).

    `square_of` holds pairs (b, a) of statistics with T_b = T_a^2 that the model answers
    as mu_a^2 + d mu_a / d eta_a (`answer`): the variance from the slope of the learned
    map, which a network gets far more accurately than the small difference E[T_b] - mu_a^2
    of two large outputs. The predictive, its calibration and the function draws are all
    of these answers: what is calibrated is what a consumer (CAVI) receives."""

    net: AbstractET
    log_misfit: Float[Array, " k"]
    calibration: Float[Array, "4 k"]
    square_of: tuple[tuple[int, int], ...] = eqx.field(static=True, default=())
    local: LocalScale | None = None

    @classmethod
    def wrap(cls, net: AbstractET, misfit: float = 0.1,
             square_of: tuple[tuple[int, int], ...] = ()) -> TrainedET:
        """`net` with an initial misfit standard deviation `misfit` (target-std units)."""
        k = net.eta_dim
        identity = jnp.stack([jnp.zeros(k), jnp.zeros(k), jnp.full(k, -UNBOUNDED),
                              jnp.full(k, UNBOUNDED)])
        return cls(net, jnp.full((k,), 2 * jnp.log(misfit)), identity, tuple(square_of))

    def answer(self, function, eta: Float[Array, " k"]) -> Float[Array, " k"]:
        """The answer at one eta of `function` (the network, one of its weight draws, or a
        function draw): its value, with every square T_b = T_a^2 in `square_of` answered as
        mu_a^2 + d mu_a / d eta_a (reverse mode: an ODE network has no forward mode)."""
        if not self.square_of:
            return function(eta)
        value, pullback = jax.vjp(function, eta)
        for b, a in self.square_of:
            slope = pullback(jnp.zeros_like(value).at[a].set(1.0))[0][a]
            value = value.at[b].set(value[a] ** 2 + slope)
        return value

    @property
    def misfit_variance(self) -> Float[Array, " k"]:
        """The misfit variance per statistic in the targets' units."""
        return jnp.exp(self.log_misfit) * self.net.scaler.mu_scale**2

    def spread_scale(self, raw_var: Float[Array, "*n k"]) -> Float[Array, "*n k"]:
        """The factor m (per statistic) that calibrates a deviation of raw predictive
        variance `raw_var` (targets' units) by the spread alone: calibrated sd = m x raw
        sd."""
        a, b, lo, hi = self.calibration
        log_u = jnp.log(raw_var / self.net.scaler.mu_scale**2)
        return jnp.exp(0.5 * (a + b * jnp.clip(log_u, lo, hi)))

    def scale(self, eta: Float[Array, " d"], raw_var: Float[Array, " k"]) -> Float[Array, " k"]:
        """The whole calibration at one eta: the spread's factor times c(eta) of the local
        stage (where there is one)."""
        m = self.spread_scale(raw_var)
        if self.local is None:
            return m
        s = self.net.scaler
        return m * self.local((eta - s.eta_mean) / s.eta_scale)


def squares_of(family, net: AbstractET) -> tuple[tuple[int, int], ...]:
    """The (b, a) pairs of `family.squares` by position, or none for a network whose mu is
    the gradient of its own A (a convex potential: keep it whole)."""
    if net.has_log_partition:
        return ()
    names = family.flat_names
    return tuple((names.index(b), names.index(a)) for b, a in family.squares.items())


def stage_filter(model: TrainedET, *, means: bool, widths: bool) -> TrainedET:
    """Filter spec of a training stage: network means and/or widths, plus the misfit."""
    spec = jax.tree_util.tree_map(lambda _: False, model)
    net_spec = trainable_filter(model.net, means=means, widths=widths)
    return eqx.tree_at(lambda m: (m.net, m.log_misfit), spec, (net_spec, True))
