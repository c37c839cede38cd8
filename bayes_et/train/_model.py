"""A trained ET network: the network, its learned misfit variance and its calibration."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from bayes_et.et import AbstractET
from bayes_et.params import trainable_filter

from ._field import ResidualField

UNBOUNDED = 1e30  # log-variance clip of an uncalibrated model: no clipping
PRIOR_WEIGHT = 0.5  # pseudo-points at the overall level in the local stage
Z90 = 1.6448536269514722  # |z| of a two-sided 90% interval
POWER = 2.0  # the local stage's power mean of |z| (2: the root mean square)


class LocalScale(eqx.Module):
    """The calibration's second stage, local in eta: per statistic c(eta) = k s(eta), s the
    root mean square of the held-out z (after the spread calibration) near eta (a Gaussian
    kernel in standardised eta, with PRIOR_WEIGHT pseudo-points at the overall mean square,
    so s settles to the overall level far from held-out eta), k fitted so that 90% of the
    held-out |z| lie within Z90 c, leave-one-out (so heavy tails set the factor, not the
    width everywhere). A smooth one-signed error that the weight draws do not show (near the
    edge of the training box, say) raises z^2 there, and so the band there; smooth in eta,
    so a function draw stays a smooth function (CAVI's sweeps converge on it). One bandwidth
    per statistic, chosen by the leave-one-out interval score."""

    eta: Float[Array, "n d"]  # held-out eta, standardised
    power_z: Float[Array, "n k"]  # |z|^POWER
    level: Float[Array, " k"]  # the overall mean of |z|^POWER: the pseudo-points' value
    factor: Float[Array, " k"]  # k
    log_bandwidth: Float[Array, " k"]

    def __call__(self, eta: Float[Array, " d"]) -> Float[Array, " k"]:
        """c at one standardised eta (k,)."""
        d2 = jnp.sum((eta - self.eta) ** 2, -1)  # (n,)
        w = jnp.exp(-0.5 * d2[:, None] * jnp.exp(-2 * self.log_bandwidth))  # (n, k)
        mean = (PRIOR_WEIGHT * self.level + jnp.sum(w * self.power_z, 0)) / (
            PRIOR_WEIGHT + jnp.sum(w, 0))
        return self.factor * mean ** (1 / POWER)

    @classmethod
    def empty(cls, n: int, d: int, k: int) -> LocalScale:
        """A template of n held-out eta (for loading)."""
        return cls(jnp.zeros((n, d)), jnp.zeros((n, k)), jnp.zeros(k), jnp.zeros(k),
                   jnp.zeros(k))


class TailScale(eqx.Module):
    """The calibration's last stage: heavy tails. Per statistic, the held-out z (after the
    stages before) in up to 4 bins of calibrated predictive variance v are fitted as
    s t_nu (a Student-t predictive; nu = infinity is the Gaussian); between the bins'
    centres log s and 1/nu are interpolated linearly in log v (held beyond them), so the
    predictive is a smooth function of eta and a function draw stays smooth."""

    log_v: Float[Array, "b k"]  # the bins' centres, log calibrated variance (target-std units)
    log_s: Float[Array, "b k"]
    inv_nu: Float[Array, "b k"]  # 1 / nu: 0 is Gaussian

    def __call__(self, v: Float[Array, " k"]) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
        """(s, 1/nu) at calibrated variances v (k,), target-std units."""
        at = lambda x, xp, fp: jnp.interp(x, xp, fp)
        log_v = jnp.log(v)
        log_s = jax.vmap(at)(log_v, self.log_v.T, self.log_s.T)
        return jnp.exp(log_s), jax.vmap(at)(log_v, self.log_v.T, self.inv_nu.T)

    @classmethod
    def empty(cls, b: int, k: int) -> TailScale:
        """A template of b bins (for loading)."""
        return cls(jnp.zeros((b, k)), jnp.zeros((b, k)), jnp.zeros((b, k)))


def chi_mixing(inv_nu: Float[Array, "*n k"], g: Float[Array, "*n k"]) -> Float[Array, "*n k"]:
    """sqrt(nu / chi^2_nu) at the chi^2 quantile whose normal score is g (Wilson-Hilferty:
    chi^2_nu / nu ~ (1 - a + g sqrt(a))^3, a = 2 / (9 nu)): a standard normal g shared by
    a whole function draw makes its deviation s t_nu-distributed at every eta, smoothly in
    nu; 1 where nu is infinite."""
    a = 2.0 / 9.0 * inv_nu
    return jnp.maximum(1.0 - a + g * jnp.sqrt(a), 0.2) ** -1.5


class SpreadCalibration(NamedTuple):
    """The spread stage of the calibration, per statistic (k,) each: a raw predictive
    variance u (target-std units) becomes u exp(log_scale + slope clip(log u, log_u_min,
    log_u_max)). A model file holds it as one (4, k) array in this order."""

    log_scale: Array
    slope: Array
    log_u_min: Array
    log_u_max: Array

    @classmethod
    def identity(cls, k: int) -> SpreadCalibration:
        """No change of any spread."""
        return cls(jnp.zeros(k), jnp.zeros(k), jnp.full(k, -UNBOUNDED), jnp.full(k, UNBOUNDED))


class TrainedET(eqx.Module):
    """`net` maps eta to mu_T; `log_misfit` (k,) is the log variance, in units of the
    targets' standard deviation, of what the network cannot fit; `calibration` (a
    `SpreadCalibration`, stored as its (4, k) array: `spread_calibration` reads it) maps the
    raw predictive variance u (weight spread plus misfit, target-std units) of each
    statistic to the calibrated one, fitted on the validation split (the identity until
    then).

    `square_of` holds pairs (b, a) of statistics with T_b = T_a^2 that the model answers
    as mu_a^2 + d mu_a / d eta_a (`answer`): the variance from the slope of the learned
    map, which a network gets far more accurately than the small difference E[T_b] - mu_a^2
    of two large outputs. The predictive, its calibration and the function draws are all
    of these answers: what is calibrated is what a consumer (CAVI) receives.

    `field` (once recalibrated) is the network's smooth error as a function of eta, learnt
    from the held-out residuals (`ResidualField`): its mean corrects the answer
    (`correction`), its variance joins the band, its draws join the function draws."""

    net: AbstractET
    log_misfit: Float[Array, " k"]
    calibration: Float[Array, "4 k"]
    square_of: tuple[tuple[int, int], ...] = eqx.field(static=True, default=())
    local: LocalScale | None = None
    field: ResidualField | None = None
    tail: TailScale | None = None

    @classmethod
    def wrap(cls, net: AbstractET, misfit: float = 0.1,
             square_of: tuple[tuple[int, int], ...] = ()) -> TrainedET:
        """`net` with an initial misfit standard deviation `misfit` (target-std units)."""
        k = net.eta_dim
        return cls(net, jnp.full((k,), 2 * jnp.log(misfit)),
                   jnp.stack(SpreadCalibration.identity(k)), tuple(square_of))

    @property
    def spread_calibration(self) -> SpreadCalibration:
        """The spread stage of the calibration, by name."""
        return SpreadCalibration(*self.calibration)

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
        c = self.spread_calibration
        log_u = jnp.log(raw_var / self.net.scaler.mu_scale**2)
        return jnp.exp(0.5 * (c.log_scale + c.slope * jnp.clip(log_u, c.log_u_min,
                                                                 c.log_u_max)))

    def _standardised(self, eta: Float[Array, " d"]) -> Float[Array, " d"]:
        return self.net.standardised(eta)

    def correction(self, eta: Float[Array, " d"], draw: tuple | None = None
                   ) -> Float[Array, " k"]:
        """What the field adds to the answer at one eta (targets' units): its mean, or its
        draw `draw` (an item of `ResidualField.draws`; its deviation from the mean scaled
        by the local stage, as the band is); zero without a field."""
        if self.field is None:
            return jnp.zeros(self.net.eta_dim)
        z = self._standardised(eta)
        value = self.field(z)
        if draw is not None:
            value = value + self.local_scale(eta) * (self.field.draw(z, draw) - value)
        return self.net.scaler.mu_scale * value

    def correction_jacobian(self, eta: Float[Array, " d"]) -> Float[Array, "k d"]:
        """d correction / d eta of the field's mean at one eta (zeros without a field)."""
        if self.field is None:
            return jnp.zeros((self.net.eta_dim, self.net.eta_dim))
        return self.net.scaler.mu_scale[:, None] * self.field.gradient(
            self._standardised(eta)) @ jax.jacfwd(self._standardised)(eta)

    def field_covariance(self, eta: Float[Array, " d"]) -> Float[Array, "k k"]:
        """The field's posterior covariance of the statistics at one eta, scaled by the
        local stage (targets' units; zero without a field)."""
        if self.field is None:
            return jnp.zeros((self.net.eta_dim, self.net.eta_dim))
        sd = self.local_scale(eta) * self.net.scaler.mu_scale
        return sd[:, None] * self.field.covariance(self._standardised(eta)) * sd[None, :]

    def local_scale(self, eta: Float[Array, " d"]) -> Float[Array, " k"]:
        """c(eta) of the local stage at one eta (ones without one)."""
        if self.local is None:
            return jnp.ones(self.net.eta_dim)
        return self.local(self._standardised(eta))

    def tail_at(self, variance: Float[Array, " k"]
                ) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
        """(s, 1/nu) of the tail stage at one eta whose calibrated predictive variance
        (the stages before, targets' units) is `variance`: the Student-t predictive's scale
        is s times the calibrated standard deviation; (1, 0) without a tail stage."""
        if self.tail is None:
            return jnp.ones_like(variance), jnp.zeros_like(variance)
        return self.tail(variance / self.net.scaler.mu_scale**2)

    def scale(self, eta: Float[Array, " d"], raw_var: Float[Array, " k"]) -> Float[Array, " k"]:
        """The whole calibration of the weight draws' spread at one eta: the spread's factor
        times c(eta) of the local stage."""
        return self.spread_scale(raw_var) * self.local_scale(eta)


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
