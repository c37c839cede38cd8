"""Moment providers: eta -> (mean_stats, cov or None), exact, learned or sampled.

`cov` is the covariance of the error of mean_stats (None where the provider is exact):
the network's calibrated predictive covariance, or the Monte-Carlo error cov_TT / ESS.
Inside the solver every provider is evaluated at one eta through `evaluate`, which is
traceable (jit, vmap) and also returns bit flags.
"""

from __future__ import annotations

import os
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from bayes_et.et import AbstractET
from bayes_et.expfam import ExponentialFamily, build_family
from bayes_et.expfam._quadrature import moments_at
from bayes_et.train import TrainedET, load_run
from bayes_et.train._predictive import misfit_offsets

FLAG_OUTSIDE = 1
"""The eta lies outside the network's training region."""
FLAG_SPREAD = 2
"""The network's predictive spread passes its threshold."""
FLAG_FALLBACK = 4
"""The answer came from the fallback provider."""
FLAG_SAMPLER = 8
"""The sampler's convergence diagnostics (R-hat, ESS) failed."""
FLAG_BACKOFF = 16
"""A CAVI update left the natural-parameter space and was shortened."""
FLAG_STUCK = 32
"""No shortened update was valid: eta was kept."""
REGION_RTOL = 1e-6
FLAG_NAMES = {FLAG_OUTSIDE: "outside_training_region", FLAG_SPREAD: "wide_predictive_spread",
              FLAG_FALLBACK: "answered_by_fallback", FLAG_SAMPLER: "sampler_diagnostics",
              FLAG_BACKOFF: "update_shortened", FLAG_STUCK: "update_rejected"}


def flag_names(bits: int) -> list[str]:
    """The names of the flags set in `bits`."""
    return [name for bit, name in FLAG_NAMES.items() if int(bits) & bit]


class Moments(NamedTuple):
    mean: Float[Array, " d"]
    cov: Float[Array, "d d"]
    flags: Int[Array, ""]


def _no_flags():
    return jnp.zeros((), jnp.int32)


class MomentProvider(eqx.Module):
    """eta -> (mean_stats, cov or None) for one family (attribute `family`). Subclasses
    implement `evaluate`; `exact` says whether the moments are exact (cov is None)."""

    exact: ClassVar[bool] = False

    def evaluate(self, eta: Float[Array, " d"], draw: Int[Array, ""] | None,
                 key: PRNGKeyArray) -> Moments:
        """Moments at one eta (traceable); `draw` picks a calibrated function draw where the
        provider has them (None: the predictive mean); `key` seeds samplers."""
        raise NotImplementedError

    def log_partition(self, eta: Float[Array, " d"], draw: Int[Array, ""] | None
                      ) -> Float[Array, ""] | None:
        """A(eta) up to a constant, or None when unknown (the solver integrates mu)."""
        return None

    @property
    def integrable(self) -> bool:
        """Whether the solver may integrate mu along a path for the ELBO (cheap enough)."""
        return True

    def __call__(self, eta: Float[Array, "*batch d"], key: PRNGKeyArray | None = None
                 ) -> tuple[Float[Array, "*batch d"], Float[Array, "*batch d d"] | None]:
        """(mean_stats, cov or None) at eta of shape (d,) or (n, d), as NumPy float64."""
        out = self._batch(eta, key)
        return out.mean, (None if self.exact else out.cov)

    def flags(self, eta: Float[Array, "*batch d"]) -> list[str] | list[list[str]]:
        """The flag names raised at eta (d,), or one list per row of eta (n, d)."""
        names = [flag_names(b) for b in np.ravel(self._batch(eta, None).flags)]
        return names[0] if np.ndim(eta) == 1 else names

    def _batch(self, eta, key) -> Moments:
        with jax.enable_x64(True):
            eta = self.family.validate_eta(jnp.asarray(eta, jnp.float64))
            flat = jnp.reshape(eta, (-1, self.family.eta_dim))
            keys = jax.random.split(jax.random.key(0) if key is None else key, len(flat))
            out = _evaluate_batch(self, flat, keys)
            batch = eta.shape[:-1]
            return Moments(*(np.reshape(np.asarray(a), batch + a.shape[1:]) for a in out))


@eqx.filter_jit
def _evaluate_batch(provider: MomentProvider, eta, keys) -> Moments:
    return jax.vmap(lambda e, k: provider.evaluate(e, None, k))(eta, keys)


