"""The CAVI solver: one jitted loop of Gauss-Seidel sweeps, vmapped over function draws."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ._model import CAVIModel
from ._providers import (
    FLAG_BACKOFF,
    FLAG_STUCK,
    ExactMoments,
    MomentProvider,
    NetworkMoments,
    WithFallback,
    _evaluate_batch,
    flag_names,
)

MAX_HALVINGS = 30
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)
GL_T, GL_W = (_NODES + 1) / 2, _WEIGHTS / 2  # Gauss-Legendre on [0, 1]: path integral of mu
BAND = (0.05, 0.95)


@dataclasses.dataclass(frozen=True)
class CAVIResult:
    """The fixed point and its trace. `eta` and `mean_stats` map factor name -> (d_i,)
    (labels in `stat_names`);
    `elbo` and `delta` (largest relative change of eta) have one entry per sweep, `elbo`
    one more for the start (NaN where no log-partition is available); `flags` map factor
    name -> flag names from the last sweep (update_shortened from any sweep). With function
    draws, `draws` holds 'eta' and 'mean_stats' (name -> (S, d_i)) and 'converged' (S,)."""

    names: tuple[str, ...]
    stat_names: dict[str, tuple[str, ...]]
    eta: dict[str, np.ndarray]
    mean_stats: dict[str, np.ndarray]
    iterations: int
    converged: bool
    elbo: np.ndarray
    delta: np.ndarray
    flags: dict[str, list[str]]
    timings: dict[str, float]
    draws: dict[str, Any] | None = None

    def band(self, which: str = "eta") -> dict[str, dict[str, list[float]]] | None:
        """Per factor: mean, std and the 90% band (5% and 95% quantiles) over the fixed
        points of the function draws, of `which` ('eta' or 'mean_stats')."""
        if self.draws is None:
            return None
        out = {}
        for name, values in self.draws[which].items():
            lo, hi = np.quantile(values, BAND, axis=0)
            out[name] = {"mean": values.mean(0).tolist(), "std": values.std(0, ddof=1).tolist(),
                         "lo": lo.tolist(), "hi": hi.tolist()}
        return out

    def band_contains(self, eta: dict[str, Any], rtol: float = 1e-9) -> dict[str, np.ndarray]:
        """Per factor, per coordinate: whether `eta` (e.g. an exact fixed point) lies in
        the 90% band of the draws' fixed points, up to rounding (rtol x (1 + |eta|))."""
        if self.draws is None:
            raise ValueError("band_contains: the result has no function draws (num_draws=0)")
        out = {}
        for name, values in self.draws["eta"].items():
            lo, hi = np.quantile(values, BAND, axis=0)
            value = np.asarray(eta[name], np.float64)
            pad = rtol * (1 + np.abs(value))
            out[name] = (lo - pad <= value) & (value <= hi + pad)
        return out

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        listed = lambda d: {k: np.asarray(v).tolist() for k, v in d.items()}
        nan_none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]
        return {
            "statistics": {k: list(v) for k, v in self.stat_names.items()},
            "eta": listed(self.eta), "mean_stats": listed(self.mean_stats),
            "eta_band": self.band("eta"), "mean_stats_band": self.band("mean_stats"),
            "iterations": self.iterations, "converged": self.converged,
            "elbo": nan_none(self.elbo), "delta": nan_none(self.delta), "flags": self.flags,
            "draws_converged": None if self.draws is None
            else int(np.sum(self.draws["converged"])),
            "num_draws": 0 if self.draws is None else len(self.draws["converged"]),
            "timings": self.timings,
        }


def _shortened_step(family, old, target, damping):
    """old + alpha (target - old) with alpha = 1 - damping, halved until eta is valid."""
    step = target - old
    valid = lambda alpha: family.is_valid_eta(old + alpha * step)

    def shorten(carry):
        alpha, halvings = carry
        return alpha / 2, halvings + 1

    alpha, halvings = jax.lax.while_loop(
        lambda c: (~valid(c[0])) & (c[1] < MAX_HALVINGS), shorten,
        (jnp.asarray(1.0 - damping, old.dtype), jnp.int32(0)))
    ok = valid(alpha)
    bits = jnp.where(halvings > 0, FLAG_BACKOFF, 0) | jnp.where(ok, 0, FLAG_STUCK)
    return jnp.where(ok, old + alpha * step, old), bits.astype(jnp.int32)


