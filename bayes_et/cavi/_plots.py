"""Figure of a CAVI run: ELBO and convergence traces, posterior densities with bands."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayes_et._files import save_figure
from bayes_et.expfam import ExponentialFamily
from bayes_et.expfam._quadrature import _coarse_grid
from bayes_et.train._plots import plt

from ._solver import band_limits

GRID = 400
KEEP_NATS = 12.0


def density_grid(family: ExponentialFamily, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x grid (GRID,) over where q(x | eta) is within KEEP_NATS of its peak (one period on
    the circle), and q there."""
    if family.support.periodic:
        x = np.linspace(-np.pi, np.pi, GRID)
        return x, density_on(family, eta, x)
    with jax.enable_x64(True):
        u = _coarse_grid(family, jnp.float64)  # the quadrature's search grid
        log_w = jax.vmap(lambda v: family.log_density_unconstrained(v, jnp.asarray(eta)))(u)
        log_w = np.where(np.isfinite(log_w), np.asarray(log_w), -np.inf)
        keep = np.flatnonzero(log_w > log_w.max() - KEEP_NATS)
        u = np.asarray(u)
        u_lo, u_hi = u[max(keep[0] - 1, 0)], u[min(keep[-1] + 1, len(u) - 1)]
        x = np.asarray(family.support.forward(jnp.linspace(u_lo, u_hi, GRID)))
    return x, density_on(family, eta, x)


def density_on(family: ExponentialFamily, eta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """q(x | eta) on the grid x, normalised on it (trapezoid rule)."""
    with jax.enable_x64(True):
        log_q = np.asarray(family.log_unnormalized(jnp.asarray(x), jnp.asarray(eta)))
    q = np.exp(log_q - log_q.max())
    return q / np.trapezoid(q, x)


def plot_cavi(result, families: dict[str, ExponentialFamily], path: Path,
              title: str = "") -> Path:
    """ELBO per sweep, largest relative change of eta per sweep (log scale), and for each
    single factor with scalar x its density at the fixed point, with the 90% band over the
    function draws' fixed points when there are draws; for a plate, its members' posterior
    means of the first statistic (sorted), with their bands."""
    scalar = [n for n in result.names if families[n].x_shape == ()]
    cols = 2 + len(scalar)
    fig, axes = plt.subplots(1, cols, figsize=(3.6 * cols, 3.4))
    ax_elbo, ax_delta = axes[0], axes[1]
    if np.any(np.isfinite(result.elbo)):
        ax_elbo.plot(np.arange(len(result.elbo)), result.elbo, "o-", ms=3)
    else:
        ax_elbo.text(0.5, 0.5, "no ELBO\n(sampling providers)", ha="center",
                     transform=ax_elbo.transAxes)
    ax_elbo.set(xlabel="sweep (0 = start)", ylabel="ELBO (+ const)", title="ELBO")
    ax_delta.semilogy(np.arange(1, len(result.delta) + 1), result.delta, "o-", ms=3)
    ax_delta.set(xlabel="sweep", ylabel="max |d eta| / max(1, |eta|)",
                 title="converged" if result.converged else "NOT converged")
    for ax, name in zip(axes[2:], scalar, strict=True):
        family = families[name]
        if result.eta[name].ndim == 2:
            _plot_plate(ax, result, name, family)
            continue
        x, q = density_grid(family, result.eta[name])
        if result.draws is not None:
            dens = np.stack([density_on(family, e, x) for e in result.draws["eta"][name]])
            lo, hi = band_limits(dens)
            ax.fill_between(x, np.maximum(lo, 0.0), hi, color="C1", alpha=0.35, lw=0,
                            label="90% band (function draws)")
        ax.plot(x, q, color="C0", label="q at the fixed point")
        ax.set(xlabel=name, ylabel="density", title=f"q({name}): {type(family).__name__}")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_plate(ax, result, name: str, family: ExponentialFamily) -> None:
    mean = result.mean_stats[name][:, 0]
    order = np.argsort(mean)
    rank = np.arange(len(mean))
    if result.draws is not None:
        lo, hi = band_limits(result.draws["mean_stats"][name][..., 0])
        ax.fill_between(rank, lo[order], hi[order], color="C1", alpha=0.35, lw=0,
                        label="90% band (function draws)")
    ax.plot(rank, mean[order], color="C0", lw=1, label="fixed point")
    counts = result.flag_counts.get(name, {})
    note = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no flags"
    ax.set(xlabel="member (sorted)", ylabel=f"E[{family.flat_names[0]}]",
           title=f"plate {name}: {len(mean)} x {type(family).__name__}\n{note}")
    ax.legend(fontsize=7)
