"""Moments of T(x) by BlackJAX NUTS or ChEES-HMC, with diagnostics and a quality gate."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from bayes_et.expfam import ExponentialFamily
from bayes_et.settings import choice, fail, integer, number, parse, setting

from ._dataset import DataFlag
from ._kernels import KERNELS
from ._sharding import eta_mesh, map_over_eta


class MomentEstimate(NamedTuple):
    """Monte-Carlo moments of T(x) for a batch of n eta (NumPy, float64)."""

    mu_T: np.ndarray  # (n, k)
    cov_TT: np.ndarray  # (n, k, k)
    ess: np.ndarray  # (n, k) effective sample size per statistic, all chains together
    rhat: np.ndarray  # (n, k) split R-hat per statistic
    flags: np.ndarray  # (n,) bitwise OR of DataFlag (0: passed the quality gate)
    num_draws: np.ndarray  # (n,) draws per chain of the run that was kept


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"mcmc_moments: {name} must be an int >= {minimum}; got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """MCMC on the unconstrained space: the kernel (NUTS or ChEES-HMC), chains per eta,
    warm-up and kept draws, and the quality gate (R-hat, ESS) with its re-runs."""

    kernel: str = setting("nuts", choice(*KERNELS))
    num_chains: int = setting(4, integer(2, 1024))
    num_warmup: int = setting(500, integer(1, 10**6))
    num_samples: int = setting(1000, integer(4, 10**7))
    target_accept: float = setting(0.8, number(0.0, 1.0, low_open=True, high_open=True))
    rhat_max: float = setting(1.01, number(1.0, 10.0, low_open=True))
    ess_min: float = setting(400.0, number(0.0))
    max_retries: int = setting(2, integer(0, 10))

    def validate(self, key: str) -> None:
        """The check across fields (run by `parse`): the ESS gate within reach (HMC can beat
        independent draws, but not by 10x: a gate above that flags every eta)."""
        most = 10 * self.num_chains * self.num_samples * 2**self.max_retries
        if self.ess_min > most:
            fail(f"{key}.ess_min" if key else "ess_min", self.ess_min,
                 f"at most 10 x num_chains x num_samples x 2^max_retries = {most} (else "
                 "every eta is flagged)")


RERUN_ROWS = 4  # eta per device in a re-run's program (one at a time: no lanes)


class _Programs(NamedTuple):
    """Per-device programs of one family and sampler: `first` warms up and draws the first
    block, `more` continues chains by one block."""

    first: Callable
    more: Callable


@functools.cache
def _programs(family: ExponentialFamily, sampler: SamplerSettings, block: int) -> _Programs:
    """`first`: (eta (m, k), ids (m,), key) -> (chains, T draws (m, chains, S, k)), the m eta
    in blocks of `block` (vmapped inside a block, blocks in sequence: an eta's arithmetic
    depends only on its lane in the block, and XLA's vectorised code is lane-dependent in
    the last bit, which a sampler amplifies, so the draws do not depend on how eta are
    spread over devices and chunks of a multiple of `block`).

    `more`: (eta, ids, chains, block index, key) -> (chains, T draws), one eta after
    another (no lanes at all), the same program for every re-run.

    An eta's key is fold_in(key, eta_id), split into its starts', warm-up's and draws'
    keys; block b of its draws uses fold_in(draws' key, b).
    """
    kernel = KERNELS[sampler.kernel](
        sampler.num_warmup, sampler.target_accept,
        horizon=sampler.num_samples * 2**sampler.max_retries)
    u_shape = family.support.u_shape(family.x_shape)

    def draw_block(eta, eta_id, chains, index, key):
        log_density = lambda u: family.log_density_unconstrained(u, eta)
        draw_key = jax.random.split(jax.random.fold_in(key, eta_id), 3)[2]

        def step(chains, k):
            chains, _ = kernel.step(log_density, k, chains)
            return chains, jax.vmap(family.stats_from_unconstrained)(chains.state.position)

        keys = jax.random.split(jax.random.fold_in(draw_key, index), sampler.num_samples)
        chains, draws = jax.lax.scan(step, chains, keys)
        return chains, jnp.swapaxes(draws, 0, 1)

    def first_one(eta, eta_id, key):
        start_key, warm_key, _ = jax.random.split(jax.random.fold_in(key, eta_id), 3)
        starts = jax.random.normal(start_key, (sampler.num_chains, *u_shape))
        log_density = lambda u: family.log_density_unconstrained(u, eta)
        chains = kernel.warmup(log_density, warm_key, starts)
        return draw_block(eta, eta_id, chains, 0, key)

    def first(eta, ids, key):
        blocks = (eta.reshape(-1, block, eta.shape[-1]), ids.reshape(-1, block))
        out = jax.lax.map(lambda b: jax.vmap(first_one, (0, 0, None))(*b, key), blocks)
        return jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:]), out)

    def more(eta, ids, chains, index, key):
        return jax.lax.map(lambda row: draw_block(*row, index, key), (eta, ids, chains))

    return _Programs(first, more)


@jax.jit
def _diagnostics(draws):
    """Per-statistic ESS and split R-hat of (n, chains, draws, k) T draws."""
    per_eta = lambda d: (
        blackjax.diagnostics.effective_sample_size(d, chain_axis=0, sample_axis=1),
        blackjax.diagnostics.potential_scale_reduction(d, chain_axis=0, sample_axis=1))
    return jax.vmap(per_eta)(draws)


def _estimate(draws: np.ndarray, sampler: SamplerSettings) -> MomentEstimate:
    """The moments of (n, chains, draws, k) T draws, and the quality gate's flags."""
    ess, rhat = (np.asarray(a, np.float64) for a in _diagnostics(draws))
    n, _, num_draws, k = draws.shape
    flat = draws.astype(np.float64).reshape(n, -1, k)
    mu = flat.mean(axis=1)
    centred = flat - mu[:, None, :]
    cov = np.einsum("nsi,nsj->nij", centred, centred) / flat.shape[1]
    finite = np.isfinite(mu).all(1) & np.isfinite(ess).all(1) & np.isfinite(rhat).all(1)
    flags = (
        np.where((rhat > sampler.rhat_max).any(1), DataFlag.RHAT, 0)
        | np.where((ess < sampler.ess_min).any(1), DataFlag.ESS, 0)
        | np.where(finite, 0, DataFlag.NONFINITE)
    ).astype(np.int32)
    return MomentEstimate(mu, cov, ess, rhat, flags, np.full(n, num_draws))


def _rows(tree, rows: np.ndarray):
    return jax.tree_util.tree_map(lambda a: a[rows], tree)


def _continue(programs: _Programs, mesh, eta, ids, chains, index: int, key):
    """One more block of draws for every row, RERUN_ROWS eta per device at a time (one
    program shape for any number of rows)."""
    rows = mesh.size * RERUN_ROWS
    parts = [map_over_eta(programs.more, mesh, eta[s:s + rows], ids[s:s + rows],
                          jax.tree_util.tree_map(lambda a, s=s: a[s:s + rows], chains),
                          replicated=(jnp.int32(index), key), block=RERUN_ROWS)
             for s in range(0, len(eta), rows)]
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)


