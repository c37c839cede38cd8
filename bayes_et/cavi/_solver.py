"""The CAVI solver: one jitted loop of Gauss-Seidel sweeps, mapped over function draws.

Every factor is held as (n_i, d_i) (one row for a single factor, N for a plate) and updated
with one batched provider call per sweep: members of a plate are conditionally independent
given the other factors, so the block update is exact Gauss-Seidel, and the traced program
is the same whatever N is.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, PRNGKeyArray
from tqdm.auto import tqdm

from bayes_et.settings import (
    SEED_MAX,
    boolean,
    fail,
    integer,
    nested,
    number,
    optional,
    parse,
    setting,
)

from ._audit import (
    Audit,
    AuditResult,
    AuditSettings,
    audit_fixed_point,
    linear_response_draws,
)
from ._model import CAVIModel, Model
from ._providers import (
    ExactMoments,
    MomentFlag,
    MomentProvider,
    flag_names,
    flag_where,
)


def draw_count(key: str, value: Any) -> int:
    """0 (no band) or 2 to 100 000 function draws: a band needs the draws' spread."""
    if integer(0, 100_000)(key, value) == 1:
        fail(key, value, "0 (no band) or an int >= 2 and <= 100000 (a band needs a spread)")
    return value


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """CAVI: sweeps, tolerance on the relative fixed-point residual (the undamped change of
    eta, so damping never fakes convergence), damping, function draws, and the audit
    (None: no audit; the oracles are named per factor beside the network)."""

    max_iter: int = setting(100, integer(1, 10**7))
    tol: float = setting(1e-6, number(0.0))
    damping: float = setting(0.0, number(0.0, 1.0, high_open=True))
    num_draws: int = setting(0, draw_count)
    seed: int = setting(0, integer(0, SEED_MAX))
    track_elbo: bool = setting(True, boolean)
    accelerate: bool = setting(True, boolean, doc="SQUAREM cycles: the same fixed point in "
                               "fewer sweeps")
    audit: AuditSettings | None = setting(None, optional(nested(AuditSettings)))


MAX_HALVINGS = 30
EXTRAPOLATE_BELOW = 0.5  # the residual under which SQUAREM extrapolates: far from the fixed
# point the sweeps' path is not yet linear, and a jump there lands where q is wide (costly)
_SOLVER = SolverSettings()  # the defaults
STALL_SWEEPS = 10  # sweeps without the residual falling below PROGRESS x its best: a stall
PROGRESS = 0.99
MAX_DAMPING = 0.9375  # a stall halves the step taken, down to 1/16 of the update
MAX_FALLBACK_ROUNDS = 4
MAX_SWITCHES = 2  # a member whose answer switched network <-> fallback this often keeps the
# fallback for the rest of the solve: at a region's edge it would flip forever


