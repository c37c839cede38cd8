"""Moment providers: a batch of eta -> (mean_stats, cov or None, flags), exact, learned or
sampled.

Every provider answers a whole batch (n, d) in one traceable call (`evaluate`), so the
solver updates a plate of N members with one provider call. `cov` is the covariance of the
error of mean_stats (None where the provider is exact): the network's calibrated
predictive covariance, or the Monte-Carlo error cov_TT / ESS; it is computed only when
`full=True` (the public `__call__`, and the network's spread check).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from bayes_et.data import SamplerSettings
from bayes_et.et import AbstractET
from bayes_et.expfam import ROUTES as EXACT_ROUTES
from bayes_et.expfam import ExponentialFamily, pick_route
from bayes_et.expfam._laplace import (
    laplace_moments_at,
    tensor_laplace_moments_at,
)
from bayes_et.expfam._quadrature import moments_at
from bayes_et.settings import choice, fail, integer, number, optional, parse, setting, text
from bayes_et.train import TrainedET, load_run
from bayes_et.train._model import chi_mixing
from bayes_et.train._predictive import field_draws, misfit_offsets, tail_scores

ORACLES = ("exact", "gauss_hermite", "quadrature", "sampling")


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
    """A network provider: its run folder, fallback and flag thresholds."""

    network: str = setting(check=text)
    fallback: str = setting("exact", choice(*ORACLES, "none"))
    max_spread: float = setting(0.1, number(0.0, low_open=True))
    margin: float = setting(0.0, number(0.0))
    num_samples: int = setting(64, integer(2, 100_000))
    audit: str | None = setting(None, optional(choice(*ORACLES)),
                                doc="the oracle that audits this factor (solver.audit)")


class MomentFlag(enum.IntFlag):
    """Why an answer deserves a second look (bitwise; 0: none)."""

    OUTSIDE_TRAINING_REGION = 1  # the eta lies outside the network's training region
    WIDE_PREDICTIVE_SPREAD = 2  # the network's predictive spread passes its threshold
    ANSWERED_BY_FALLBACK = 4  # the answer came from the fallback provider
    SAMPLER_DIAGNOSTICS = 8  # the sampler's R-hat or ESS failed
    UPDATE_SHORTENED = 16  # a CAVI update left the natural-parameter space and was shortened
    UPDATE_REJECTED = 32  # no shortened update was valid: eta was kept
    NON_FINITE = 64  # the provider's answer was NaN or infinite
    OVER_TOLERANCE = 128  # the tensor Gauss-Hermite error estimate passed its tolerance


REGION_RTOL = 1e-6
NEEDS_BACKUP = (MomentFlag.OUTSIDE_TRAINING_REGION | MomentFlag.WIDE_PREDICTIVE_SPREAD
                | MomentFlag.NON_FINITE | MomentFlag.OVER_TOLERANCE)
_NETWORK = NetworkSettings  # defaults of the network provider's options
FD_STEP = 1e-3  # relative step of the finite-difference Jacobian
MEMBER_BLOCK = 4096  # eta per block in sequential maps: bounds memory for large plates
BACKUP_BLOCK = 64  # flagged members the backup answers per pass
FINER = 4  # the Gauss-Hermite route's second rule: this many times the nodes


def flag_names(bits: int) -> list[str]:
    """The names of the flags set in `bits`."""
    return [flag.name.lower() for flag in MomentFlag if int(bits) & flag]


class Moments(NamedTuple):
    """Moments of a batch: mean (n, d), cov (n, d, d) or None, flags (n,) int32."""

    mean: Float[Array, "n d"]
    cov: Float[Array, "n d d"] | None
    flags: Int[Array, " n"]


def _block_map(fn, *args, block: int = MEMBER_BLOCK):
    """fn over the leading axis of args, vmapped within blocks of `block` rows."""
    n = args[0].shape[0]
    if n <= block:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args, batch_size=block)


class MomentProvider(eqx.Module):
    """A batch of eta (n, d) -> Moments for one family (attribute `family`). Subclasses
    implement `evaluate`; `exact` says whether the moments are exact (cov is None)."""

    exact: ClassVar[bool] = False
    has_fallback: ClassVar[bool] = False
    """Whether rows in `force` (or flagged) can go to a backup provider."""
    oracle: ClassVar[bool] = False
    """Whether the provider may audit a network (exact, or sampling with a known MC error)."""
    config_forms: ClassVar[tuple[str, ...]] = ()
    """The config forms that name this class (`provider_from_config`)."""

    @classmethod
    def from_config(cls, family: ExponentialFamily, spec, key: str) -> MomentProvider:
        """The provider that the config value `spec` (one of `config_forms`) names for
        `family`; `key` names the value in errors."""
        raise NotImplementedError

    @property
    def num_draws(self) -> int:
        """Calibrated function draws that `draw` may select (0: none; the networks have
        num_samples)."""
        return 0

    def evaluate(self, eta: Float[Array, "n d"], draw: Int[Array, ""] | None,
                 key: PRNGKeyArray, *, full: bool = False,
                 active: Bool[Array, " n"] | None = None,
                 force: Bool[Array, " n"] | None = None) -> Moments:
        """Moments at each row of eta (traceable); `draw` picks a calibrated function draw
        where the provider has them (None: its central answer); `key` seeds samplers;
        `full` also computes cov (and the checks that need it); rows outside `active` may
        be answered with anything finite (the caller discards them); rows in `force` go to
        the fallback where the provider has one."""
        raise NotImplementedError

    def log_partition(self, eta: Float[Array, "n d"], draw: Int[Array, ""] | None
                      ) -> Float[Array, " n"] | None:
        """A(eta) per row up to a constant, or None when unknown (the solver integrates mu)."""
        return None

    def jacobian(self, eta: Float[Array, "n d"], key: PRNGKeyArray, *,
                 force: Bool[Array, " n"] | None = None) -> Float[Array, "n d d"]:
        """d mean / d eta per row (traceable), by central differences of `evaluate` (steps
        FD_STEP (1 + |eta_k|)): any provider whose answer is smooth in eta, the ODE network
        included (it has neither forward mode nor reverse-over-reverse). Exact providers
        override it with Cov[T], the exact Jacobian. `force`: rows a fallback answers, as
        in `evaluate`."""
        d = eta.shape[-1]
        step = FD_STEP * (1.0 + jnp.abs(eta))  # (n, d)

        def column(k):
            shift = jnp.zeros_like(eta).at[:, k].set(step[:, k])
            up = self.evaluate(eta + shift, None, key, force=force).mean
            down = self.evaluate(eta - shift, None, key, force=force).mean
            return (up - down) / (2 * step[:, k:k + 1])

        return jnp.stack([column(k) for k in range(d)], axis=-1)

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
            out = _evaluate_full(self, flat, jax.random.key(0) if key is None else key)
            batch = eta.shape[:-1]
            return Moments(*(None if a is None else np.reshape(np.asarray(a),
                                                               batch + a.shape[1:])
                             for a in out))


@eqx.filter_jit
def _evaluate_full(provider: MomentProvider, eta, key) -> Moments:
    return provider.evaluate(eta, None, key, full=True)


def _zeros_flags(n: int):
    return jnp.zeros((n,), jnp.int32)


def flag_where(condition, flag: MomentFlag) -> Int[Array, " n"]:
    """`flag` where `condition` holds, else 0, as int32 (flags are combined with `|`; a
    weakly typed int64 operand there crashed XLA's CPU compiler under x64, jax 0.10)."""
    return jnp.where(condition, jnp.int32(flag), jnp.int32(0))


def _nonfinite(mean) -> Int[Array, " n"]:
    return flag_where(~jnp.all(jnp.isfinite(mean), axis=-1), MomentFlag.NON_FINITE)


ROUTES = ("auto", *EXACT_ROUTES)  # EXACT_ROUTES: the route objects, one registry
TENSOR_NODES = {2: 16, 3: 12}  # the tensor route's nodes per axis (its answer uses twice)
TENSOR_RETRIES = (2, 4)  # x nodes for rows still over tol, in blocks of 64 / x^d rows (a
# one-sided wall, y = 0 beside a large offset, converges slowly: 1.4e-4, 4.7e-5, 4.8e-7 at
# 12, 24, 48 nodes per axis on two scRT cells)
TENSOR_TOL = 1e-5  # on the coarser rule's error: the answer's is 30-50x less (scRT members)
TENSOR_BLOCK_NODES = 2**20  # members x nodes per vmapped block of the tensor route


class ExactMoments(MomentProvider):
    """Exact moments by one of `route`: the family's closed form; the robust quadrature
    (any family with one-dimensional x; float64 inside the solver); or Gauss-Hermite around
    the Laplace mode (`gauss_hermite`, `nodes` and 2 x `nodes` points, fast for unimodal q),
    whose rows with an error estimate above `tol` are answered again with FINER times the
    nodes, and those still above by the robust quadrature. For x in R^d, d <= 3, the
    `gauss_hermite` route is the tensor product of `nodes` (default 16 for d = 2, 12 for
    d = 3) and 2 x `nodes` per axis in the Laplace frame (default tol 1e-5), rows over tol
    answered again with twice, then four times the nodes (their error extrapolated from the
    two successive differences); there is no robust route there, so a row still over tol is flagged
    OVER_TOLERANCE and answered NaN (a fallback, e.g. sampling, answers it). `auto`: the
    closed form where there is one, else the robust quadrature (1-D x), else the tensor
    Gauss-Hermite route (d <= 3)."""

    family: ExponentialFamily = eqx.field(static=True)
    route: str = eqx.field(static=True)
    nodes: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    exact: ClassVar[bool] = True
    oracle: ClassVar[bool] = True
    config_forms: ClassVar[tuple[str, ...]] = ("exact", "gauss_hermite", "quadrature")

    @classmethod
    def from_config(cls, family, spec, key):
        """`exact` (the route `auto`), `gauss_hermite` or `quadrature`."""
        try:
            return cls(family, "auto" if spec == "exact" else spec)
        except ValueError as err:
            raise ValueError(f"config key '{key}': {err}") from None

    def __init__(self, family: ExponentialFamily, route: str = "auto", *,
                 nodes: int | None = None, tol: float | None = None):
        dim = int(np.prod(family.x_shape))
        if route not in ROUTES:
            raise ValueError(f"ExactMoments: route={route!r}; allowed: {', '.join(ROUTES)}")
        try:
            picked = pick_route(family, route)
        except ValueError as err:
            raise ValueError(f"ExactMoments: {err}; another route, or SamplingMoments") from None
        if picked is None:
            raise ValueError(f"ExactMoments: no exact route takes {family.name} (x_shape "
                             f"{family.x_shape}): use SamplingMoments")
        route = picked.name
        if route == "gauss_hermite" and family.support.periodic:
            route = "quadrature"  # the circle has no Laplace mode to centre on: trapezoid
        tensor = route == "gauss_hermite" and dim > 1
        nodes = (TENSOR_NODES[dim] if tensor else 16) if nodes is None else nodes
        tol = (TENSOR_TOL if tensor else 1e-9) if tol is None else tol
        if not (isinstance(nodes, int) and nodes >= 2) or not tol > 0:
            raise ValueError(f"ExactMoments: nodes={nodes!r} (an int >= 2), tol={tol!r} (> 0)")
        self.family, self.route, self.nodes, self.tol = family, route, nodes, float(tol)

    @property
    def _tensor(self) -> bool:
        return self.route == "gauss_hermite" and int(np.prod(self.family.x_shape)) > 1

    def _tensor_map(self, eta, second: bool = False, nodes: int | None = None):
        nodes = self.nodes if nodes is None else nodes
        block = max(1, TENSOR_BLOCK_NODES // (2 * nodes) ** len(self.family.x_shape))
        return _block_map(lambda e: tensor_laplace_moments_at(self.family, e, nodes, second),
                          eta, block=block)

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        if self.route == "closed_form":
            mean = jax.vmap(self.family._mean_stats)(eta)
        elif self.route == "quadrature":
            mean = _block_map(lambda e: moments_at(self.family, e)[0], eta)
        elif self._tensor:  # no robust route in R^d: flagged, answered by a fallback
            mean, difference = self._tensor_map(eta)
            error = difference
            over = ~(error <= self.tol) if active is None else ~(error <= self.tol) & active
            for finer in TENSOR_RETRIES:  # rows over tol again with more nodes: a retried
                # row's error, extrapolated from its last two differences (not from an
                # extrapolated one) as the rule converges geometrically, is the last
                # difference times their ratio (at most the last)
                last = difference
                mean, difference = on_rows(lambda e, _, k=finer: self._tensor_map(
                    e, nodes=k * self.nodes), eta, over, (mean, difference),
                    block=max(1, 64 // finer ** int(np.prod(self.family.x_shape))))
                ratio = jnp.where(jnp.isfinite(last) & (last > 0), difference / last, 1.0)
                error = jnp.where(over, difference * jnp.minimum(ratio, 1.0), error)
                over = ~(error <= self.tol)
            mean = jnp.where(over[:, None], jnp.nan, mean)
            return Moments(mean, None, flag_where(over, MomentFlag.OVER_TOLERANCE)
                           | _nonfinite(mean))
        else:
            rule = lambda nodes: lambda e, _=None: _block_map(
                lambda x: laplace_moments_at(self.family, x, nodes), e)
            mean, error = rule(self.nodes)(eta)
            over = lambda: error > self.tol if active is None else (error > self.tol) & active
            # a finer rule where the first misses tol (wide early sweeps): costs far less
            # than the robust quadrature, which answers what is still over
            mean, error = on_rows(rule(FINER * self.nodes), eta, over(), (mean, error))
            robust = over()
            mean = on_rows(lambda e, _: _block_map(lambda x: moments_at(self.family, x)[0], e),
                           eta, robust, mean)
        return Moments(mean, None, _nonfinite(mean))

    def log_partition(self, eta, draw):
        if not self.family.has_log_partition:
            return None
        return jax.vmap(self.family._log_partition)(eta)

    def jacobian(self, eta, key, *, force=None):
        """Cov_eta[T]: the closed form, else the robust quadrature's (the tensor rule's in
        R^d)."""
        if self.route == "closed_form":
            return jax.vmap(self.family._fisher)(eta)
        if self._tensor:
            return self._tensor_map(eta, second=True)[1]
        return _block_map(lambda e: moments_at(self.family, e)[1], eta)


def on_rows(fn, eta: Float[Array, "n d"], rows: Bool[Array, " n"], base: Array,
            block: int = BACKUP_BLOCK):
    """`base` with fn(eta[rows], active) written into the selected rows: fn runs on blocks
    of `block` selected rows, so its cost grows with the number selected, not with n.
    fn(eta_block (b, d), active (b,)) returns a pytree of arrays (b, ...) shaped as base's
    rows (rows of a block past the selection are padding, marked inactive)."""
    n = eta.shape[0]
    block = min(block, n)
    count = jnp.sum(rows)
    rank = jnp.cumsum(rows) - 1

    def body(carry):
        start, out = carry
        pick = rows & (rank >= start) & (rank < start + block)
        index = jnp.nonzero(pick, size=block, fill_value=n)[0]
        active = index < n
        safe = jnp.where(active, index, 0)
        answer = fn(eta[safe], active)
        out = jax.tree_util.tree_map(lambda o, a: o.at[index].set(a, mode="drop"), out, answer)
        return start + block, out

    return jax.lax.while_loop(lambda c: c[0] < count, body, (jnp.int32(0), base))[1]


SCALE_DRAWS = 8  # weight draws behind the local calibration scale of a function draw


@eqx.filter_jit
def _weight_and_function_draws(model: TrainedET, key: PRNGKeyArray, num_samples: int):
    """The weight draws (stacked), misfit offsets, field draws and tail scores behind
    NetworkMoments' spread and function draws: one compiled call (op by op, it took ~7 s)."""
    keys = jax.random.split(key, num_samples)  # the keys of bayes_et.train.predict
    nets = eqx.filter_vmap(lambda k: model.net.draw(k, sample=True))(keys)
    return (nets, misfit_offsets(model, key, num_samples), field_draws(model, key, num_samples),
            tail_scores(model, key, num_samples))


class NetworkMoments(MomentProvider):
    """A trained ET network. Its answer is the model's answer (`TrainedET.answer`: squares
    T_b = T_a^2 as mu_a^2 + d mu_a / d eta_a, unless the network is a convex potential) at
    the weight means, one forward pass per eta; function draw s is that plus
    c(eta) (g_s - g + sqrt(misfit) eps_s), g_s the answer of one of `num_samples` fixed
    weight draws (a whole function of eta, shared by every member and sweep; c(eta) the
    calibration's scale, fitted on the held-out residuals of these same answers, which for
    a local calibration needs the spread of the weight draws' answers at eta: SCALE_DRAWS
    of them). So a draw carries the error of the values and of the slopes that CAVI
    consumes. The answer adds the residual field's mean (`TrainedET.correction`), a
    function draw one of the field's draws, the band (full=True) its variance. Flags eta
    outside the training region (widened by `margin` times its width on each side),
    non-finite answers, and, with full=True, eta whose calibrated predictive standard
    deviation passes `max_spread` (in units of the training targets' standard deviation).
    """

    model: TrainedET
    nets: AbstractET  # the num_samples weight draws, stacked (leading axis S)
    offsets: Float[Array, "S d"]
    fields: tuple | None  # the residual field's draws (ResidualField.draws)
    scores: Float[Array, "S d"]  # the tail stage's normal scores (`tail_scores`)
    eta_min: Float[Array, " d"]
    eta_max: Float[Array, " d"]
    family: ExponentialFamily = eqx.field(static=True)
    max_spread: float = eqx.field(static=True)
    by_spread: bool = eqx.field(static=True)
    config_forms: ClassVar[tuple[str, ...]] = ("network",)

    @classmethod
    def from_config(cls, family, spec, key):
        """{network: RUN, ...} (NetworkSettings): the network behind its fallback (a
        WithFallback), or alone with `fallback: none`."""
        settings = parse(NetworkSettings, spec, key)
        try:
            network = cls(settings.network, num_samples=settings.num_samples,
                          max_spread=settings.max_spread, margin=settings.margin,
                          family=family)
        except ValueError as err:
            raise ValueError(f"config key '{key}.network': {err}") from None
        if settings.fallback == "none":
            return network
        return WithFallback(network, provider_from_config(family, settings.fallback, key))

    def __init__(self, source: str | os.PathLike | TrainedET, *,
                 num_samples: int = _NETWORK.num_samples,
                 max_spread: float = _NETWORK.max_spread, margin: float = _NETWORK.margin,
                 family: ExponentialFamily | str | None = None,
                 training_region: tuple | None = None, key: PRNGKeyArray | None = None):
        """`source`: a run folder written by `bayes-et train`, or a TrainedET (then give
        `family` and, to get region flags, `training_region` = (eta_min, eta_max)). A run
        folder must record `family` when it is given (name and arguments); a family that is
        not built in must be given."""
        if isinstance(source, TrainedET):
            model = source
            if not isinstance(family, ExponentialFamily):
                raise ValueError("NetworkMoments: give family=... for a model without a run "
                                 "folder")
        else:
            model, family, region, _ = load_run(source, family)
            training_region = region if training_region is None else training_region
        if family.eta_dim != model.net.eta_dim:
            raise ValueError(f"NetworkMoments: the network maps {model.net.eta_dim}-dim eta; "
                             f"{family.name} has {family.eta_dim}")
        lo, hi = (np.full(family.eta_dim, -np.inf), np.full(family.eta_dim, np.inf)) \
            if training_region is None else (np.asarray(a, np.float64) for a in training_region)
        parse(NetworkSettings, {"network": str(source), "num_samples": num_samples,
                                "max_spread": max_spread, "margin": margin}, "network")
        # widen by margin x width, and by a float32 rounding allowance (degenerate boxes)
        finite = np.isfinite(lo) & np.isfinite(hi)
        pad = margin * np.where(finite, hi - lo, 0.0) + REGION_RTOL * (
            1 + np.where(finite, np.abs(lo), 0.0))
        self.model = model
        key = jax.random.key(0) if key is None else key
        self.nets, self.offsets, self.fields, self.scores = _weight_and_function_draws(
            model, key, num_samples)
        self.eta_min, self.eta_max = lo - pad, hi + pad
        self.family = family
        self.max_spread = float(max_spread)
        self.by_spread = bool(np.any(np.asarray(model.spread_calibration.slope) != 0))

    @property
    def num_samples(self) -> int:
        """Weight draws S behind the spread (and the function draws)."""
        return len(self.offsets)

    @property
    def num_draws(self) -> int:
        """The function draws: one per weight draw."""
        return self.num_samples

    def _net(self, draw):
        return jax.tree_util.tree_map(lambda a: a[draw] if eqx.is_array(a) else a, self.nets)

    def _deviations(self, eta, count: int | None = None):
        """The answers of the first `count` (default all S) weight draws minus the answer at
        the weight means, at one eta: (count, k)."""
        nets = jax.tree_util.tree_map(lambda a: a[:count] if eqx.is_array(a) else a,
                                      self.nets)
        answers = eqx.filter_vmap(lambda net: self.model.answer(net, eta))(nets)
        return answers - self.model.answer(self.model.net, eta)

    def _calibrated(self, eta, dev=None):
        """(m, v) at one eta: the calibration's scale of each statistic (k,) and the
        calibrated variance before the tail stage (k,), from the deviations `dev` of the
        weight draws there; without them (a function draw) from the first SCALE_DRAWS
        draws only (m depends on the spread weakly, as u^(b/2), |b| <= 1; the tail stage
        on it as slowly)."""
        if dev is None and (self.by_spread or self.model.tail is not None):
            dev = self._deviations(eta, SCALE_DRAWS)
        raw = self.model.misfit_variance + (0.0 if dev is None else jnp.mean(dev**2, 0))
        m = self.model.scale(eta, raw)
        return m, m**2 * raw + jnp.diagonal(self.model.field_covariance(eta))

    def _at(self, dtype) -> NetworkMoments:
        """This provider with its arrays in `dtype`: the solver's float64 sees a map that is
        smooth to float64 (rounded to float32, the sweeps cycled at a residual of 2-8e-6)."""
        return jax.tree_util.tree_map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, self)

    def _one(self, eta, draw, full: bool):
        """(answer, cov or None, spread flag) at one eta: the model's answer, or that of
        calibrated function draw `draw`."""
        value = self.model.answer(self.model.net, eta)
        answer = value + self.model.correction(eta)
        if draw is not None:
            sample = self.model.answer(self._net(draw), eta)
            field = None if self.fields is None else tuple(a[draw] for a in self.fields)
            m, v = self._calibrated(eta)
            s, inv_nu = self.model.tail_at(v)
            deviation = m * (sample - value + self.offsets[draw]) \
                + self.model.correction(eta, field) + value - answer
            answer = answer + s * chi_mixing(inv_nu, self.scores[draw]) * deviation
        if not full:
            return answer, None, jnp.int32(0)
        dev = self._deviations(eta)
        m, _ = self._calibrated(eta, dev)
        cov = m[:, None] * (dev.T @ dev / self.num_samples
                            + jnp.diag(self.model.misfit_variance)) * m[None, :] \
            + self.model.field_covariance(eta)
        s, _ = self.model.tail_at(jnp.diagonal(cov))
        cov = s[:, None] * cov * s[None, :]
        spread = jnp.sqrt(jnp.diagonal(cov)) / self.model.net.scaler.mu_scale
        wide = jnp.max(spread) > self.max_spread
        return answer, cov, flag_where(wide, MomentFlag.WIDE_PREDICTIVE_SPREAD)

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        at = self._at(eta.dtype)
        value, cov, spread = _block_map(lambda e: at._one(e, draw, full), eta)
        outside = jnp.any((eta < self.eta_min) | (eta > self.eta_max), axis=-1)
        flags = (flag_where(outside, MomentFlag.OUTSIDE_TRAINING_REGION) | spread
                 | _nonfinite(value))
        value = value.astype(eta.dtype)
        return Moments(value, None if cov is None else cov.astype(eta.dtype),
                       flags.astype(jnp.int32))

    def jacobian(self, eta, key, *, force=None):
        """d answer / d eta per row by forward mode (exact: the answer's residual-field mean
        included), or by central differences where the network has no forward mode."""
        if not self.model.net.forward_mode:
            return super().jacobian(eta, key, force=force)
        model = self._at(eta.dtype).model
        one = lambda e: jax.jacfwd(lambda x: model.answer(model.net, x))(e) \
            + model.correction_jacobian(e)
        return _block_map(one, eta)

    def log_partition(self, eta, draw):
        if not self.model.net.has_log_partition:
            return None

        at = self._at(eta.dtype)

        def one(e):
            point = at.model.net.log_partition(e)
            if draw is None:
                return point
            m, v = at._calibrated(e)
            s, inv_nu = at.model.tail_at(v)  # one scale for the scalar A:
            scale = jnp.exp(jnp.mean(jnp.log(m * s * chi_mixing(inv_nu, at.scores[draw]))))
            return point + scale * (at._net(draw).log_partition(e) - point)

        return _block_map(one, eta)


class SamplingMoments(MomentProvider):
    """MCMC moments (bayes_et.data.mcmc_moments; NUTS, or ChEES-HMC with kernel="chees") at
    each eta: slow, noisy, general. The active rows of a batch run as one mcmc_moments call
    on the host, through a callback, so the solver stays one jitted loop; the CAVI trace
    then carries Monte-Carlo noise and rarely meets a tight `tol`."""

    family: ExponentialFamily = eqx.field(static=True)
    settings: SamplerSettings = eqx.field(static=True)
    oracle: ClassVar[bool] = True
    config_forms: ClassVar[tuple[str, ...]] = ("sampling",)

    @classmethod
    def from_config(cls, family, spec, key):
        """`sampling` (the default settings) or {sampling: SamplerSettings}."""
        return cls(family, None if spec == "sampling"
                   else parse(SamplerSettings, spec["sampling"], f"{key}.sampling"))

    def __init__(self, family: ExponentialFamily,
                 sampler: SamplerSettings | Mapping | None = None, **options):
        """`sampler`: SamplerSettings (or a mapping of them); `options`: the same by keyword
        (kernel, num_chains, num_warmup, ...). Checked here, not inside the solve."""
        if options:
            sampler = {**({} if sampler is None else dataclasses.asdict(
                parse(SamplerSettings, sampler, "sampler"))), **options}
        self.family = family
        self.settings = parse(SamplerSettings, sampler, "sampler")

    @property
    def integrable(self) -> bool:
        """False: a NUTS run per quadrature node would cost too much."""
        return False

    def jacobian(self, eta, key, *, force=None):
        raise ValueError(f"SamplingMoments ({self.family.name}): a sampled moment map has no "
                         "Jacobian to linearise the fixed point with; answer this factor "
                         "exactly or by a network")

    def _host(self, eta, active, seed):
        from bayes_et.data import mcmc_moments

        eta = np.asarray(eta, np.float64)
        n, k = eta.shape
        mean, cov = np.zeros((n, k)), np.zeros((n, k, k))
        flags = np.zeros(n, np.int32)
        rows = np.flatnonzero(np.asarray(active))
        if rows.size:
            est = mcmc_moments(self.family, eta[rows], jax.random.key(int(seed)),
                               self.settings)
            ess = np.asarray(est.ess, np.float64)
            mean[rows] = est.mu_T
            cov[rows] = np.asarray(est.cov_TT) / np.sqrt(ess[:, :, None] * ess[:, None, :])
            flags[rows] = np.where(np.asarray(est.flags) != 0, MomentFlag.SAMPLER_DIAGNOSTICS, 0)
        # float32 out: a callback's outputs are canonicalised with the calling thread's x64
        # setting, so float64 would fail wherever x64 is off (MC error >> float32 rounding)
        return mean.astype(np.float32), cov.astype(np.float32), flags

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        n, k = eta.shape
        active = jnp.ones(n, bool) if active is None else active
        shapes = (jax.ShapeDtypeStruct((n, k), jnp.float32),
                  jax.ShapeDtypeStruct((n, k, k), jnp.float32),
                  jax.ShapeDtypeStruct((n,), jnp.int32))
        seed = jax.random.randint(key, (), 0, np.iinfo(np.int32).max)
        mean, cov, flags = jax.pure_callback(self._host, shapes, eta.astype(jnp.float64),
                                             active, seed, vmap_method="sequential")
        mean, cov = mean.astype(eta.dtype), cov.astype(eta.dtype)
        return Moments(mean, cov if full else None, flags | _nonfinite(mean))


def _backup_rows(flags, force):
    """The rows a fallback answers: those the primary flags as needing it, and `force`."""
    use = (flags & NEEDS_BACKUP) != 0
    return use if force is None else use | force


class WithFallback(MomentProvider):
    """`primary` (a network) unless it flags a row as outside its training region, too
    uncertain or non-finite, or the row is in `force`: then `backup` (exact or sampling)
    answers that row, flagged answered_by_fallback. The backup runs only on those rows (in
    blocks), so its cost grows with the number flagged, not with the batch."""

    primary: MomentProvider
    backup: MomentProvider
    has_fallback: ClassVar[bool] = True

    @property
    def family(self) -> ExponentialFamily:
        """The backup's family (the network's is the same)."""
        return self.backup.family

    @property
    def integrable(self) -> bool:
        """As the backup (the network alone always is)."""
        return self.backup.integrable

    @property
    def num_draws(self) -> int:
        """As the primary."""
        return self.primary.num_draws

    def jacobian(self, eta, key, *, force=None):
        """Each row's Jacobian from the provider that answers it (a difference across the
        boundary of the network's region would mix the two)."""
        use = _backup_rows(self.primary.evaluate(eta, None, key).flags, force)
        return on_rows(lambda rows, _: self.backup.jacobian(rows, key), eta, use,
                       self.primary.jacobian(eta, key))

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        first = self.primary.evaluate(eta, draw, key, full=full)
        use = _backup_rows(first.flags, force)
        if active is not None:
            use = use & active
        k = eta.shape[-1]
        base = (first.mean, jnp.zeros(eta.shape[:1], jnp.int32),
                first.cov if first.cov is not None else jnp.zeros((0,)))

        def backup(rows, rows_active):
            second = self.backup.evaluate(rows, draw, key, full=full, active=rows_active)
            cov = second.cov if second.cov is not None else jnp.zeros((len(rows), k, k),
                                                                       rows.dtype)
            return (second.mean, second.flags | MomentFlag.ANSWERED_BY_FALLBACK,
                    cov if first.cov is not None else jnp.zeros((0,)))

        if first.cov is None:
            mean, flags = on_rows(lambda r, a: backup(r, a)[:2], eta, use, base[:2])
            cov = None
        else:
            mean, flags, cov = on_rows(backup, eta, use, base)
        return Moments(mean, cov, first.flags | flags)


PROVIDER_CONFIGS: dict[str, type[MomentProvider]] = {
    form: cls for cls in (ExactMoments, SamplingMoments, NetworkMoments)
    for form in cls.config_forms}  # the one registry: config form -> provider class
PROVIDER_FORMS = ("exact, gauss_hermite, quadrature, sampling, {sampling: {...}}, or {network: "
                  "RUN_DIR, fallback: exact|gauss_hermite|quadrature|sampling|none, audit: "
                  "exact|gauss_hermite|quadrature|sampling, max_spread, margin, num_samples}")


def provider_from_config(family: ExponentialFamily, spec: str | Mapping,
                         key: str = "provider") -> MomentProvider:
    """The provider that a config value names for `family` (PROVIDER_FORMS): its form picks
    the class (PROVIDER_CONFIGS), which builds itself (`from_config`); `key` names the value
    in errors."""
    if isinstance(spec, Mapping):
        form = "network" if "network" in spec else ("sampling" if set(spec) == {"sampling"}
                                                    else None)
    else:
        form = spec if isinstance(spec, str) else None
    if form not in PROVIDER_CONFIGS:
        fail(key, spec, PROVIDER_FORMS)
    return PROVIDER_CONFIGS[form].from_config(family, spec, key)
