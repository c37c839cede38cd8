"""Sampler kernels, one object each: a warm-up that adapts a set of chains, then steps that
continue them. A kernel's chains travel as a `Chains` of arrays, so a quality-gate re-run
continues where the first run stopped, in a program compiled once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.mcmc.dynamic_hmc import halton_sequence
from jaxtyping import Array, PRNGKeyArray

LogDensity = Callable[[Array], Array]


class Chains(NamedTuple):
    """Chains after warm-up: their states (leading axis: chain) and the adapted parameters
    (arrays only, so chains can leave a program and enter another)."""

    state: Any
    params: dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A sampler kernel (BlackJAX's shape): `warmup` adapts chains from their starts, `step`
    moves every chain one draw and returns BlackJAX's info beside them.

    `horizon` is the most draws a chain may take after warm-up (a kernel whose step
    depends on it, as ChEES's jitter does, is the same kernel for every block of draws)."""

    name: ClassVar[str]
    num_warmup: int
    target_accept: float
    horizon: int

    def warmup(self, log_density: LogDensity, key: PRNGKeyArray, starts: Array) -> Chains:
        """Chains adapted to `log_density` over `num_warmup` steps from `starts`
        (chains, *u_shape)."""
        raise NotImplementedError

    def step(self, log_density: LogDensity, key: PRNGKeyArray,
             chains: Chains) -> tuple[Chains, Any]:
        """Every chain moved by one draw, and BlackJAX's info of the transitions."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class NUTS(Kernel):
    """Independent NUTS chains, each with its own window adaptation of step size and
    diagonal mass."""

    name: ClassVar[str] = "nuts"

    def warmup(self, log_density, key, starts):
        adaptation = blackjax.window_adaptation(
            blackjax.nuts, log_density, target_acceptance_rate=self.target_accept,
            adaptation_info_fn=get_filter_adapt_info_fn())

        def one(chain_key, start):
            (state, params), _ = adaptation.run(chain_key, start, num_steps=self.num_warmup)
            return state, params

        return Chains(*jax.vmap(one)(jax.random.split(key, len(starts)), starts))

    def step(self, log_density, key, chains):
        def one(chain_key, state, params):
            return blackjax.nuts(log_density, **params).step(chain_key, state)

        keys = jax.random.split(key, len(chains.params["step_size"]))
        state, info = jax.vmap(one)(keys, chains.state, chains.params)
        return chains._replace(state=state), info


CHEES_STEP_SIZE = 0.5  # ChEES's first step size; dual averaging moves it
CHEES_LEARNING_RATE = 0.025  # Adam on the log trajectory length (BlackJAX's example)


@dataclasses.dataclass(frozen=True)
class ChEES(Kernel):
    """Jittered HMC whose step size, trajectory length and diagonal mass are adapted across
    the chains together (ChEES); every chain takes the same number of leapfrog steps per
    draw, so the chains (and a block of eta) run in lockstep."""

    name: ClassVar[str] = "chees"

    def warmup(self, log_density, key, starts):
        adaptation = blackjax.chees_adaptation(
            log_density, len(starts), target_acceptance_rate=self.target_accept,
            mass_matrix_estimation="diagonal", adaptation_info_fn=get_filter_adapt_info_fn())
        (state, params), _ = adaptation.run(
            key, starts, CHEES_STEP_SIZE, optax.adam(CHEES_LEARNING_RATE), self.num_warmup,
            max_sampling_steps=self.horizon)
        (length,) = params["integration_steps_params"]
        return Chains(state, {"step_size": params["step_size"],
                              "inverse_mass_matrix": params["inverse_mass_matrix"],
                              "trajectory": length})

    def _leapfrog_steps(self, draw_index, length):
        """BlackJAX's ChEES jitter: the trajectory times a Halton point of the draw's index,
        rounded up (the adaptation's own rule, rebuilt from its arrays)."""
        bits = np.ceil(np.log2(self.num_warmup + self.horizon))
        return jnp.asarray(jnp.ceil(halton_sequence(draw_index, bits) * length), dtype=int)

    def step(self, log_density, key, chains):
        params = chains.params
        kernel = blackjax.dynamic_hmc(
            log_density, params["step_size"], params["inverse_mass_matrix"],
            next_random_arg_fn=lambda i: i + 1, integration_steps_fn=self._leapfrog_steps,
            integration_steps_params=(params["trajectory"],))
        keys = jax.random.split(key, len(chains.state.position))
        state, info = jax.vmap(kernel.step)(keys, chains.state)
        return chains._replace(state=state), info


KERNELS: dict[str, type[Kernel]] = {kernel.name: kernel for kernel in (NUTS, ChEES)}
