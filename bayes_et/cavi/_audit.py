"""The audit: a certified CAVI answer from a few exact evaluations (DESIGN.md §8b).

At the network's fixed point eta~ an oracle (closed form, quadrature, Gauss-Hermite or
sampling) answers n members of each audited factor, drawn at random without replacement
(stratified along the members' eta by default, `Sample`). The exact sweep's residual
r = F_exact(eta~) - eta~ lives in the updates of the audited factor's neighbours and is a
population total over its members, r = sum_i B_i delta_i (delta_i = oracle - network at
member i, B_i = d target / d mu_i, exact since the terms are multilinear). Its estimate
sum_{j in S} w_j B_j delta_j (w_j = N_h / n_h) is unbiased under the random draw whatever the
network's error, with variance sum_h N_h^2 (1 - n_h/N_h) s_h^2 / n_h over the strata, plus
sum_j w_j B_j C_j B_j^T for an oracle of Monte-Carlo error C_j (prediction-powered
inference; the algebra of a control variate). With an exact oracle the estimating equation
is solved to its fixed point: the rectified sweeps, in which every update the audited factor
feeds sees the network's answers plus w_j times (oracle - network) at the audited members
(the oracle answering those n members each sweep) - one Newton step from the network's fixed
point is not enough where a poor network's fixed point is far off. With a sampling oracle
(NUTS each sweep would cost too much) one Newton step, eta^ = eta~ + (I - J)^-1 r^, with the
sweep's Jacobian J rectified the same way (the plate's part of J is a population total of
per-member Jacobians: the network's, plus w_j times the oracle's minus the network's at the
audited members). Either way the delta method gives the interval: (I - J)^-1 applied to
the estimate's covariance, with Student's t quantile at its Welch-Satterthwaite degrees of
freedom (a stratum's variance is estimated from one degree of freedom). A census with an
exact oracle is the exact solve: no sampling error, no linearisation error (the interval is
the solver's tolerance).

The same linearisation gives the linear-response band: a function draw's error at eta~,
pushed through (I - J)^-1 (one linear solve per draw instead of a whole solve per draw).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.scipy.sparse.linalg import gmres
from jaxtyping import Array, Float

from bayes_et.settings import SEED_MAX, choice, integer, parse, setting

from ._model import CAVIModel
from ._providers import MomentFlag, MomentProvider, Moments, _nonfinite, on_rows


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """The audit of a CAVI answer: `members` members of each audited factor (all when the
    factor has fewer), drawn without replacement with NumPy's generator `seed`, stratified
    along the members' eta (two per stratum) or by simple random sampling."""

    members: int = setting(30, integer(1, 10**8))
    seed: int = setting(0, integer(0, SEED_MAX))
    design: str = setting("stratified", choice("stratified", "simple"))

Z90 = 1.6448536269514722  # the standard normal's 95% quantile: a two-sided 90% interval
MAX_COLUMNS = 4096  # coordinates of the audited factors' neighbours that one audit solves for
SOLVE_TOL = 1e-10  # GMRES: relative residual of the linear-response solves
SOLVE_RESTART = 30
SOLVE_RESTARTS = 20
GMRES_METHOD = "incremental"  # stops when converged ('batched' runs whole restart cycles)
CENSUS_SLACK = 10.0  # a census's interval: the solve's tol times this (its stopping error,
# tol x rho / (1 - rho) at the sweeps' contraction rho, is 1.7x tol on the plates at rho 0.63)
STEP_SLACK = 1.0  # the narrowest interval after a Newton step, which carries the solver's
# leftover to first order: tol itself (the step's remainder, the Jacobian's error times it)
RECTIFY_TOL = 1e-4  # the rectified sweeps of a sample stop here: the Newton step from their
# end corrects what is left to second order, far inside an interval of sampling error
_AUDIT = AuditSettings()  # the defaults