def _solve(model: CAVIModel, providers: tuple[MomentProvider, ...], start, draw, key,
           max_iter: int, tol: float, damping: float, track_elbo: bool):
    n = len(model.names)

    def evaluate(i, eta, sweep):
        return providers[i].evaluate(eta, draw, jax.random.fold_in(jax.random.fold_in(
            key, sweep), i))

    def log_partition(i, eta):
        closed = providers[i].log_partition(eta, draw)
        if closed is not None:
            return closed
        delta = eta - start[i]  # A(eta) - A(start) = int_0^1 mu(start + t delta) . delta dt
        path = start[i] + jnp.asarray(GL_T, eta.dtype)[:, None] * delta
        mus = jax.vmap(lambda e: providers[i].evaluate(e, draw, key).mean)(path)
        return jnp.asarray(GL_W, eta.dtype) @ (mus @ delta)

    def elbo(etas, means):
        if not track_elbo:
            return jnp.nan
        entropy_part = sum(log_partition(i, etas[i]) - etas[i] @ means[i] for i in range(n))
        return model.energy(means) + entropy_part

    first = [evaluate(i, start[i], 0) for i in range(n)]
    means0 = tuple(m.mean for m in first)
    flags0 = jnp.stack([m.flags for m in first])
    trace = jnp.full(max_iter + 1, jnp.nan, start[0].dtype)
    state0 = (jnp.int32(0), tuple(start), means0, flags0, jnp.asarray(jnp.inf, start[0].dtype),
              trace.at[0].set(elbo(start, means0)), trace[1:])

    def sweep(state):
        it, etas, means, flags, _, elbos, deltas = state
        etas, means, new_flags, change = list(etas), list(means), [], 0.0
        for i in range(n):
            new, bits = _shortened_step(model.families[i], etas[i],
                                        model.target(i, tuple(means)), damping)
            moments = evaluate(i, new, it + 1)
            change = jnp.maximum(change, jnp.max(jnp.abs(new - etas[i]))
                                 / jnp.maximum(1.0, jnp.max(jnp.abs(etas[i]))))
            etas[i], means[i] = new, moments.mean
            new_flags.append(moments.flags | bits | (flags[i] & FLAG_BACKOFF))
        etas, means = tuple(etas), tuple(means)
        return (it + 1, etas, means, jnp.stack(new_flags), change,
                elbos.at[it + 1].set(elbo(etas, means)), deltas.at[it].set(change))

    return jax.lax.while_loop(lambda s: (s[0] < max_iter) & (s[4] > tol), sweep, state0)


@eqx.filter_jit
def _solve_jit(model, providers, start, key, draws, max_iter, tol, damping, track_elbo):
    if draws is None:
        return _solve(model, providers, start, None, key, max_iter, tol, damping, track_elbo)
    return jax.vmap(lambda d: _solve(model, providers, start, d, key, max_iter, tol, damping,
                                     track_elbo))(draws)


def _per_factor(model: CAVIModel, mapping, field: str) -> dict:
    """A copy of `mapping` (None: empty) whose keys all name factors of the model."""
    mapping = {} if mapping is None else dict(mapping)
    unknown = set(mapping) - set(model.names)
    if unknown:
        raise ValueError(f"{field}: unknown factor(s) {sorted(unknown)}; the model has "
                         f"{list(model.names)}")
    return mapping


def _provider_tuple(model: CAVIModel, providers) -> tuple[MomentProvider, ...]:
    providers = _per_factor(model, providers, "providers")
    out = []
    for name, family in zip(model.names, model.families, strict=True):
        provider = providers[name] if name in providers else ExactMoments(family)
        if not isinstance(provider, MomentProvider):
            raise ValueError(f"providers['{name}']: expected a MomentProvider; got {provider!r}")
        if provider.family.eta_dim != family.eta_dim or (
                type(provider.family) is not type(family)):
            raise ValueError(f"providers['{name}']: provides moments of {provider.family.name}; "
                             f"factor '{name}' is {family.name}")
        out.append(provider)
    return tuple(out)


def _start(model: CAVIModel, providers, init) -> tuple:
    """init[name], else eta0 where valid, else one update from the other factors' start."""
    init = _per_factor(model, init, "init")
    start = []
    for i, name in enumerate(model.names):
        family = model.families[i]
        eta = np.asarray(init.get(name, model.eta0[i]), np.float64)
        family.check_eta_shape(eta, f"init['{name}']")
        start.append(eta if bool(family.is_valid_eta(eta)) or name in init else None)
    proper = [i for i, eta in enumerate(start) if eta is not None]
    keys = jax.random.split(jax.random.key(0), 1)
    means = [None if eta is None else _evaluate_batch(providers[i], jnp.asarray(eta)[None],
                                                      keys).mean[0]
             for i, eta in enumerate(start)]
    for i, eta in enumerate(start):
        if eta is None:
            coupled = [j for (a, b) in model.pairs for j in (a, b)
                       if i in (a, b) and j != i]
            if any(j not in proper for j in coupled):
                missing = [model.names[j] for j in coupled if j not in proper]
                raise ValueError(
                    f"factor '{model.names[i]}': eta0 is outside the natural-parameter space "
                    f"and so is the start of coupled factor(s) {missing}; give init["
                    f"'{model.names[i]}']")
            zeros = [m if m is not None else jnp.zeros(model.families[j].eta_dim)
                     for j, m in enumerate(means)]
            start[i] = np.asarray(model.target(i, tuple(zeros)), np.float64)
    for name, family, eta in zip(model.names, model.families, start, strict=True):
        try:
            family.validate_eta(jnp.asarray(eta), f"start eta of factor '{name}'")
        except ValueError as err:
            raise ValueError(f"factor '{name}': {err}; give a valid init['{name}']") from None
    return tuple(jnp.asarray(eta) for eta in start)