class ExactMoments(MomentProvider):
    """The family's closed form, or quadrature (float64 inside the solver) for any family
    with one-dimensional x."""

    family: ExponentialFamily = eqx.field(static=True)
    exact: ClassVar[bool] = True

    def __init__(self, family: ExponentialFamily):
        if not family.has_closed_form and int(np.prod(family.x_shape)) != 1:
            raise ValueError(f"ExactMoments: {family.name} has no closed form and "
                             f"{family.x_shape}-shaped x; use SamplingMoments")
        self.family = family

    def evaluate(self, eta, draw, key):
        k = self.family.eta_dim
        if self.family.has_closed_form:
            return Moments(self.family._mean_stats(eta), jnp.zeros((k, k), eta.dtype),
                           _no_flags())
        mean, _ = moments_at(self.family, eta)
        return Moments(mean, jnp.zeros((k, k), eta.dtype), _no_flags())

    def log_partition(self, eta, draw):
        return self.family._log_partition(eta) if self.family.has_log_partition else None


class NetworkMoments(MomentProvider):
    """A trained ET network's predictive mean (and calibrated covariance) over
    `num_samples` fixed weight draws; function draw s is m + c (f_s - m) + c sqrt(misfit)
    eps_s, as bayes_et.train.function_draws. Flags eta outside the training region (widened by
    `margin` times its width on each side) or whose predictive standard deviation passes
    `max_spread` (in units of the training targets' standard deviation)."""

    model: TrainedET
    nets: AbstractET  # the num_samples weight draws, stacked (leading axis S)
    offsets: Float[Array, "S d"]
    eta_min: Float[Array, " d"]
    eta_max: Float[Array, " d"]
    family: ExponentialFamily = eqx.field(static=True)
    max_spread: float = eqx.field(static=True)

    def __init__(self, source: str | os.PathLike | TrainedET, *, num_samples: int = 64,
                 max_spread: float = 0.1, margin: float = 0.0,
                 family: ExponentialFamily | None = None,
                 training_region: tuple | None = None, key: PRNGKeyArray | None = None):
        """`source`: a run folder written by `bayes-et train`, or a TrainedET (then give
        `family` and, to get region flags, `training_region` = (eta_min, eta_max))."""
        if isinstance(source, TrainedET):
            model, hyperparams = source, {}
        else:
            model, hyperparams = load_run(source)
        if family is None and "family" in hyperparams:
            family = build_family(hyperparams["family"])
        if family is None:
            raise ValueError("NetworkMoments: give family=... for a model without a run folder")
        if family.eta_dim != model.net.eta_dim:
            raise ValueError(f"NetworkMoments: the network maps {model.net.eta_dim}-dim eta; "
                             f"{family.name} has {family.eta_dim}")
        if "training_region" in hyperparams and training_region is None:
            region = hyperparams["training_region"]
            training_region = (region["eta_min"], region["eta_max"])
        lo, hi = (np.full(family.eta_dim, -np.inf), np.full(family.eta_dim, np.inf)) \
            if training_region is None else (np.asarray(a, np.float64) for a in training_region)
        if not (isinstance(num_samples, int) and num_samples >= 2):
            raise ValueError(f"NetworkMoments: num_samples={num_samples!r}; allowed: an int >= 2")
        if not max_spread > 0 or not margin >= 0:
            raise ValueError(f"NetworkMoments: max_spread={max_spread!r} must be > 0 and "
                             f"margin={margin!r} >= 0")
        # widen by margin x width, and by a float32 rounding allowance (degenerate boxes)
        finite = np.isfinite(lo) & np.isfinite(hi)
        pad = margin * np.where(finite, hi - lo, 0.0) + REGION_RTOL * (
            1 + np.where(finite, np.abs(lo), 0.0))
        self.model = model
        key = jax.random.key(0) if key is None else key
        keys = jax.random.split(key, num_samples)  # the keys of bayes_et.train.predict
        self.nets = eqx.filter_vmap(lambda k: model.net.draw(k, sample=True))(keys)
        self.offsets = misfit_offsets(model, key, num_samples)
        self.eta_min, self.eta_max = lo - pad, hi + pad
        self.family = family
        self.max_spread = float(max_spread)

    @property
    def num_samples(self) -> int:
        """Weight draws S behind the predictive mean (and the function draws)."""
        return len(self.offsets)

    def _over_draws(self, fn):
        return eqx.filter_vmap(fn)(self.nets)

    def evaluate(self, eta, draw, key):
        draws = self._over_draws(lambda net: net(eta))
        mean = draws.mean(0)
        c = self.model.calibration
        dev = draws - mean
        cov = c**2 * (dev.T @ dev / (self.num_samples - 1) + jnp.diag(self.model.misfit_variance))
        spread = jnp.sqrt(jnp.diagonal(cov)) / self.model.net.scaler.mu_scale
        outside = jnp.any((eta < self.eta_min) | (eta > self.eta_max))
        flags = (jnp.where(outside, FLAG_OUTSIDE, 0)
                 | jnp.where(jnp.max(spread) > self.max_spread, FLAG_SPREAD, 0)).astype(jnp.int32)
        value = mean if draw is None else mean + c * (draws[draw] - mean) + self.offsets[draw]
        return Moments(value.astype(eta.dtype), cov.astype(eta.dtype), flags)

    def log_partition(self, eta, draw):
        if not hasattr(self.model.net, "log_partition"):
            return None
        values = self._over_draws(lambda net: net.log_partition(eta))
        mean = values.mean()
        return mean if draw is None else mean + self.model.calibration * (values[draw] - mean)