def band_limits(values: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The 90% band of S >= 2 draws (S, ...): their mean -+ Student's t (S - 1 degrees of
    freedom) x their sd x sqrt(1 + 1/S), its half-width times `scale`. A prediction interval:
    it holds one more value of the draws' distribution (the exact answer, where the draws
    are calibrated) 90% of the time at any S for Gaussian draws; the draws' own 5% and 95%
    quantiles hold 85% at S = 32 and 81% at S = 16."""
    values = np.asarray(values, np.float64)
    num = values.shape[0]
    if num < 2:
        raise ValueError(f"band: got {num} function draw(s); allowed: 2 or more")
    half = scale * scipy.stats.t.ppf(0.95, num - 1) * np.sqrt(1 + 1 / num) * values.std(
        0, ddof=1)
    centre = values.mean(0)
    return centre - half, centre + half


@dataclasses.dataclass(frozen=True)
class CAVIResult:
    """The fixed point and its trace. `eta` and `mean_stats` map factor name -> (d_i,), or
    (N, d_i) for a plate (labels in `stat_names`); `elbo` and `delta` (largest relative
    change of eta) have one entry per sweep, `elbo` one more for the start (NaN where not
    tracked); `flags` map factor name -> the flag names any member raised (update_shortened
    from any sweep, the others from the last), `flag_counts` -> {flag name: members};
    `member_flags` -> the raw bits per member. `visited` maps factor name -> (lo, hi), the
    box of eta the sweeps visited (not the start). With function draws, `draws`
    holds 'eta' and 'mean_stats' (name -> (S, d_i) or (S, N, d_i)) and 'converged' (S,),
    and with the linear response 'eta_linear_response' (the same draws' fixed points to first
    order). `audit`: the rectified fixed point and its 90% interval (`AuditResult`)."""

    names: tuple[str, ...]
    stat_names: dict[str, tuple[str, ...]]
    eta: dict[str, np.ndarray]
    mean_stats: dict[str, np.ndarray]
    iterations: int
    converged: bool
    elbo: np.ndarray
    delta: np.ndarray
    flags: dict[str, list[str]]
    flag_counts: dict[str, dict[str, int]]
    member_flags: dict[str, np.ndarray]
    visited: dict[str, tuple[np.ndarray, np.ndarray]]
    timings: dict[str, float]
    draws: dict[str, Any] | None = None
    audit: AuditResult | None = None

    def band(self, which: str = "eta", scale: float = 1.0) -> dict[str, dict[str, list]] | None:
        """Per factor: mean, std and the 90% band (`band_limits`: a prediction interval)
        of the fixed points of the function draws, of `which` ('eta', 'mean_stats' or
        'eta_linear_response'); per member for a plate. `scale` widens the band about the
        draws' mean (e.g. `audit.band_scale`: recalibrated by the audited members)."""
        if self.draws is None or which not in self.draws:
            return None
        out = {}
        for name, values in self.draws[which].items():
            lo, hi = band_limits(values, scale)
            out[name] = {"mean": values.mean(0).tolist(), "std": values.std(0, ddof=1).tolist(),
                         "lo": lo.tolist(), "hi": hi.tolist()}
        return out

    def band_contains(self, eta: dict[str, Any], rtol: float = 1e-9) -> dict[str, np.ndarray]:
        """Per factor, per coordinate (and member): whether `eta` (e.g. an exact fixed
        point) lies in the 90% band of the draws' fixed points, up to rounding."""
        if self.draws is None:
            raise ValueError("band_contains: the result has no function draws (num_draws=0)")
        out = {}
        for name, values in self.draws["eta"].items():
            lo, hi = band_limits(values)
            value = np.asarray(eta[name], np.float64)
            pad = rtol * (1 + np.abs(value))
            out[name] = (lo - pad <= value) & (value <= hi + pad)
        return out

    def data_config(self, factor: str, family, num: int = 4000, margin: float = 0.05,
                    method: str = "auto") -> dict[str, Any]:
        """A data config (for `bayes_et.data.generate` / `bayes-et train --data`) of `num` eta
        uniform over the box this solve visited for `factor`, widened by `margin` times its
        width on each side (coordinates that never moved stay fixed; a bound moves at most
        halfway to zero, never across: the sign of eta decides validity and tails): train
        the factor's network where the model goes."""
        if factor not in self.visited:
            raise ValueError(f"data_config: unknown factor {factor!r}; allowed: "
                             f"{list(self.visited)}")
        if not (isinstance(num, int) and num >= 1) or not (np.isfinite(margin) and margin >= 0):
            raise ValueError(f"data_config: num={num!r} (an int >= 1), margin={margin!r} (>= 0)")
        lo, hi = self.visited[factor]
        width = hi - lo
        lo = np.where(lo > 0, np.maximum(lo - margin * width, lo / 2), lo - margin * width)
        hi = np.where(hi < 0, np.minimum(hi + margin * width, hi / 2), hi + margin * width)
        box, offsets = {}, np.cumsum((0, *family.stat_sizes))
        for name, a, b in zip(family.stat_names, offsets[:-1], offsets[1:], strict=True):
            box[name] = [lo[a:b].tolist(), hi[a:b].tolist()] if family.stat_shapes[name] \
                else [float(lo[a]), float(hi[a])]
        from bayes_et.expfam import family_spec

        return {"family": family_spec(family), "eta": {"num": num, "box": box},
                "method": method}

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        listed = lambda d: {k: np.asarray(v).tolist() for k, v in d.items()}
        nan_none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]
        return {
            "statistics": {k: list(v) for k, v in self.stat_names.items()},
            "eta": listed(self.eta), "mean_stats": listed(self.mean_stats),
            "eta_band": self.band("eta"), "mean_stats_band": self.band("mean_stats"),
            "eta_band_linear_response": self.band("eta_linear_response"),
            "audit": None if self.audit is None else self.audit.to_json(),
            "iterations": self.iterations, "converged": self.converged,
            "elbo": nan_none(self.elbo), "delta": nan_none(self.delta), "flags": self.flags,
            "flag_counts": self.flag_counts,
            "visited": {k: {"lo": v[0].tolist(), "hi": v[1].tolist()}
                        for k, v in self.visited.items()},
            "draws_converged": None if self.draws is None
            else int(np.sum(self.draws["converged"])),
            "num_draws": 0 if self.draws is None else len(self.draws["converged"]),
            "timings": self.timings,
        }


def _shortened_step(family, old, target, damping):
    """old + alpha (target - old) with alpha = 1 - damping, halved until eta is valid; one
    member (d,)."""
    step = target - old
    valid = lambda alpha: family.is_valid_eta(old + alpha * step)

    def shorten(carry):
        alpha, halvings = carry
        return alpha / 2, halvings + 1

    alpha, halvings = jax.lax.while_loop(
        lambda c: (~valid(c[0])) & (c[1] < MAX_HALVINGS), shorten,
        (jnp.asarray(1.0 - damping, old.dtype), jnp.int32(0)))
    ok = valid(alpha)
    bits = (flag_where(halvings > 0, MomentFlag.UPDATE_SHORTENED)
            | flag_where(~ok, MomentFlag.UPDATE_REJECTED))
    return jnp.where(ok, old + alpha * step, old), bits