def mcmc_moments(
    family: ExponentialFamily,
    eta: Float[Array, "n eta_dim"],
    key: PRNGKeyArray,
    sampler: SamplerSettings | Mapping | None = None,
    *,
    eta_ids: np.ndarray | None = None,
    devices=None,
    block: int = 256,
) -> MomentEstimate:
    """Moments of T(x) at each eta by MCMC on the support's unconstrained space, with
    `sampler`'s settings (a SamplerSettings, used as it is, or a mapping of them, checked
    here; None: the defaults).

    Each eta gets `num_chains` chains from independent N(0, 1) starts. `kernel`: ``nuts``
    (each chain with its own window adaptation of step size and diagonal mass) or
    ``chees`` (jittered HMC, step size, trajectory length and diagonal mass adapted across
    the eta's chains together by ChEES; all chains take the same leapfrog steps, so a
    batch runs in lockstep). Each eta's keys come from fold_in(key, eta_id); with eta in
    blocks of `block`, results do not depend on the number of devices nor on chunking in
    multiples of `block` (no key is reused across chunks). ESS and split R-hat are per
    statistic (blackjax.diagnostics). An eta failing the gate (R-hat > rhat_max or
    ESS < ess_min) continues its chains to twice the draws, up to `max_retries` times (in
    blocks of `num_samples` draws, by one program compiled once); if it still fails it
    keeps its flag. The eta batch is sharded over `devices` (default: all) and
    runs in blocks of `block` eta per device (raise it on a GPU).
    """
    eta = np.asarray(family.validate_eta(np.asarray(eta, np.float64)), np.float64)
    if eta.ndim != 2 or len(eta) == 0:
        raise ValueError(
            f"mcmc_moments: eta must have shape (n, {family.eta_dim}) with n >= 1; "
            f"got {eta.shape}"
        )
    checked = parse(SamplerSettings, sampler, "sampler")
    block, mesh = _check_count("block", block), eta_mesh(devices)
    ids = np.arange(len(eta)) if eta_ids is None else np.asarray(eta_ids)
    if ids.shape != (len(eta),):
        raise ValueError(f"mcmc_moments: eta_ids must have shape ({len(eta)},); got {ids.shape}")
    programs = _programs(family, checked, block)
    eta, ids = eta.astype(np.float32), ids.astype(np.int32)
    chains, draws = map_over_eta(programs.first, mesh, eta, ids, replicated=(key,), block=block)
    result = _estimate(draws, checked)
    failed = np.flatnonzero(result.flags)
    (chains, draws), index = _rows((chains, draws), failed), 1
    for attempt in range(1, checked.max_retries + 1):
        if failed.size == 0:
            break
        more = [draws]
        for _ in range(2 ** (attempt - 1)):  # to twice the draws of the last attempt
            chains, new = _continue(programs, mesh, eta[failed], ids[failed], chains, index, key)
            more.append(new)
            index += 1
        draws = np.concatenate(more, axis=2)
        retry = _estimate(draws, checked)
        fields = [np.array(f) for f in result]
        for field, new in zip(fields, retry, strict=True):
            field[failed] = new
        result = MomentEstimate(*fields)
        still = np.flatnonzero(retry.flags)
        failed, chains, draws = failed[still], *_rows((chains, draws), still)
    return result
