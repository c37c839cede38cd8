"""Moments of T(x) by BlackJAX NUTS or ChEES-HMC, with diagnostics and a quality gate."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.adaptation.base import get_filter_adapt_info_fn
from jaxtyping import Array, Float, PRNGKeyArray

from bayes_et.expfam import ExponentialFamily
from bayes_et.settings import choice, fail, integer, number, parse, setting

from ._dataset import DataFlag
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


CHEES_STEP_SIZE = 0.5  # ChEES's first step size; dual averaging moves it
CHEES_LEARNING_RATE = 0.025  # Adam on the log trajectory length (BlackJAX's example)


def _nuts_chains(family, eta, key, num_chains, num_warmup, num_samples, target_accept):
    """(chains, samples, k) T draws: independent NUTS chains, each window-adapted."""
    log_density = lambda u: family.log_density_unconstrained(u, eta)

    def one_chain(chain_key):
        init_key, warm_key, sample_key = jax.random.split(chain_key, 3)
        position = jax.random.normal(init_key, family.support.u_shape(family.x_shape))
        warmup = blackjax.window_adaptation(
            blackjax.nuts, log_density, target_acceptance_rate=target_accept,
            adaptation_info_fn=get_filter_adapt_info_fn(),
        )
        (state, params), _ = warmup.run(warm_key, position, num_steps=num_warmup)
        kernel = blackjax.nuts(log_density, **params)

        def step(state, k):
            state, _ = kernel.step(k, state)
            return state, family.stats_from_unconstrained(state.position)

        return jax.lax.scan(step, state, jax.random.split(sample_key, num_samples))[1]

    return jax.vmap(one_chain)(_chain_keys(key, num_chains))


def _chees_chains(family, eta, key, num_chains, num_warmup, num_samples, target_accept):
    """(chains, samples, k) T draws: jittered HMC whose step size, trajectory length and
    diagonal mass are adapted across the chains together (ChEES); every chain takes the
    same number of leapfrog steps per draw, so the chains (and a block of eta) run in
    lockstep."""
    log_density = lambda u: family.log_density_unconstrained(u, eta)
    u_shape = family.support.u_shape(family.x_shape)
    starts = jax.vmap(lambda k: jax.random.normal(jax.random.split(k, 3)[0], u_shape))(
        _chain_keys(key, num_chains))  # the chains' NUTS starts
    warm_key, sample_key = jax.random.split(jax.random.fold_in(key, num_chains))
    warmup = blackjax.chees_adaptation(
        log_density, num_chains, target_acceptance_rate=target_accept,
        mass_matrix_estimation="diagonal", adaptation_info_fn=get_filter_adapt_info_fn(),
    )
    (states, params), _ = warmup.run(warm_key, starts, CHEES_STEP_SIZE,
                                     optax.adam(CHEES_LEARNING_RATE), num_warmup,
                                     max_sampling_steps=num_samples)
    kernel = blackjax.dynamic_hmc(log_density, **params)

    def step(states, k):
        states, _ = jax.vmap(kernel.step)(jax.random.split(k, num_chains), states)
        return states, jax.vmap(family.stats_from_unconstrained)(states.position)

    draws = jax.lax.scan(step, states, jax.random.split(sample_key, num_samples))[1]
    return jnp.swapaxes(draws, 0, 1)


KERNELS = {"nuts": _nuts_chains, "chees": _chees_chains}


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


def _chain_keys(key, num_chains):
    return jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(num_chains))


@functools.cache
def _sampler(family: ExponentialFamily, kernel: str, num_chains: int, num_warmup: int,
             num_samples: int, target_accept: float, block: int):
    """Per-device function: (eta (m, k), ids (m,), attempt, key) -> (T draws, ess, rhat).

    The m eta run in blocks of `block` (vmapped inside a block, blocks in sequence): an
    eta's arithmetic then depends only on its lane in the block (XLA's vectorised code is
    lane-dependent in the last bit, which a sampler amplifies), so the draws do not depend
    on how eta are spread over devices and chunks of a multiple of `block`.
    """
    chains = KERNELS[kernel]

    def one_eta(eta, eta_id, attempt, key):
        key = jax.random.fold_in(jax.random.fold_in(key, eta_id), attempt)
        draws = chains(family, eta, key, num_chains, num_warmup, num_samples, target_accept)
        ess = blackjax.diagnostics.effective_sample_size(draws, chain_axis=0, sample_axis=1)
        rhat = blackjax.diagnostics.potential_scale_reduction(draws, chain_axis=0, sample_axis=1)
        return draws, ess, rhat

    def per_device(eta, ids, attempt, key):
        blocks = (eta.reshape(-1, block, eta.shape[-1]), ids.reshape(-1, block))
        run_block = jax.vmap(one_eta, in_axes=(0, 0, None, None))
        out = jax.lax.map(lambda b: run_block(*b, attempt, key), blocks)
        return jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:]), out)

    return per_device


def _estimate(family, eta, ids, key, attempt, *, kernel, num_chains, num_warmup, num_samples,
              target_accept, rhat_max, ess_min, mesh, block) -> MomentEstimate:
    fn = _sampler(family, kernel, num_chains, num_warmup, num_samples, target_accept, block)
    draws, ess, rhat = map_over_eta(
        fn, mesh, eta.astype(np.float32), ids.astype(np.int32),
        replicated=(jnp.int32(attempt), key), block=block,
    )
    flat = draws.astype(np.float64).reshape(len(eta), -1, family.eta_dim)
    mu = flat.mean(axis=1)
    centred = flat - mu[:, None, :]
    cov = np.einsum("nsi,nsj->nij", centred, centred) / flat.shape[1]
    ess, rhat = ess.astype(np.float64), rhat.astype(np.float64)
    finite = np.isfinite(mu).all(1) & np.isfinite(ess).all(1) & np.isfinite(rhat).all(1)
    flags = (
        np.where((rhat > rhat_max).any(1), DataFlag.RHAT, 0)
        | np.where((ess < ess_min).any(1), DataFlag.ESS, 0)
        | np.where(finite, 0, DataFlag.NONFINITE)
    ).astype(np.int32)
    return MomentEstimate(mu, cov, ess, rhat, flags, np.full(len(eta), num_samples))


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
    batch runs in lockstep). Keys are
    ``fold_in(fold_in(fold_in(key, eta_id), attempt), chain)``; with eta in blocks of
    `block`, results do not depend on the number of devices nor on chunking in multiples
    of `block` (no key is reused across chunks). ESS and split R-hat
    are per statistic (blackjax.diagnostics). An eta failing the gate (R-hat > rhat_max or
    ESS < ess_min) is re-run with twice the draws, up to `max_retries` times; if it still
    fails it keeps its flag. The eta batch is sharded over `devices` (default: all) and
    runs in blocks of `block` eta per device (raise it on a GPU).
    """
    eta = np.asarray(family.validate_eta(np.asarray(eta, np.float64)), np.float64)
    if eta.ndim != 2 or len(eta) == 0:
        raise ValueError(
            f"mcmc_moments: eta must have shape (n, {family.eta_dim}) with n >= 1; "
            f"got {eta.shape}"
        )
    checked = parse(SamplerSettings, sampler, "sampler")
    settings = dict(kernel=checked.kernel, num_chains=checked.num_chains,
                    num_warmup=checked.num_warmup, target_accept=checked.target_accept,
                    rhat_max=checked.rhat_max,
                    ess_min=checked.ess_min, mesh=eta_mesh(devices),
                    block=_check_count("block", block))
    num_samples, max_retries = checked.num_samples, checked.max_retries
    ids = np.arange(len(eta)) if eta_ids is None else np.asarray(eta_ids)
    if ids.shape != (len(eta),):
        raise ValueError(f"mcmc_moments: eta_ids must have shape ({len(eta)},); got {ids.shape}")
    result = _estimate(family, eta, ids, key, 0, num_samples=num_samples, **settings)
    for attempt in range(1, max_retries + 1):
        failed = np.flatnonzero(result.flags)
        if failed.size == 0:
            break
        retry = _estimate(family, eta[failed], ids[failed], key, attempt,
                          num_samples=num_samples * 2**attempt, **settings)
        fields = [np.array(f) for f in result]
        for field, new in zip(fields, retry, strict=True):
            field[failed] = new
        result = MomentEstimate(*fields)
    return result