class LoopSettings(NamedTuple):
    """What the compiled loop is specialised on (static)."""

    max_iter: int
    tol: float
    damping: float
    track_elbo: bool
    accelerate: bool

    @classmethod
    def of(cls, solver: SolverSettings) -> LoopSettings:
        """The loop's part of parsed solver settings."""
        return cls(solver.max_iter, float(solver.tol), float(solver.damping),
                   solver.track_elbo, solver.accelerate)


class SolverState(NamedTuple):
    """The loop's state: sweeps done, per factor eta, mean statistics, flag bits, the last
    sweep's fixed-point residual (largest, and per factor), log-partition changes since
    the start, the ELBO and residual traces, the box of eta visited, the fallback
    switches per member, and the stall guard: the damping now, the best residual and the
    sweeps since it last fell."""

    sweeps: Array
    etas: tuple
    means: tuple
    flags: tuple
    change: Array
    changes: Array
    log_z: tuple
    elbos: Array
    deltas: Array
    box: tuple
    switches: tuple
    damping: Array
    best: Array
    stalled: Array


def _stall_guard(before: SolverState, after: SolverState) -> SolverState:
    """Halve the step taken (damping towards MAX_DAMPING) once the residual has not fallen
    below PROGRESS x its best for STALL_SWEEPS sweeps: the sweeps of a map whose fixed point
    repels them (an eigenvalue below -1, as some function draws of an ODE network give)
    settle into a cycle that a smaller step turns into a contraction."""
    fell = after.change < PROGRESS * before.best
    stalled = jnp.where(fell, 0, before.stalled + after.sweeps - before.sweeps)
    stall = stalled >= STALL_SWEEPS
    damping = jnp.where(stall, jnp.minimum(1 - (1 - before.damping) / 2, MAX_DAMPING),
                        before.damping)
    return after._replace(damping=damping, stalled=jnp.where(stall, 0, stalled),
                          best=jnp.where(fell | stall, after.change, before.best))


