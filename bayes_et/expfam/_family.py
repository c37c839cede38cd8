"""The ExponentialFamily base class: log p(x | eta) = eta . T(x) + log h(x) - A(eta)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._charts import Chart
from ._supports import Support

MAX_DIM = 1000  # x in R^d: a (d, d) array per eta stays well within memory


class VectorFamily:
    """Mixin for families on R^d with a dimension argument d (x_shape = (d,))."""

    def __init__(self, d: int = 1):
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM:
            raise ValueError(f"{type(self).__name__}: d must be an int in [1, {MAX_DIM}]; "
                             f"got {d!r}")
        self.d = d

    @property
    def x_shape(self):
        return (self.d,)


@functools.cache
def _batched_kernel(family: ExponentialFamily, method: str) -> Callable:
    """One jitted, vmapped closed form per (family, method): compiled once, reused."""
    return jax.jit(jax.vmap(getattr(family, method)))


NUMERICAL_ROUTES = (
    "quadrature_moments(family, eta) for one-dimensional x, "
    "or bayes_et.data.mcmc_moments otherwise"
)


class ExponentialFamily:
    """Base class. A subclass declares, as plain class attributes or properties:

    - ``x_shape``: shape of one x (``()`` for scalars);
    - ``stat_shapes``: ordered mapping statistic name -> shape; this order flattens eta and mu_T;
    - ``support``: a `Support` (applied per coordinate of x);
    - ``_compute_stats(x) -> dict`` for one x;

    and optionally ``log_base_measure(x)``, ``eta_constraints(eta)``, ``breakpoints``,
    ``squares`` (statistics that are the square of another), ``chart`` (a `Chart`),
    (kinks of the density, for quadrature), ``eta_box`` (the
    default eta box: statistic name -> (lo, hi)), and single-eta closed forms
    ``_log_partition``, ``_mean_stats``, ``_fisher`` (flat eta of shape (eta_dim,)).
    With only ``_log_partition`` given, mean and Fisher follow by differentiation.
    """

    x_shape: tuple[int, ...] = ()
    stat_shapes: dict[str, tuple[int, ...]]
    support: Support
    eta_box: dict[str, tuple[float, float]] | None = None
    breakpoints: tuple[float, ...] = ()
    """x values where the density has a kink; quadrature splits its panels there."""
    chart: Chart | None = None
    """Coordinates in which the moment map is smooth (`Chart`): networks train in them."""
    squares: dict[str, str] = {}
    """Scalar statistics that are the square of another: {"x2": "x"} says T_x2 = T_x^2, so
    E[T_x2] = mu_x^2 + d mu_x / d eta_x (a variance is a derivative of the moment map)."""

    # ----- to implement ---------------------------------------------------------------
    def _compute_stats(self, x: Array) -> dict[str, Array]:
        raise NotImplementedError(f"{self.name} must implement _compute_stats(x)")

    def log_base_measure(self, x: Array) -> Float[Array, ""]:
        """log h(x) for one x; 0 unless a family says otherwise."""
        return jnp.zeros((), jnp.result_type(x, float))

    def eta_constraints(self, eta: dict[str, Array]) -> dict[str, Bool[Array, ...]]:
        """Named conditions for a proper density, e.g. {"eta['x2'] < 0": eta['x2'] < 0};
        each maps to a boolean array over the batch axes. Empty when unknown."""
        return {}

    # ----- identity ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The family's repr, e.g. 'Quartic()' or 'MultivariateNormal(d=3)'."""
        return repr(self)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    # ----- shapes and flattening --------------------------------------------------------
    @property
    def stat_names(self) -> tuple[str, ...]:
        """Statistic names in flattening order."""
        return tuple(self.stat_shapes)

    @property
    def stat_sizes(self) -> tuple[int, ...]:
        """Flat size of each statistic, in order."""
        return tuple(math.prod(s) for s in self.stat_shapes.values())

    @property
    def eta_dim(self) -> int:
        """Length of the flat eta and mu_T: the sum of the statistic sizes."""
        return sum(self.stat_sizes)

    @property
    def flat_names(self) -> tuple[str, ...]:
        """One label per flat coordinate, e.g. ``x2`` or ``xxT[1]``."""
        labels = []
        for name, size in zip(self.stat_names, self.stat_sizes, strict=True):
            shape = self.stat_shapes[name]
            labels += [name] if shape == () else [f"{name}[{i}]" for i in range(size)]
        return tuple(labels)

    def flatten_stats_or_eta(self, values: dict[str, Array]) -> Float[Array, "*batch eta_dim"]:
        """dict of statistic arrays (*batch, *shape) -> flat array (*batch, eta_dim)."""
        missing = set(self.stat_names) - set(values)
        if missing:
            raise ValueError(f"{self.name}: missing statistics {sorted(missing)}")
        first, shape0 = self.stat_names[0], self.stat_shapes[self.stat_names[0]]
        batch = jnp.shape(values[first])[: jnp.ndim(values[first]) - len(shape0)]
        parts = []
        for name, size in zip(self.stat_names, self.stat_sizes, strict=True):
            expected = (*batch, *self.stat_shapes[name])
            value = jnp.asarray(values[name])
            if value.shape != expected:
                raise ValueError(
                    f"{self.name}: statistic '{name}' expected shape {expected}, got {value.shape}"
                )
            parts.append(jnp.reshape(value, (*batch, size)))
        return jnp.concatenate(parts, axis=-1)

    def unflatten_stats_or_eta(self, flat: Array) -> dict[str, Array]:
        """flat array (*batch, eta_dim) -> dict of (*batch, *shape)."""
        flat = self.check_eta_shape(flat, "flat")
        offsets = np.cumsum((0, *self.stat_sizes))
        return {
            name: jnp.reshape(flat[..., a:b], (*flat.shape[:-1], *self.stat_shapes[name]))
            for name, a, b in zip(self.stat_names, offsets[:-1], offsets[1:], strict=True)
        }

    def check_eta_shape(self, eta, field: str = "eta") -> Array:
        """eta as an array of shape (..., eta_dim); ValueError naming `field` otherwise."""
        eta = jnp.asarray(eta)
        if eta.ndim == 0 or eta.shape[-1] != self.eta_dim:
            raise ValueError(
                f"{self.name}: {field} must have shape (..., {self.eta_dim}) "
                f"(statistics {list(self.flat_names)}); got {eta.shape}"
            )
        return eta

    def _batched(self, fn: Callable, x: Array, core_ndim: int) -> Array:
        """Apply a one-item function over any leading batch axes of x."""
        batch = x.shape[: x.ndim - core_ndim]
        flat = jnp.reshape(x, (-1, *x.shape[x.ndim - core_ndim :]))
        out = jax.vmap(fn)(flat)
        return jax.tree_util.tree_map(lambda o: jnp.reshape(o, (*batch, *o.shape[1:])), out)

    # ----- statistics and densities -----------------------------------------------------
    def compute_stats(self, x: Array, flatten: bool = True):
        """T(x) for x of shape (*batch, *x_shape): flat (*batch, eta_dim) or a dict."""
        x = jnp.asarray(x)
        if x.shape[x.ndim - len(self.x_shape) :] != tuple(self.x_shape):
            raise ValueError(
                f"{self.name}: x must have shape (..., {', '.join(map(str, self.x_shape))}) "
                f"(x_shape {self.x_shape}); got {x.shape}"
            )
        stats = self._batched(self._compute_stats, x, len(self.x_shape))
        return self.flatten_stats_or_eta(stats) if flatten else stats

    def log_unnormalized(self, x: Array, eta: Array) -> Float[Array, "*batch"]:
        """eta . T(x) + log h(x), broadcasting leading axes of x and eta."""
        stats = self.compute_stats(x)
        eta = self.check_eta_shape(eta)
        log_h = self._batched(self.log_base_measure, jnp.asarray(x), len(self.x_shape))
        return jnp.sum(stats * eta, axis=-1) + log_h

    def stats_from_unconstrained(self, u: Array) -> Float[Array, " eta_dim"]:
        """Flat T(x(u)) for one unconstrained u; override for precision near the support's
        edges (e.g. Beta's log(1 - x) as log_sigmoid(-u))."""
        return self.flatten_stats_or_eta(self._compute_stats(self.support.forward(u)))

    def log_density_unconstrained(self, u: Array, eta: Array) -> Float[Array, ""]:
        """Unnormalised log density of one u: eta . T + log h + log|dx/du| (summed)."""
        x = self.support.forward(u)
        return (
            jnp.dot(self.stats_from_unconstrained(u), eta)
            + self.log_base_measure(x)
            + jnp.sum(self.support.log_det_jacobian(u))
        )

    # ----- the natural-parameter space --------------------------------------------------
    def eta_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Default eta box for configs: flat (lo, hi), each of shape (eta_dim,)."""
        if self.eta_box is None:
            raise ValueError(f"{self.name} has no default eta box: give one in the config")
        lo, hi = [], []
        for name, size in zip(self.stat_names, self.stat_sizes, strict=True):
            a, b = self.eta_box[name]
            lo += list(np.broadcast_to(np.asarray(a, float), size))
            hi += list(np.broadcast_to(np.asarray(b, float), size))
        return np.array(lo), np.array(hi)

    def is_valid_eta(self, eta: Array) -> Bool[Array, "*batch"]:
        """True where eta (*batch, eta_dim) gives a proper density."""
        eta = self.check_eta_shape(eta)
        valid = jnp.all(jnp.isfinite(eta), axis=-1)
        for ok in self.eta_constraints(self.unflatten_stats_or_eta(eta)).values():
            valid = valid & jnp.broadcast_to(ok, valid.shape)
        return valid

    def validate_eta(self, eta, field: str = "eta") -> Array:
        """Shape-check eta; eagerly raise ValueError naming each violated constraint."""
        eta = self.check_eta_shape(eta, field)
        if isinstance(eta, jax.core.Tracer):
            return eta
        if not bool(jnp.all(jnp.isfinite(eta))):
            bad = np.argwhere(~np.isfinite(np.asarray(eta)))[0]
            raise ValueError(f"{self.name}: {field} has a non-finite entry at index {tuple(bad)}")
        for rule, ok in self.eta_constraints(self.unflatten_stats_or_eta(eta)).items():
            ok = np.broadcast_to(np.asarray(ok), eta.shape[:-1])
            if not ok.all():
                where = tuple(int(i) for i in np.argwhere(~ok)[0])
                raise ValueError(
                    f"{self.name}: {field} is outside the natural-parameter space: "
                    f"{rule} is violated ({int((~ok).sum())} of {ok.size} rows"
                    + (f", first at batch index {where}" if where else "")
                    + ")"
                )
        return eta

    # ----- closed forms -----------------------------------------------------------------
    def _log_partition(self, eta: Array) -> Float[Array, ""]:
        raise NotImplementedError(
            f"{self.name} has no closed-form log_partition: use {NUMERICAL_ROUTES}"
        )

    def _mean_stats(self, eta: Array) -> Float[Array, " eta_dim"]:
        if not self.has_log_partition:
            raise NotImplementedError(
                f"{self.name} has no closed-form mean_stats: use {NUMERICAL_ROUTES}"
            )
        return jax.grad(self._log_partition)(eta)

    def _fisher(self, eta: Array) -> Float[Array, "eta_dim eta_dim"]:
        if not self.has_log_partition:
            raise NotImplementedError(
                f"{self.name} has no closed-form fisher: use {NUMERICAL_ROUTES}"
            )
        hessian = jax.hessian(self._log_partition)(eta)
        return 0.5 * (hessian + hessian.T)

    @property
    def has_log_partition(self) -> bool:
        """True when the subclass gives A(eta) in closed form."""
        return type(self)._log_partition is not ExponentialFamily._log_partition

    @property
    def has_closed_form(self) -> bool:
        """True when mean_stats and fisher are known without numerical integration."""
        base = ExponentialFamily
        return self.has_log_partition or (
            type(self)._mean_stats is not base._mean_stats
            and type(self)._fisher is not base._fisher
        )

    def _closed(self, method: str, eta) -> Array:
        eta = self.validate_eta(eta)
        flat = jnp.reshape(eta, (-1, self.eta_dim))
        out = _batched_kernel(self, method)(flat)
        out = jnp.reshape(out, (*eta.shape[:-1], *out.shape[1:]))
        valid = self.is_valid_eta(eta)
        return jnp.where(jnp.reshape(valid, valid.shape + (1,) * (out.ndim - valid.ndim)),
                         out, jnp.nan)

    def log_partition(self, eta: Float[Array, "*batch eta_dim"]) -> Float[Array, "*batch"]:
        """A(eta) in closed form (NaN under jit where eta is invalid)."""
        return self._closed("_log_partition", eta)

    def mean_stats(self, eta: Float[Array, "*batch eta_dim"]) -> Float[Array, "*batch eta_dim"]:
        """mu_T(eta) = E[T(x) | eta] in closed form."""
        return self._closed("_mean_stats", eta)

    def fisher(self, eta: Float[Array, "*batch eta_dim"]) -> Float[Array, "*batch eta_dim eta_dim"]:
        """Cov_eta[T(x)] = Hessian of A in closed form."""
        return self._closed("_fisher", eta)