def _converged(change, flags, tol: float):
    """Converged: the last change is within tol and no update was rejected (per run)."""
    return (change <= tol) & ~np.any(flags & FLAG_STUCK, axis=-1)


def _num_draws(providers, num_draws: int) -> int:
    if not (isinstance(num_draws, int) and num_draws >= 0):
        raise ValueError(f"num_draws={num_draws!r}; allowed: an int >= 0")
    networks = [p.primary if isinstance(p, WithFallback) else p for p in providers]
    networks = [p for p in networks if isinstance(p, NetworkMoments)]
    if num_draws and not networks:
        raise ValueError("num_draws > 0 needs at least one NetworkMoments provider "
                         "(function draws come from the networks)")
    most = min((p.num_samples for p in networks), default=0)
    if num_draws > most > 0:
        raise ValueError(f"num_draws={num_draws} exceeds the networks' num_samples ({most})")
    return num_draws


def run_cavi(model: CAVIModel, providers: dict[str, MomentProvider] | None = None, *,
             max_iter: int = 100, tol: float = 1e-6, damping: float = 0.0,
             init: dict[str, Any] | None = None, num_draws: int = 0,
             key: PRNGKeyArray | None = None, track_elbo: bool = True) -> CAVIResult:
    """Mean-field CAVI to a fixed point eta_i = eta_i0 + sum_j A_ij <T_j>, in float64.

    providers: factor name -> MomentProvider (default: ExactMoments of the factor's
    family). Each sweep updates the factors in model order; an update that leaves the
    natural-parameter space is halved until valid. `damping` in [0, 1) keeps that share of
    the old eta. Stops when the largest relative change of eta is <= tol (converged
    unless an update was rejected: no valid step found). With
    num_draws = S > 0 the solver also runs, vmapped, on S calibrated function draws of the
    networks: `result.band()` gives each factor's spread of fixed points.
    """
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r}; allowed: an int >= 1")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol={tol!r}; allowed: a number >= 0")
    if not (isinstance(damping, (int, float)) and 0 <= damping < 1):
        raise ValueError(f"damping={damping!r}; allowed: a number in [0, 1)")
    provider_tuple = _provider_tuple(model, providers)
    num_draws = _num_draws(provider_tuple, num_draws)
    track_elbo = bool(track_elbo) and all(p.integrable for p in provider_tuple)
    key = jax.random.key(0) if key is None else key
    settings = (max_iter, float(tol), float(damping), track_elbo)
    with jax.enable_x64(True):
        start = _start(model, provider_tuple, init)
        began = time.perf_counter()
        central = jax.block_until_ready(
            _solve_jit(model, provider_tuple, start, key, None, *settings))
        seconds = time.perf_counter() - began
        draws = None
        if num_draws:
            began = time.perf_counter()
            batch = jax.block_until_ready(_solve_jit(
                model, provider_tuple, start, key, jnp.arange(num_draws), *settings))
            draws = {
                "eta": {n: np.asarray(e) for n, e in zip(model.names, batch[1], strict=True)},
                "mean_stats": {n: np.asarray(m) for n, m in zip(model.names, batch[2],
                                                                strict=True)},
                "converged": _converged(np.asarray(batch[4]), np.asarray(batch[3]), tol),
                "iterations": np.asarray(batch[0]),
            }
            draw_seconds = time.perf_counter() - began
        it, etas, means, flags, change, elbos, deltas = jax.tree_util.tree_map(np.asarray,
                                                                                central)
    it = int(it)
    timings = {"solve_seconds": seconds}
    if draws is not None:
        timings["draws_seconds"] = draw_seconds
    return CAVIResult(
        names=model.names,
        stat_names={n: f.flat_names for n, f in zip(model.names, model.families, strict=True)},
        eta={n: np.asarray(e) for n, e in zip(model.names, etas, strict=True)},
        mean_stats={n: np.asarray(m) for n, m in zip(model.names, means, strict=True)},
        iterations=it, converged=bool(_converged(change, flags, tol)),
        elbo=np.asarray(elbos)[: it + 1], delta=np.asarray(deltas)[:it],
        flags={n: flag_names(b) for n, b in zip(model.names, np.asarray(flags), strict=True)},
        timings=timings, draws=draws)