@dataclasses.dataclass(frozen=True)
class Audit:
    """What to audit: `oracles` maps a factor name to the provider that answers its members
    exactly (ExactMoments) or by sampling (SamplingMoments); `members` (n) members of each
    are drawn without replacement with NumPy's generator `seed` (all of them when N <= n),
    by the sampling `design` (see `Sample`)."""

    oracles: Mapping[str, MomentProvider]
    members: int = _AUDIT.members
    seed: int = _AUDIT.seed
    design: str = _AUDIT.design

    def check(self, model: CAVIModel, providers: tuple[MomentProvider, ...]) -> Audit:
        """The audit checked against the model (ValueError naming the field)."""
        parse(AuditSettings, {"members": self.members, "seed": self.seed,
                              "design": self.design}, "solver.audit")
        if not isinstance(self.oracles, Mapping) or not self.oracles:
            raise ValueError(f"audit.oracles: got {type(self.oracles).__name__}; allowed: a "
                             "non-empty mapping of factor name -> oracle provider")
        for name, oracle in self.oracles.items():
            if name not in model.names:
                raise ValueError(f"audit.oracles: unknown factor {name!r}; the model has "
                                 f"{list(model.names)}")
            family = model.families[model.names.index(name)]
            if not (isinstance(oracle, MomentProvider) and oracle.oracle):
                raise ValueError(f"audit.oracles['{name}']: got {type(oracle).__name__}; "
                                 "allowed: an exact or sampling provider (ExactMoments, "
                                 "SamplingMoments)")
            if oracle.family != family:
                raise ValueError(f"audit.oracles['{name}']: answers {oracle.family.name}; "
                                 f"factor '{name}' is {family.name}")
        for name, provider in zip(model.names, providers, strict=True):
            if provider.oracle and not provider.exact and name not in self.oracles:
                raise ValueError(f"audit: factor '{name}' is answered by sampling; the audit "
                                 "linearises the fixed point and needs every other factor "
                                 "answered exactly or by a network")
        return self


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """The rectified fixed point `eta` with its 90% interval [`lo`, `hi`] (factor name ->
    array shaped as CAVIResult.eta), the same for the mean statistics (`mean_stats`,
    `mean_lo`, `mean_hi`), the network's mean z^2 at the audited members `z2`
    (per audited factor; NaN where no member was answered by the network), the audited
    `members` (indices), the oracle's answers there (`oracle_eta`, `oracle_mean`),
    `method` ('census' where exact oracles answered every member - the exact solve, its
    interval the solver's tolerance -, 'rectified sweeps' with exact oracles, 'newton' with
    a sampling one or where the rectified sweeps diverged) and `seconds`."""

    eta: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    mean_stats: dict[str, np.ndarray]
    mean_lo: dict[str, np.ndarray]
    mean_hi: dict[str, np.ndarray]
    z2: dict[str, float]
    members: dict[str, np.ndarray]
    oracle_eta: dict[str, np.ndarray]
    oracle_mean: dict[str, np.ndarray]
    method: str
    seconds: float

    @property
    def band_scale(self) -> float:
        """sqrt of the largest finite z^2: the factor that recalibrates the network's band
        where the model is (1 when no audited member was answered by a network)."""
        finite = [v for v in self.z2.values() if np.isfinite(v)]
        return float(np.sqrt(max(finite))) if finite else 1.0

    def contains(self, eta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per factor (coordinate, member): whether `eta` lies in the 90% interval."""
        return {name: (self.lo[name] <= np.asarray(eta[name])) & (np.asarray(eta[name])
                                                                  <= self.hi[name])
                for name in self.eta}

    def to_json(self) -> dict[str, Any]:
        """The audit as JSON-ready data (an infinite bound as null)."""
        listed = lambda d: {k: np.where(np.isfinite(v), v, np.nan).tolist()
                            for k, v in d.items()}
        nan_none = lambda x: None if not np.isfinite(x) else float(x)
        return {"eta": listed(self.eta), "lo": _json_bounds(self.lo),
                "hi": _json_bounds(self.hi), "mean_stats": listed(self.mean_stats),
                "mean_lo": _json_bounds(self.mean_lo), "mean_hi": _json_bounds(self.mean_hi),
                "z2": {k: nan_none(v) for k, v in self.z2.items()},
                "members": {k: v.tolist() for k, v in self.members.items()},
                "band_scale": self.band_scale, "method": self.method, "seconds": self.seconds}


def _json_bounds(bounds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Bounds as JSON: an infinite bound (no interval from one audited member) is null."""
    return {k: np.where(np.isfinite(v), v, None).tolist() for k, v in bounds.items()}


# ---------------------------------------------------------------- the linearised fixed point


def _targets(model: CAVIModel, means: tuple) -> tuple:
    """The Jacobi sweep in mean space: every factor's update from the current means."""
    return tuple(model.target(i, means) for i in range(len(model.names)))


@eqx.filter_jit
def jacobians(providers: tuple[MomentProvider, ...], etas: tuple, key,
              force: tuple | None = None) -> tuple:
    """d mean / d eta per member of every factor, as its provider answers (n_i, d_i, d_i);
    `force`: per factor, the members the solve handed to a fallback."""
    force = (None,) * len(etas) if force is None else force
    return tuple(p.jacobian(e, jax.random.fold_in(key, i), force=f).astype(e.dtype)
                 for i, (p, e, f) in enumerate(zip(providers, etas, force, strict=True)))


@eqx.filter_jit
def solve_response(model: CAVIModel, means: tuple, jac: tuple, columns: tuple) -> tuple:
    """X = (I - J)^-1 B for each column B (a state pytree with a leading axis), J the
    Jacobian of the Jacobi sweep at the fixed point: J x = d target / d mu [P x], P the
    per-member Jacobians `jac`. GMRES, matrix-free, one column at a time (memory of one)."""
    def matvec(x):
        tangent = tuple(jnp.einsum("nab,nb->na", p, xi) for p, xi in zip(jac, x, strict=True))
        jx = jax.jvp(lambda m: _targets(model, m), (means,), (tangent,))[1]
        return tuple(a - b for a, b in zip(x, jx, strict=True))

    solve = lambda b: gmres(matvec, b, tol=SOLVE_TOL, atol=0.0, restart=SOLVE_RESTART,
                            maxiter=SOLVE_RESTARTS, solve_method=GMRES_METHOD)[0]
    return jax.lax.map(solve, columns)


def _neighbour_columns(model: CAVIModel, audited: list[int]) -> tuple[list[int], tuple]:
    """The factors whose updates hold an audited factor's mean, and one unit column per
    coordinate of theirs (a state pytree with a leading axis of K columns)."""
    near = sorted(set().union(*(model.neighbours(a) for a in audited)))
    sizes = [e.size for e in model.eta0]
    count = sum(sizes[i] for i in near)
    if count > MAX_COLUMNS:
        raise ValueError(f"audit: the audited factors' updates reach {count} coordinates of "
                         f"other factors ({[model.names[i] for i in near]}); the audit solves "
                         f"for at most {MAX_COLUMNS}")
    columns, start = [], 0
    for i, eta0 in enumerate(model.eta0):
        block = np.zeros((count, *eta0.shape))
        if i in near:
            block.reshape(count, -1)[start:start + eta0.size] = np.eye(eta0.size)
            start += eta0.size
        columns.append(block)
    return near, tuple(columns)


def _flat_near(state: tuple, near: list[int]):
    return jnp.concatenate([jnp.ravel(state[i]) for i in near])


@eqx.filter_jit
def _member_effects(model: CAVIModel, means: tuple, a: int, near: tuple[int, ...], rows):
    """B_j = d target_near / d mu_a[j] at the audited rows: (n, K, d_a) (exact: the targets
    are linear in each factor's means)."""
    def near_targets(mean_a):
        swapped = means[:a] + (mean_a,) + means[a + 1:]
        return _flat_near(_targets(model, swapped), list(near))

    full = jax.jacrev(near_targets)(means[a])  # (K, N_a, d_a)
    return jnp.moveaxis(full[:, rows], 1, 0)


@eqx.filter_jit
def _oracle_jacobian(oracle: MomentProvider, eta, key):
    return oracle.jacobian(eta, key)


@eqx.filter_jit
def _answers(provider: MomentProvider, eta, key, full: bool, force=None):
    return provider.evaluate(eta, None, key, full=full, force=force)


@dataclasses.dataclass(frozen=True)
class Sample:
    """The audited members of one factor. Design 'stratified': the members sorted along the
    leading principal direction of their eta (standardised) and cut into n // 2 strata of
    consecutive members, two drawn from each (the first strata take the remainder), so a
    misfit that varies smoothly with eta - the network's error is a function of eta - is
    sampled evenly and its total estimated with far less variance than by 'simple' random
    sampling (one stratum). `rows` sorted; `weight` per row N_h / n_h (the inverse of its
    inclusion probability); `stratum` per row; `sizes` N_h per stratum."""

    rows: np.ndarray
    weight: np.ndarray
    stratum: np.ndarray
    sizes: np.ndarray

    @property
    def census(self) -> bool:
        return len(self.rows) == int(self.sizes.sum())


def _leading_direction(eta: np.ndarray) -> np.ndarray:
    """Each member's coordinate along the first principal direction of the standardised eta
    (coordinates that do not vary across members, to rounding, left out)."""
    centred = eta - eta.mean(0)
    spread = centred.std(0)
    live = spread > 1e-9 * (1.0 + np.abs(eta).mean(0))
    if not np.any(live):
        return np.zeros(len(eta))
    z = centred[:, live] / spread[live]
    return z @ np.linalg.eigh(z.T @ z)[1][:, -1]


def _draw_members(audit: Audit, eta, a: int) -> Sample:
    """n members of factor `a` (eta: its members' eta at the network's fixed point)."""
    eta = np.asarray(eta, np.float64).reshape(len(eta), -1)
    size = len(eta)
    n = min(audit.members, size)
    rng = np.random.default_rng([audit.seed, a])
    if audit.design == "simple" or n < 4 or n == size:
        groups = [np.arange(size)]
    else:
        groups = np.array_split(np.argsort(_leading_direction(eta), kind="stable"), n // 2)
    takes = np.full(len(groups), n // len(groups))
    takes[:n % len(groups)] += 1
    drawn = [rng.choice(g, t, replace=False) for g, t in zip(groups, takes, strict=True)]
    rows = np.concatenate(drawn)
    stratum = np.repeat(np.arange(len(groups)), takes)
    sizes = np.array([len(g) for g in groups])
    order = np.argsort(rows)
    return Sample(rows[order], (sizes / takes)[stratum][order], stratum[order], sizes)


def _z2(delta, network_cov, oracle_cov, flags) -> float:
    """The network's mean z^2 at the audited members it answered itself."""
    if network_cov is None:
        return float("nan")
    var = np.diagonal(network_cov, axis1=1, axis2=2) + (
        0.0 if oracle_cov is None else np.diagonal(oracle_cov, axis1=1, axis2=2))
    own = ((flags & MomentFlag.ANSWERED_BY_FALLBACK) == 0) & np.all(var > 0, axis=1)
    if not np.any(own):
        return float("nan")
    return float(np.mean(delta[own] ** 2 / var[own]))


class Rectified(MomentProvider):
    """The audited factor's answers as its neighbours' updates see them in the rectified
    solve: the primary's, plus `weight` (N/n at the audited members, 0 elsewhere) times the
    oracle's minus the primary's, so every update the factor feeds holds the audit's
    estimate of the exact population total at the current eta (the oracle answers the n
    audited members each sweep, in blocks: its cost grows with n, not N)."""

    primary: MomentProvider
    audit_oracle: MomentProvider
    weight: Float[Array, " n"]

    @property
    def family(self):
        return self.primary.family

    @property
    def integrable(self) -> bool:
        return False

    def evaluate(self, eta, draw, key, *, full=False, active=None, force=None):
        first = self.primary.evaluate(eta, None, key, full=full, force=force)
        truth = on_rows(lambda rows, live: self.audit_oracle.evaluate(
            rows, None, key, active=live).mean, eta, self.weight > 0, first.mean)
        mean = first.mean + self.weight[:, None] * (truth - first.mean)
        return Moments(mean, first.cov, first.flags | _nonfinite(mean))


def _rectified(provider, oracle, sample: Sample | None, size: int) -> MomentProvider:
    """What the rectified solve uses for a factor: its provider when not audited, the
    oracle itself for a census (the exact solve), else `Rectified`."""
    if oracle is None:
        return provider
    if sample.census:
        return oracle
    return Rectified(provider, oracle, jnp.zeros(size).at[sample.rows].set(sample.weight))


class Audited(NamedTuple):
    """One audited factor's answers at its members: the Sample, the oracle's mean minus the
    fixed point's, the oracle's MC covariance (None: exact), its Jacobian (None: not
    exact), its mean, and the network's full answers there (None: not asked)."""

    sample: Sample
    residual: np.ndarray
    oracle_cov: np.ndarray | None
    oracle_jacobian: np.ndarray | None
    oracle_mean: np.ndarray
    network: Moments | None


def _answers_at(model, providers, oracles, etas, means, rows_of, key,
                network: bool = True) -> dict[int, Audited]:
    """Per audited factor, its answers at its members (the network's only with
    `network`)."""
    out = {}
    for a, sample in rows_of.items():
        rows = sample.rows
        oracle, eta_rows = oracles[a], jnp.asarray(etas[a])[rows]
        truth = _answers(oracle, eta_rows, jax.random.fold_in(key, 7919 + a), True)
        truth_mean = np.asarray(truth.mean, np.float64)
        if not np.all(np.isfinite(truth_mean)):
            bad = int(rows[np.flatnonzero(~np.isfinite(truth_mean).all(1))[0]])
            raise ValueError(f"audit: the oracle of factor '{model.names[a]}' failed at "
                             f"member {bad} (eta {np.asarray(etas[a][bad]).tolist()})")
        net = _answers(providers[a], eta_rows, jax.random.fold_in(key, 104729 + a),
                       True) if network else None
        truth_jac = None if not oracle.exact else np.asarray(
            _oracle_jacobian(oracle, eta_rows, key), np.float64)
        out[a] = Audited(sample, truth_mean - np.asarray(means[a], np.float64)[rows],
                         None if truth.cov is None else np.asarray(truth.cov, np.float64),
                         truth_jac, truth_mean, net)
    return out


def audit_fixed_point(model: CAVIModel, providers: tuple[MomentProvider, ...], etas: tuple,
                      means: tuple, audit: Audit, key, solve: Callable[[tuple], tuple],
                      tol: float, force: tuple) -> AuditResult:
    """Audit the fixed point (etas, means) that `providers` reached (see the module doc).
    `solve(providers, tol)` runs the solver from etas with other providers (and `force`)
    and returns its (etas, means); `tol` is the solver's tolerance; `force`: per factor, the
    members the solve handed to a fallback (the providers answer them so here too)."""
    began = time.perf_counter()
    names, start = model.names, etas
    oracles = {names.index(n): o for n, o in audit.oracles.items()}
    rows_of = {a: _draw_members(audit, etas[a], a) for a in oracles}
    first = _answers_at(model, providers, oracles, etas, means, rows_of, key)
    z2 = {names[a]: _z2(f.residual, None if f.network.cov is None
                        else np.asarray(f.network.cov, np.float64), f.oracle_cov,
                        np.asarray(f.network.flags))
          for a, f in first.items()}
    answers, method, solved = first, "newton", None
    if all(o.exact for o in oracles.values()):
        # iterate the rectified sweeps to their fixed point (one Newton step is not enough
        # where a poor network's fixed point is far off), then the interval there; where
        # they leave the space (N/n times a large misfit), the Newton step from the
        # network's fixed point instead
        swapped = tuple(_rectified(p, oracles.get(i), rows_of.get(i), len(e))
                        for i, (p, e) in enumerate(zip(providers, model.eta0, strict=True)))
        census = all(s.census for s in rows_of.values())
        swept, swept_means = solve(swapped, tol if census else max(tol, RECTIFY_TOL))
        finite = all(np.all(np.isfinite(np.asarray(e))) for e in swept)
        if finite and census:  # the exact solve: its interval is the solver's own error
            method, solved = "census", ((swept, None, None), (swept_means, None, None))
        elif finite:
            etas = swept
            means = tuple(_answers(providers[i], jnp.asarray(etas[i]), key, False,
                                   force[i]).mean
                          if i in oracles else m for i, m in enumerate(swept_means))
            answers = _answers_at(model, providers, oracles, etas, means, rows_of, key,
                                  network=False)  # z^2: the network's at its fixed point
            method = "rectified sweeps"
        else:
            method = "newton (the rectified sweeps diverged)"
    if method != "census":
        solved = _step_and_interval(model, providers, etas, means, force, list(oracles),
                                    answers, key)
    slack = CENSUS_SLACK if method == "census" else STEP_SLACK
    (fixed, lo, hi), (mean, mean_lo, mean_hi) = (_floored(*part, slack * tol)
                                                 for part in solved)
    bad = [names[i] for i, f in enumerate(fixed) if not np.all(np.isfinite(f))]
    if bad:  # never a silent NaN
        raise ValueError(f"audit: the rectified fixed point of factor '{bad[0]}' is not "
                         f"finite ({method}); the network's fixed point is too far off to "
                         "rectify: audit with more members or retrain the network")
    shaped = lambda arrays: {n: (a[0] if model.sizes[i] is None else a)
                             for i, (n, a) in enumerate(zip(names, arrays, strict=True))}
    return AuditResult(shaped(fixed), shaped(lo), shaped(hi), shaped(mean), shaped(mean_lo),
                       shaped(mean_hi), z2, {names[a]: r.rows for a, r in rows_of.items()},
                       {names[a]: np.asarray(start[a], np.float64)[r.rows]
                        for a, r in rows_of.items()},
                       {names[a]: f.oracle_mean for a, f in first.items()}, method,
                       time.perf_counter() - began)


def _step_and_interval(model, providers, etas, means, force, audited, answers, key):
    """One Newton step from a fixed point with the estimated residual, and the delta
    method's 90% intervals: ((eta, lo, hi), (mean, lo, hi)), a tuple per factor each; the
    means move with the providers' Jacobians at the fixed point."""
    near, units = _neighbour_columns(model, audited)
    etas = tuple(jnp.asarray(e) for e in etas)
    means = tuple(jnp.asarray(m) for m in means)
    # the solver's own residual (it stopped at tol): known exactly, one more column
    leftover = tuple(t - e for t, e in zip(_targets(model, means), etas, strict=True))
    columns = tuple(jnp.concatenate([r[None], u], 0) for r, u in zip(leftover, units,
                                                                     strict=True))
    jac = list(jacobians(providers, etas, key, force))
    for a in audited:  # the sweep's Jacobian rectified as its residual is: by the sample
        sample, truth_jac = answers[a].sample, answers[a].oracle_jacobian
        if truth_jac is not None:
            rows, weight = sample.rows, sample.weight[:, None, None]
            jac[a] = jac[a].at[rows].add(weight * (truth_jac - jac[a][rows]))
    solved = solve_response(model, means, tuple(jac), columns)
    count = units[0].shape[0]
    total, parts, dof, known = np.zeros(count), [], [], np.zeros((count, count))
    for a in audited:
        sample, delta, oracle_cov = answers[a].sample, answers[a].residual, answers[a].oracle_cov
        effects = np.asarray(_member_effects(model, means, a, tuple(near),
                                             jnp.asarray(sample.rows)), np.float64)  # (n,K,d)
        d = np.einsum("nkd,nd->nk", effects, delta)
        total += sample.weight @ d
        for h, size in enumerate(sample.sizes):  # without replacement in each stratum,
            d_h = d[sample.stratum == h]         # with the finite-population correction
            n = len(d_h)
            if n < size:
                spread = np.cov(d_h, rowvar=False, ddof=1).reshape(count, count) if n > 1 \
                    else np.full((count, count), np.inf)
                parts.append(size**2 * (1 - n / size) / n * spread)
                dof.append(max(n - 1, 1))
        if oracle_cov is not None:  # the oracle's own Monte-Carlo error (its part not
            known += np.einsum(     # already in the spread of the d)
                "n,nkd,nde,nle->kl", sample.weight, effects, oracle_cov, effects)
    parts = np.asarray(parts).reshape(-1, count, count)
    out = ([], [], []), ([], [], [])
    for e, m, p, x in zip(etas, means, jac, solved, strict=True):
        x, p = np.asarray(x, np.float64), np.asarray(p, np.float64)
        shift = x[0] + np.einsum("k...,k->...", x[1:], total)
        for (centre, lo, hi), value, response in (
                (out[0], np.asarray(e) + shift, x[1:]),
                (out[1], np.asarray(m) + np.einsum("nab,nb->na", p, shift),
                 np.einsum("nab,knb->kna", p, x[1:]))):
            half = _half_widths(response, parts, np.asarray(dof), known)
            centre.append(value)
            lo.append(value - half)
            hi.append(value + half)
    return tuple(tuple(tuple(a) for a in part) for part in out)


def _floored(centre: tuple, lo: tuple | None, hi: tuple | None, floor: float):
    """Per factor (centre, lo, hi) as float64, the interval never narrower than the solver's
    own error, `floor` relative (all of it where lo, hi are None: a census)."""
    out = ([], [], [])
    for i, value in enumerate(centre):
        value = np.asarray(value, np.float64)
        least = floor * np.maximum(1.0, np.abs(value))
        out[0].append(value)
        out[1].append(np.minimum(value - least, value if lo is None else lo[i]))
        out[2].append(np.maximum(value + least, value if hi is None else hi[i]))
    return tuple(tuple(a) for a in out)


def _half_widths(response, parts, dof, known):
    """The 90% half-width of each coordinate c of a factor (response (K, n, d): its
    derivative by the K residual coordinates): sqrt(v_c) times Student's t quantile at the
    Welch-Satterthwaite degrees of freedom of v_c = sum_h r_c' V_h r_c + r_c' V_mc r_c
    (each stratum's part V_h estimated from its n_h - 1 degrees of freedom, the oracle's
    Monte-Carlo part known). A few strata that hold most of the variance - the network's
    error heavy-tailed in eta - leave few degrees of freedom and a wider interval; many
    alike, the normal quantile."""
    with np.errstate(invalid="ignore", over="ignore"):
        var = np.einsum("kna,kl,lna->na", response, known, response)
        spread = np.zeros_like(var)  # sum_h (r' V_h r)^2 / (n_h - 1)
        for part, df in zip(parts, dof, strict=True):
            each = np.einsum("kna,kl,lna->na", response, part, response)
            var, spread = var + each, spread + each**2 / df
        df = var**2 / spread
    ok = np.isfinite(df) & (df > 0)
    quantile = np.where(ok, scipy.stats.t.ppf(0.95, np.where(ok, df, 1.0)), Z90)
    return quantile * np.sqrt(np.where(np.isnan(var), np.inf, np.maximum(var, 0.0)))


def linear_response_draws(model: CAVIModel, providers: tuple[MomentProvider, ...],
                          etas: tuple, means: tuple, force: tuple, num_draws: int, key
                          ) -> tuple:
    """The fixed point under each of `num_draws` function draws, to first order: the draw's
    error at the fixed point, d mu_s = f_s(eta~) - f(eta~) for every provider with draws,
    pushed through (I - J)^-1 d target / d mu: one linear solve per draw. Per factor
    (S, n_i, d_i). `force`: per factor, the members the solve handed to a fallback."""
    etas = tuple(jnp.asarray(e) for e in etas)
    means = tuple(jnp.asarray(m) for m in means)
    jac = jacobians(providers, etas, key, force)
    columns = _draw_columns(model, providers, etas, means, force, jnp.arange(num_draws), key)
    solved = solve_response(model, means, jac, columns)
    return tuple(np.asarray(e)[None] + np.asarray(x) for e, x in zip(etas, solved,
                                                                      strict=True))


@eqx.filter_jit
def _draw_columns(model, providers, etas, means, force, draws, key):
    def one(draw):
        error = tuple(
            (p.evaluate(e, draw, key, force=f).mean - m) if p.num_draws else jnp.zeros_like(m)
            for p, e, m, f in zip(providers, etas, means, force, strict=True))
        return jax.jvp(lambda m: _targets(model, m), (means,), (error,))[1]

    return jax.lax.map(one, draws)