def _solve(model: CAVIModel, providers, start, log_z0, force, draw, key,
           settings: LoopSettings, progress: bool) -> SolverState:
    n = len(model.names)
    max_iter, tol, damping, track_elbo, accelerate = settings
    accelerate = accelerate and n > 1  # one factor: its first sweep is its fixed point

    def evaluate(i, eta, salt, forced=None):
        return providers[i].evaluate(eta, draw, jax.random.fold_in(key, salt),
                                     force=force[i] if forced is None else forced)

    def log_partition_step(i, old, new, mean_old, mean_new, salt):
        """A_i(new) - A_i(old) per member: closed form, or Simpson's rule along the segment
        (one extra evaluation at its midpoint)."""
        closed = providers[i].log_partition(new, draw)
        if closed is not None:
            return closed - providers[i].log_partition(old, draw)
        mid = evaluate(i, 0.5 * (old + new), salt).mean
        return jnp.sum((new - old) * (mean_old + 4 * mid + mean_new), axis=-1) / 6

    def elbo(etas, means, log_z):
        if not track_elbo:
            return jnp.nan
        entropy_part = sum(jnp.sum(log_z[i] - jnp.sum(etas[i] * means[i], -1)) for i in range(n))
        return model.energy(means) + entropy_part

    def widen(box, eta):
        return jnp.minimum(box[0], eta.min(0)), jnp.maximum(box[1], eta.max(0))

    # Accelerated, the sweeps begin at the largest factor (a Gauss-Seidel cycle may be cut
    # anywhere: same fixed point): its eta is a function of the others', so the
    # extrapolation moves only the others and never evaluates the plate at the jump.
    lead = int(np.argmax([e.size for e in start])) if accelerate else 0
    order = tuple(range(lead, n)) + tuple(range(lead))

    first = [evaluate(i, start[i], i) for i in range(n)]
    means0 = tuple(m.mean for m in first)
    dtype = start[0].dtype
    trace = jnp.full(max_iter + 1, jnp.nan, dtype)
    box0 = tuple((jnp.full(e.shape[-1], jnp.inf, dtype), jnp.full(e.shape[-1], -jnp.inf, dtype))
                 for e in start)  # the eta of the sweeps (the start is often far off)
    state0 = SolverState(jnp.int32(0), tuple(start), means0, tuple(m.flags for m in first),
                         jnp.asarray(jnp.inf, dtype), jnp.full(n, jnp.inf, dtype), log_z0,
                         trace.at[0].set(elbo(start, means0, log_z0)), trace[1:], box0,
                         tuple(jnp.zeros(len(e), jnp.int32) for e in start),
                         jnp.asarray(damping, dtype), jnp.asarray(jnp.inf, dtype),
                         jnp.int32(0))

    def update(state: SolverState, factors, salt0: int = 0) -> SolverState:
        """The factors' updates in turn (Gauss-Seidel), with each one's fixed-point
        residual (the undamped step: damping never fakes convergence)."""
        it = state.sweeps
        etas, means, log_z = list(state.etas), list(state.means), list(state.log_z)
        box, switches, flags = list(state.box), list(state.switches), list(state.flags)
        changes = list(state.changes)
        for i in factors:
            family = model.families[i]
            target = model.target(i, tuple(means))
            new, bits = jax.vmap(lambda o, t, f=family: _shortened_step(
                f, o, t, state.damping))(etas[i], target)
            salt = (it + 1) * 2 * n + i + salt0
            moments = evaluate(i, new, salt, force[i] | (switches[i] >= MAX_SWITCHES))
            switches[i] = switches[i] + (_by_fallback(moments.flags)
                                         != _by_fallback(flags[i])).astype(jnp.int32)
            changes[i] = jnp.max(jnp.max(jnp.abs(target - etas[i]), -1) / jnp.maximum(
                1.0, jnp.max(jnp.abs(etas[i]), -1)))
            if track_elbo:
                log_z[i] = log_z[i] + log_partition_step(i, etas[i], new, means[i],
                                                         moments.mean, salt + n)
            etas[i], means[i] = new, moments.mean
            box[i] = widen(box[i], new)
            flags[i] = moments.flags | bits | (flags[i] & MomentFlag.UPDATE_SHORTENED)
        return state._replace(etas=tuple(etas), means=tuple(means), log_z=tuple(log_z),
                              box=tuple(box), switches=tuple(switches), flags=tuple(flags),
                              changes=jnp.stack(changes))

    def sweep(state: SolverState) -> SolverState:
        it = state.sweeps
        state = update(state, order)
        change = jnp.max(state.changes)
        if progress:
            jax.debug.callback(_progress_update, it + 1, change)
        return state._replace(
            sweeps=it + 1, change=change,
            elbos=state.elbos.at[it + 1].set(elbo(state.etas, state.means, state.log_z)),
            deltas=state.deltas.at[it].set(change))

    def jump(s0: SolverState, s1: SolverState, s2: SolverState) -> SolverState:
        """SQUAREM's extrapolation (Varadhan & Roland 2008, SqS3) from three iterates: eta =
        x0 - 2 a r + a^2 v with r = x1 - x0, v = x2 - 2 x1 + x0, a = -|r| / |v| <= -1,
        stepped back towards a = -1 (which is x2) until every member's eta is valid; then
        the moments there (one provider call per factor)."""
        moved = order[1:]  # the lead factor stays at x2: the next sweep recomputes it
        r = {i: s1.etas[i] - s0.etas[i] for i in moved}
        v = {i: s2.etas[i] - 2 * s1.etas[i] + s0.etas[i] for i in moved}
        norm = lambda xs: jnp.sqrt(sum(jnp.sum(x**2) for x in xs.values()))
        alpha = jnp.minimum(-norm(r) / jnp.maximum(norm(v), jnp.finfo(dtype).tiny), -1.0)
        alpha = jnp.where(jnp.isfinite(alpha), alpha, -1.0)
        point = lambda a: {i: s0.etas[i] - 2 * a * r[i] + a**2 * v[i] for i in moved}
        valid = lambda a: jnp.all(jnp.stack([jnp.all(model.families[i].is_valid_eta(e))
                                             for i, e in point(a).items()]))
        alpha, _ = jax.lax.while_loop(
            lambda c: (~valid(c[0])) & (c[1] < MAX_HALVINGS),
            lambda c: ((c[0] - 1.0) / 2, c[1] + 1), (alpha, jnp.int32(0)))
        jumped = point(jnp.where(valid(alpha), alpha, -1.0))
        salt = (s2.sweeps + 1) * 2 * n + 2 * n * (max_iter + 1)
        etas, means, flags = list(s2.etas), list(s2.means), list(s2.flags)
        log_z, box = list(s2.log_z), list(s2.box)
        for i, eta in jumped.items():
            answer = evaluate(i, eta, salt + i, force[i] | (s2.switches[i] >= MAX_SWITCHES))
            if track_elbo:
                log_z[i] = log_z[i] + log_partition_step(i, etas[i], eta, means[i],
                                                         answer.mean, salt + n + i)
            etas[i], means[i], box[i] = eta, answer.mean, widen(box[i], eta)
            flags[i] = answer.flags | (flags[i] & MomentFlag.UPDATE_SHORTENED)
        return s2._replace(etas=tuple(etas), means=tuple(means), flags=tuple(flags),
                           log_z=tuple(log_z), box=tuple(box))

    def judge(s2: SolverState, s3: SolverState) -> SolverState:
        """The sweep from the extrapolation, kept if it did no worse than the plain sweeps
        (ELBO when tracked, else the fixed-point residual); kept or not, three sweeps were
        spent: a rejected cycle records x2 again."""
        # the lead factor is not judged: at the jump it was left stale on purpose
        rest = lambda s: jnp.max(s.changes[jnp.asarray(order[1:])])
        better = (s3.elbos[s3.sweeps] >= s2.elbos[s2.sweeps] - 1e-9 * jnp.abs(
            s2.elbos[s2.sweeps])) if track_elbo else rest(s3) <= rest(s2)
        better = better & jnp.isfinite(s3.change)
        kept = s2._replace(sweeps=s3.sweeps,
                           elbos=s3.elbos.at[s3.sweeps].set(s2.elbos[s2.sweeps]),
                           deltas=s3.deltas.at[s2.sweeps].set(s2.change))
        return _where(better, s3, kept)

    def step(carry):
        """One sweep. Accelerated, a SQUAREM cycle is three of them (phase 0: x1 from x0,
        phase 1: x2, phase 2: the sweep from the extrapolation, then judged), so the
        compiled loop holds one sweep, not four (the providers' evaluations dominate its
        compile time); a cycle that converges on the way stops there. The stall guard
        acts at the end of a plain sweep or a cycle."""
        state, phase, s0, s1 = carry
        if not accelerate:
            return _stall_guard(state, sweep(state)), phase, s0, s1
        extrapolated = phase == 2
        out = sweep(jax.lax.cond(extrapolated, lambda s: jump(s0, s1, s), lambda s: s, state))
        out = _where(extrapolated, judge(state, out), out)
        begin = (phase == 0) & (state.sweeps + 3 <= max_iter) & (
            state.change < EXTRAPOLATE_BELOW)
        before = _where(phase == 0, state, s0)
        phase = jnp.where(begin | (phase == 1), phase + 1, 0)
        out = _where((phase == 0) | (out.change <= tol), _stall_guard(before, out), out)
        return out, phase, _where(begin, state, s0), _where(begin, out, s1)

    # accelerated, the factors before the lead are updated once first: the sequence of
    # updates is the plain sweeps', only cut elsewhere
    state0 = update(state0, order[n - lead:], salt0=4 * n * (max_iter + 1))
    return jax.lax.while_loop(lambda c: (c[0].sweeps < max_iter) & (c[0].change > tol), step,
                              (state0, jnp.int32(0), state0, state0))[0]