class SamplingMoments(MomentProvider):
    """NUTS moments (bayes_et.data.mcmc_moments) at each eta: slow, noisy, general. Runs on
    the host through a callback, so the solver stays one jitted loop; the CAVI trace then
    carries Monte-Carlo noise and rarely meets a tight `tol`."""

    family: ExponentialFamily = eqx.field(static=True)
    settings: tuple = eqx.field(static=True)

    def __init__(self, family: ExponentialFamily, **sampler):
        """`sampler`: keyword arguments of mcmc_moments (num_chains, num_warmup, ...)."""
        from bayes_et.data._config import SAMPLER_DEFAULTS

        unknown = set(sampler) - set(SAMPLER_DEFAULTS)
        if unknown:
            raise ValueError(f"SamplingMoments: unknown sampler setting(s) {sorted(unknown)}; "
                             f"allowed: {sorted(SAMPLER_DEFAULTS)}")
        self.family = family
        self.settings = tuple(sorted({**SAMPLER_DEFAULTS, **sampler}.items()))

    @property
    def integrable(self) -> bool:
        """False: a NUTS run per quadrature node would cost too much."""
        return False

    def _host(self, eta, seed):
        from bayes_et.data import mcmc_moments

        est = mcmc_moments(self.family, np.asarray(eta, np.float64)[None],
                           jax.random.key(int(seed)), **dict(self.settings))
        ess = np.asarray(est.ess[0], np.float64)
        cov = np.asarray(est.cov_TT[0]) / np.sqrt(np.outer(ess, ess))
        flags = np.int32(FLAG_SAMPLER if est.flags[0] else 0)
        return (np.asarray(est.mu_T[0], eta.dtype), cov.astype(eta.dtype), flags)

    def evaluate(self, eta, draw, key):
        k = self.family.eta_dim
        shapes = (jax.ShapeDtypeStruct((k,), eta.dtype), jax.ShapeDtypeStruct((k, k), eta.dtype),
                  jax.ShapeDtypeStruct((), jnp.int32))
        seed = jax.random.randint(key, (), 0, np.iinfo(np.int32).max)
        return Moments(*jax.pure_callback(self._host, shapes, eta, seed,
                                          vmap_method="sequential"))


class WithFallback(MomentProvider):
    """`primary` (a network) unless it flags eta as outside its training region or too
    uncertain: then `backup` (exact or sampling) answers, flagged answered_by_fallback.
    Under vmap (function draws) both are evaluated and one is selected."""

    primary: MomentProvider
    backup: MomentProvider

    @property
    def family(self) -> ExponentialFamily:
        """The backup's family (the network's is the same)."""
        return self.backup.family

    @property
    def integrable(self) -> bool:
        """As the backup (the network alone always is)."""
        return self.backup.integrable

    def evaluate(self, eta, draw, key):
        first = self.primary.evaluate(eta, draw, key)
        use_backup = (first.flags & (FLAG_OUTSIDE | FLAG_SPREAD)) != 0

        def backup(_):
            second = self.backup.evaluate(eta, draw, key)
            return Moments(second.mean, second.cov,
                           first.flags | second.flags | FLAG_FALLBACK)

        return jax.lax.cond(use_backup, backup, lambda _: first, None)
