"""NUTS (window adaptation) versus fixed-step HMC (no adaptation) for dataset generation.

    python benchmarks/bench_generate.py [--n 64]

For Gamma, Quartic and MultivariateNormal(3): n eta from each default box, 4 chains x 1000
draws after 500 warm-up steps, timed after compilation. Reports eta/s and effective
samples per second (the smallest ESS over the statistics, summed over eta), and compares
at equal ESS: the ratio of effective samples per second, NUTS over HMC. HMC uses step
size 0.1 and 10 leapfrog steps with a unit mass matrix (what one gets without tuning),
and its warm-up steps are plain burn-in. Writes results/generate.json.
"""

from __future__ import annotations

import argparse
import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from _common import best_time, save

from bayes_et.data import design_eta, mcmc_moments
from bayes_et.expfam import Gamma, MultivariateNormal, Quartic

CHAINS, WARMUP, DRAWS = 4, 500, 1000
HMC_STEP, HMC_LEAPFROG = 0.1, 10
KEY = jax.random.key(0)


@functools.partial(jax.jit, static_argnums=0)
def hmc_draws(family, eta, key):
    def one_chain(eta, key):
        log_density = lambda u: family.log_density_unconstrained(u, eta)
        shape = family.support.u_shape(family.x_shape)
        kernel = blackjax.hmc(log_density, HMC_STEP, jnp.ones(int(np.prod(shape)) or 1),
                              HMC_LEAPFROG)
        init_key, run_key = jax.random.split(key)
        state = kernel.init(jax.random.normal(init_key, shape))

        def step(state, k):
            state, _ = kernel.step(k, state)
            return state, family.stats_from_unconstrained(state.position)

        return jax.lax.scan(step, state, jax.random.split(run_key, WARMUP + DRAWS))[1][WARMUP:]

    keys = jax.random.split(key, eta.shape[0] * CHAINS).reshape(eta.shape[0], CHAINS)
    draws = jax.vmap(lambda e, ks: jax.vmap(lambda k: one_chain(e, k))(ks))(eta, keys)
    ess = jax.vmap(lambda d: blackjax.diagnostics.effective_sample_size(d, 0, 1))(draws)
    return draws, ess


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="eta per family")
    n = parser.parse_args().n
    rows = []
    for family in (Gamma(), Quartic(), MultivariateNormal(3)):
        eta = design_eta(family, n, seed=0)
        nuts = lambda f=family, e=eta: mcmc_moments(
            f, e, KEY, num_chains=CHAINS, num_warmup=WARMUP, num_samples=DRAWS, max_retries=0
        )
        nuts_seconds = best_time(nuts, repeats=1)
        nuts_ess = float(np.sum(nuts().ess.min(axis=1)))
        hmc = lambda f=family, e=eta: hmc_draws(f, jnp.asarray(e, jnp.float32), KEY)
        hmc_seconds = best_time(hmc, repeats=1)
        hmc_ess = float(np.sum(np.nan_to_num(np.asarray(hmc()[1])).min(axis=1)))
        row = {
            "family": family.name, "n_eta": n, "chains": CHAINS, "warmup": WARMUP, "draws": DRAWS,
            "nuts_seconds": nuts_seconds, "nuts_eta_per_s": n / nuts_seconds,
            "nuts_ess_per_s": nuts_ess / nuts_seconds, "nuts_mean_min_ess": nuts_ess / n,
            "hmc_seconds": hmc_seconds, "hmc_eta_per_s": n / hmc_seconds,
            "hmc_ess_per_s": hmc_ess / hmc_seconds, "hmc_mean_min_ess": hmc_ess / n,
        }
        row["nuts_over_hmc_at_equal_ess"] = row["nuts_ess_per_s"] / max(row["hmc_ess_per_s"], 1e-12)
        rows.append(row)
        print(f"{family.name:24s} NUTS {row['nuts_eta_per_s']:7.1f} eta/s "
              f"{row['nuts_ess_per_s']:9.0f} ESS/s (min ESS/eta {row['nuts_mean_min_ess']:6.0f}) | "
              f"HMC {row['hmc_eta_per_s']:7.1f} eta/s {row['hmc_ess_per_s']:9.0f} ESS/s "
              f"(min ESS/eta {row['hmc_mean_min_ess']:6.0f}) | NUTS/HMC at equal ESS "
              f"{row['nuts_over_hmc_at_equal_ess']:.2f}")
    print("saved", save("generate", {"rows": rows}))


if __name__ == "__main__":
    main()