def _where(condition, a, b):
    """a where `condition` (a scalar) holds, else b, leaf by leaf."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(condition, x, y), a, b)


def _fallback_members(flags, providers) -> tuple:
    """Per factor, the members whose answer (flag bits `flags`) was their fallback's."""
    return tuple(_by_fallback(np.reshape(f, -1)) & p.has_fallback
                 for f, p in zip(flags, providers, strict=True))


def _by_fallback(flags):
    return (flags & MomentFlag.ANSWERED_BY_FALLBACK) != 0


_BAR: list = []  # the progress bar of the solve in flight (host side)


def _progress_update(sweep, change):
    if _BAR:
        _BAR[0].update(int(sweep) - _BAR[0].n)
        _BAR[0].set_postfix(change=f"{float(change):.2e}")


@eqx.filter_jit
def _solve_jit(model, providers, start, log_z, force, key, draws, settings: LoopSettings,
               progress) -> SolverState:
    """The solve from `start`; log_z: A_i(start) - A_i(first start) per member."""
    if draws is None:
        return _solve(model, providers, start, log_z, force, None, key, settings, progress)
    # one draw after another: each stops at its own fixed point (vmapped, every draw would
    # run as many sweeps as the slowest)
    return jax.lax.map(lambda d: _solve(model, providers, start, log_z, force, d, key,
                                        settings, False), draws)


def _lay_out(tree):
    """Every array whose leading axis is a multiple (> 1) of the device count laid out along
    that axis over `jax.devices()` (one-axis mesh "members"): plates, their per-row terms and
    their state. One device, or any other array: unchanged. The jitted solver is then one
    program partitioned over the devices (and hosts, with `jax.distributed`)."""
    devices = jax.devices()
    if len(devices) < 2:
        return tree
    mesh = Mesh(np.asarray(devices), ("members",))

    def place(a):
        if not (eqx.is_array(a) or isinstance(a, np.ndarray)) or a.ndim == 0 or \
                a.shape[0] < 2 or a.shape[0] % len(devices):
            return a
        spec = PartitionSpec("members", *([None] * (a.ndim - 1)))
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec),
                                            lambda index: host[index])

    return jax.tree_util.tree_map(place, tree)


