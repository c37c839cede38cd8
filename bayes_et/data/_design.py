"""Where in eta to put the training points: uniform, log-uniform or a grid, inside a box."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayes_et.expfam import ExponentialFamily

DESIGNS = ("uniform", "log_uniform", "grid", "chart")


def _candidates(design: str, lo: np.ndarray, hi: np.ndarray, count: int, rng) -> np.ndarray:
    if design in ("uniform", "chart"):
        return rng.uniform(lo, hi, size=(count, lo.size))
    # log-uniform in |eta|, keeping the sign of the box (both bounds share it)
    sign = np.sign(lo)
    a, b = np.log(np.abs(lo)), np.log(np.abs(hi))
    return sign * np.exp(rng.uniform(np.minimum(a, b), np.maximum(a, b), size=(count, lo.size)))


def design_eta(
    family: ExponentialFamily,
    num: int,
    *,
    design: str = "uniform",
    box: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """`num` valid eta (num, eta_dim) inside `box` (default: the family's eta_bounds()).

    uniform / log_uniform: independent draws, invalid ones rejected (never replaced by
    points outside the box). chart: uniform in the family's chart coordinates (`Chart`:
    log-spaced near an edge). grid: `num` points per axis, the invalid ones dropped.
    """
    if design not in DESIGNS:
        raise ValueError(f"eta.design: {design!r} is not allowed; allowed: {list(DESIGNS)}")
    lo, hi = (np.asarray(b, float) for b in (box if box is not None else family.eta_bounds()))
    with np.errstate(over="ignore", invalid="ignore"):
        finite = lo.shape == hi.shape and np.all(np.isfinite(hi - lo))
    if lo.shape != (family.eta_dim,) or not finite or np.any(lo > hi):
        raise ValueError(f"eta.box: need finite lo <= hi (hi - lo finite) of shape "
                         f"({family.eta_dim},); got {lo}, {hi}")
    if design == "log_uniform" and np.any(lo * hi <= 0):
        bad = [family.flat_names[i] for i in np.flatnonzero(lo * hi <= 0)]
        raise ValueError(f"eta.box: log_uniform needs bounds of one sign, not 0; see {bad}")
    to_eta = None
    if design == "chart":
        lo, hi, to_eta = _chart_box(family, lo, hi)
    if design == "grid":
        axes = [np.linspace(a, b, num) for a, b in zip(lo, hi, strict=True)]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, lo.size)
        points = points[np.asarray(family.is_valid_eta(points))]
        if len(points) == 0:
            _raise_outside(family, lo, hi)
        return points
    rng = np.random.default_rng(seed)
    out, tried = [], 0
    while sum(len(o) for o in out) < num:
        batch = _candidates(design, lo, hi, max(2 * num, 1024), rng)
        if to_eta is not None:
            batch = to_eta(batch)
        tried += len(batch)
        out.append(batch[np.asarray(family.is_valid_eta(batch))])
        if tried >= 1000 * max(num, 100) and sum(len(o) for o in out) < num:
            _raise_outside(family, lo, hi)
    return np.concatenate(out)[:num]


def _chart_box(family: ExponentialFamily, lo: np.ndarray, hi: np.ndarray):
    """The box in the family's chart coordinates (each monotone on its own), and the map
    from there back to eta."""
    if family.chart is None:
        raise ValueError(f"eta.design: 'chart' needs a family that declares one; "
                         f"{family.name} does not (allowed: uniform, log_uniform, grid)")
    coords = jax.vmap(family.chart.coords)
    with jax.enable_x64(True):
        ends = np.asarray(coords(jnp.asarray(np.stack([lo, hi]), jnp.float64)))
    if not np.all(np.isfinite(ends)):
        raise ValueError(f"eta.box: [{lo}, {hi}] reaches an edge of {family.name}'s chart "
                         f"({family.chart.name}); allowed: a box strictly inside it")

    def to_eta(z):
        with jax.enable_x64(True):
            return np.asarray(jax.vmap(family.chart.eta_from)(jnp.asarray(z, jnp.float64)))

    return ends.min(0), ends.max(0), to_eta


def _raise_outside(family, lo, hi):
    centre = (lo + hi) / 2
    try:
        family.validate_eta(centre, "eta.box")
    except ValueError as err:
        raise ValueError(
            f"eta.box lies (almost) outside the natural-parameter space: {err}"
        ) from None
    raise ValueError("eta.box lies (almost) outside the natural-parameter space of " + family.name)