def _whole(tree):
    """`tree` with every array whole on this process: one laid out over the devices of
    several processes (`jax.distributed`) gathered from them; others unchanged. What
    follows a solve (flags, draws' summaries, the audit) reads the fixed point on every
    process alike."""
    def gather(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return multihost_utils.process_allgather(a, tiled=True)
        return a

    return jax.tree_util.tree_map(gather, tree)


@eqx.filter_jit
def _evaluate_all(providers, etas, force, key, full: bool):
    return tuple(p.evaluate(e, None, jax.random.fold_in(key, i), full=full, force=f)
                 for i, (p, e, f) in enumerate(zip(providers, etas, force, strict=True)))


def _spread_flags(providers, etas, force, key) -> tuple:
    """Per factor, the members whose network answer is too uncertain (the check that needs
    the weight draws, made once at a fixed point): False for providers without draws."""
    networks = [i for i, p in enumerate(providers) if p.num_draws]
    checked = _evaluate_all(tuple(providers[i] for i in networks),
                            tuple(etas[i] for i in networks),
                            tuple(force[i] for i in networks), key, True)
    out = [np.zeros(len(e), bool) for e in etas]
    for i, moments in zip(networks, checked, strict=True):
        out[i] = (np.asarray(moments.flags) & MomentFlag.WIDE_PREDICTIVE_SPREAD) != 0
    return tuple(out)


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
        if provider.family != family:
            raise ValueError(f"providers['{name}']: provides moments of {provider.family.name}; "
                             f"factor '{name}' is {family.name}")
        out.append(provider)
    return tuple(out)


def _init_eta(model: CAVIModel, i: int, value) -> np.ndarray:
    name, family, size = model.names[i], model.families[i], model.sizes[i]
    shape = (family.eta_dim,) if size is None else (size, family.eta_dim)
    eta = np.asarray(value, np.float64)
    if eta.shape != shape:
        raise ValueError(f"init['{name}']: expected shape {shape} (statistics "
                         f"{list(family.flat_names)}); got {eta.shape}")
    return np.atleast_2d(eta)


def _start(model: CAVIModel, providers, init, force) -> tuple:
    """init[name], else eta0 where valid for every member, else one update from the started
    factors: first those whose neighbours have all started, then (in model order) with the
    means of the factors not yet started taken as zero, if that gives a valid start."""
    init = _per_factor(model, init, "init")
    start = []
    for i, name in enumerate(model.names):
        eta = _init_eta(model, i, init[name]) if name in init else np.asarray(model.eta0[i])
        valid = name in init or bool(np.all(model.families[i].is_valid_eta(eta)))
        start.append(jnp.asarray(eta) if valid else None)
    means = [None] * len(start)

    def begin(i):
        means[i] = _evaluate_all((providers[i],), (start[i],), (force[i],), jax.random.key(i),
                                 False)[0].mean

    for i, eta in enumerate(start):
        if eta is not None:
            begin(i)
    pending = [i for i, eta in enumerate(start) if eta is None]
    while pending:
        ready = [i for i in pending if all(means[j] is not None for j in model.neighbours(i))]
        i = ready[0] if ready else pending[0]
        filled = tuple(m if m is not None else jnp.zeros_like(jnp.asarray(model.eta0[j]))
                       for j, m in enumerate(means))
        start[i] = model.target(i, filled)
        missing = [model.names[j] for j in sorted(model.neighbours(i)) if means[j] is None]
        if missing and not bool(jnp.all(model.families[i].is_valid_eta(start[i]))):
            raise ValueError(
                f"factor '{model.names[i]}': eta0 is outside the natural-parameter space and "
                f"so is the start of factor(s) {missing} it shares terms with; give init["
                f"'{model.names[i]}']")
        begin(i)
        pending.remove(i)
    for name, family, eta in zip(model.names, model.families, start, strict=True):
        try:
            family.validate_eta(eta, f"start eta of factor '{name}'")
        except ValueError as err:
            raise ValueError(f"factor '{name}': {err}; give a valid init['{name}']") from None
    return tuple(start)


def _converged(change, flags, tol: float):
    """Converged: the last change is within tol and no update was rejected (per run)."""
    stuck = sum(np.any(np.asarray(f) & MomentFlag.UPDATE_REJECTED, axis=-1) for f in flags)
    return (np.asarray(change) <= tol) & ~np.asarray(stuck, bool)


def _num_draws(providers, num_draws: int) -> int:
    samples = [p.num_draws for p in providers if p.num_draws]
    if num_draws and not samples:
        raise ValueError("num_draws > 0 needs at least one NetworkMoments provider "
                         "(function draws come from the networks)")
    if num_draws > min(samples, default=0) > 0:
        raise ValueError(f"num_draws={num_draws} exceeds the networks' num_samples "
                         f"({min(samples)})")
    return num_draws


def run_cavi(model: CAVIModel | Model, providers: dict[str, MomentProvider] | None = None, *,
             max_iter: int = _SOLVER.max_iter, tol: float = _SOLVER.tol,
             damping: float = _SOLVER.damping, init: dict[str, Any] | None = None,
             num_draws: int = _SOLVER.num_draws, key: PRNGKeyArray | None = None,
             track_elbo: bool = _SOLVER.track_elbo, accelerate: bool = _SOLVER.accelerate,
             audit: Audit | None = None,
             linear_response: bool = False, progress: bool = False) -> CAVIResult:
    """Mean-field CAVI to a fixed point, in float64.

    providers: factor name -> MomentProvider (default: ExactMoments of the factor's
    family). Each sweep updates the factors in model order, a plate with one batched
    provider call; an update that leaves the natural-parameter space is halved (per member)
    until valid. `damping` in [0, 1) keeps that share of the old eta (raised, the step halved, after
    STALL_SWEEPS sweeps in which the residual did not fall). Stops when the largest
    relative change of eta is <= tol (converged unless an update was rejected: no valid step
    found). `accelerate`: SQUAREM cycles once the residual is below EXTRAPOLATE_BELOW (two
    sweeps, an extrapolation of every factor but the largest, a sweep from it, kept only
    where it does no worse than the plain sweeps: ELBO when tracked, else the residual);
    the same fixed point in fewer sweeps, the sweeps then cut at the largest factor.
    Network providers are checked for their predictive spread at the fixed point; where a
    fallback exists, members flagged there are answered by it and the solve goes on.
    `track_elbo`: the ELBO per sweep, free with closed-form log-partitions, else one extra
    provider evaluation per factor per sweep (Simpson's rule along each update). With
    num_draws = S > 0 the solver also runs, draw after draw, on S calibrated function draws of the
    networks: `result.band()` gives each factor's (and member's) spread of fixed points;
    `linear_response` adds the same draws' fixed points to first order (one linear solve
    per draw, `result.band('eta_linear_response')`). `audit` (an `Audit`): oracles answer a
    random sample of members at the fixed point, and `result.audit` holds the rectified
    fixed point with its 90% interval, whose coverage holds whatever the network's error.
    """
    solver = parse(SolverSettings, {"max_iter": max_iter, "tol": tol, "damping": damping,
                                    "num_draws": num_draws, "track_elbo": track_elbo,
                                    "accelerate": accelerate}, "solver")
    return solve(model, providers, solver, init=init, key=key, audit=audit,
                 linear_response=linear_response, progress=progress)


def solve(model: CAVIModel | Model, providers: dict[str, MomentProvider] | None,
          solver: SolverSettings, *, init: dict[str, Any] | None = None,
          key: PRNGKeyArray | None = None, audit: Audit | None = None,
          linear_response: bool = False, progress: bool = False) -> CAVIResult:
    """`run_cavi` with its settings parsed already (a config's `solver`; the key defaults to
    its seed's)."""
    model = model.build() if isinstance(model, Model) else model
    if not isinstance(model, CAVIModel):
        raise ValueError(f"model: expected a CAVIModel or Model; got {type(model).__name__}")
    settings = LoopSettings.of(solver)
    provider_tuple = _provider_tuple(model, providers)
    num_draws = _num_draws(provider_tuple, solver.num_draws)
    if audit is not None:
        if not isinstance(audit, Audit):
            raise ValueError(f"audit: expected an Audit; got {type(audit).__name__}")
        audit = audit.check(model, provider_tuple)
    if linear_response and not num_draws:
        raise ValueError("linear_response=True needs num_draws > 0 (it pushes each function "
                         "draw's error through the linearised fixed point)")
    settings = settings._replace(
        track_elbo=settings.track_elbo and all(p.integrable for p in provider_tuple))
    key = jax.random.key(solver.seed) if key is None else key
    timings = {"solve_seconds": 0.0}
    with jax.enable_x64(True):
        force = tuple(np.zeros(len(e), bool) for e in model.eta0)
        start = _start(model, provider_tuple, init, force)
        log_z = tuple(jnp.zeros(len(e)) for e in start)
        model, start, log_z, force = _lay_out((model, start, log_z, force))
        bar = tqdm(total=settings.max_iter, desc="CAVI sweeps", unit="sweep", disable=not progress)
        _BAR[:] = [bar]
        iterations, elbos, deltas, visited = 0, [], [], None
        try:
            for _ in range(MAX_FALLBACK_ROUNDS):
                began = time.perf_counter()
                central = _whole(jax.block_until_ready(_solve_jit(
                    model, provider_tuple, start, log_z, force, key, None, settings, progress)))
                timings["solve_seconds"] += time.perf_counter() - began
                it, etas, means, flags = (int(central.sweeps), central.etas, central.means,
                                          central.flags)
                change, log_z = central.change, central.log_z
                iterations += it
                visited = central.box if visited is None else tuple(
                    (np.minimum(a[0], b[0]), np.maximum(a[1], b[1]))
                    for a, b in zip(visited, central.box, strict=True))
                elbos.append(np.asarray(central.elbos)[: it + 1])
                deltas.append(np.asarray(central.deltas)[: it])
                forced = _whole(force)
                spread = _spread_flags(provider_tuple, etas, forced, key)
                wide = int(MomentFlag.WIDE_PREDICTIVE_SPREAD)
                flags = tuple(np.asarray(f) | np.where(s, wide, 0).astype(np.int32)
                              for f, s in zip(flags, spread, strict=True))
                grown = tuple(np.asarray(f) | (s & p.has_fallback)
                              for f, s, p in zip(forced, spread, provider_tuple, strict=True))
                if all(np.array_equal(g, f) for g, f in zip(grown, forced, strict=True)):
                    break
                force, start = _lay_out((grown, etas))  # the backup answers those members
        finally:
            _BAR.clear()
            bar.close()
        # the members whose answer at the fixed point was the fallback's (flagged for their
        # spread, or kept there after switching): what follows answers them so too
        handed = _fallback_members(flags, provider_tuple)
        draws = None
        if num_draws:
            began = time.perf_counter()
            batch = _whole(jax.block_until_ready(_solve_jit(
                model, provider_tuple, etas, log_z, force, key, jnp.arange(num_draws),
                settings._replace(track_elbo=False), False)))
            single = lambda n, a: a[:, 0] if model.sizes[model.names.index(n)] is None else a
            draws = {
                "eta": {n: single(n, np.asarray(e))
                        for n, e in zip(model.names, batch.etas, strict=True)},
                "mean_stats": {n: single(n, np.asarray(m))
                               for n, m in zip(model.names, batch.means, strict=True)},
                "converged": _converged(batch.change, batch.flags, settings.tol),
                "iterations": np.asarray(batch.sweeps),
            }
            timings["draws_seconds"] = time.perf_counter() - began
            if linear_response:
                began = time.perf_counter()
                response = linear_response_draws(_whole(model), provider_tuple, etas, means,
                                                 handed, num_draws, key)
                draws["eta_linear_response"] = {
                    n: single(n, r) for n, r in zip(model.names, response, strict=True)}
                timings["linear_response_seconds"] = time.perf_counter() - began
        audited = None
        if audit is not None:
            audited = _audit(model, provider_tuple, etas, means, handed, audit, key,
                             settings)
            timings["audit_seconds"] = audited.seconds
    return _result(model, etas, means, flags, change, visited, iterations, elbos, deltas,
                   settings.tol, timings, draws, audited)


def _audit(model, providers, etas, means, force, audit: Audit, key, settings: LoopSettings
           ) -> AuditResult:
    """`force`: the members whose answer at the fixed point was their fallback's; the
    rectified solve keeps them there (else it would consume network answers that the fixed
    point did not)."""
    log_z = tuple(jnp.zeros(len(e)) for e in etas)
    untracked = settings._replace(track_elbo=False)

    def exact_solve(swapped, tol):
        solved = _whole(_solve_jit(model, swapped, etas, log_z, force, key, None,
                                   untracked._replace(tol=tol), False))
        return solved.etas, solved.means

    return audit_fixed_point(_whole(model), providers, etas, means, audit, key, exact_solve,
                             settings.tol, force)


def audit_result(model: CAVIModel | Model, result: CAVIResult, audit: Audit,
                 providers: dict[str, MomentProvider] | None = None, *,
                 key: PRNGKeyArray | None = None, max_iter: int = _SOLVER.max_iter,
                 tol: float = _SOLVER.tol, damping: float = _SOLVER.damping,
                 accelerate: bool = _SOLVER.accelerate) -> AuditResult:
    """Audit a fixed point that `run_cavi(model, providers)` found (see `run_cavi`'s
    `audit`): another audit (members, seed) of the same solve, without solving again."""
    model = model.build() if isinstance(model, Model) else model
    provider_tuple = _provider_tuple(model, providers)
    audit = audit.check(model, provider_tuple)
    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        etas, means = (tuple(jnp.asarray(np.reshape(d[n], (-1, f.eta_dim)))
                             for n, f in zip(model.names, model.families, strict=True))
                       for d in (result.eta, result.mean_stats))
        solver = parse(SolverSettings, {"max_iter": max_iter, "tol": tol, "damping": damping,
                                        "track_elbo": False, "accelerate": accelerate},
                       "solver")
        force = _fallback_members([result.member_flags[n] for n in model.names],
                                  provider_tuple)
        return _audit(model, provider_tuple, etas, means, force, audit, key,
                      LoopSettings.of(solver))


def _result(model, etas, means, flags, change, box, iterations, elbos, deltas, tol, timings,
            draws, audit=None) -> CAVIResult:
    def shaped(i, a):
        a = np.asarray(a)
        return a[0] if model.sizes[i] is None else a

    names = model.names
    bits = {n: np.asarray(f) for n, f in zip(names, flags, strict=True)}
    counts = {n: {flag.name.lower(): int(np.count_nonzero(b & flag)) for flag in MomentFlag
                  if np.any(b & flag)} for n, b in bits.items()}
    union = {n: flag_names(np.bitwise_or.reduce(b)) for n, b in bits.items()}
    elbo = np.concatenate([elbos[0]] + [e[1:] for e in elbos[1:]])
    return CAVIResult(
        names=names,
        stat_names={n: f.flat_names for n, f in zip(names, model.families, strict=True)},
        eta={n: shaped(i, e) for i, (n, e) in enumerate(zip(names, etas, strict=True))},
        mean_stats={n: shaped(i, m) for i, (n, m) in enumerate(zip(names, means,
                                                                   strict=True))},
        iterations=iterations, converged=bool(_converged(change, flags, tol)),
        elbo=elbo, delta=np.concatenate(deltas), flags=union, flag_counts=counts,
        member_flags=bits,
        visited={n: (np.asarray(lo), np.asarray(hi)) for n, (lo, hi) in zip(names, box,
                                                                              strict=True)},
        timings=timings, draws=draws, audit=audit)
