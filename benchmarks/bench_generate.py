"""NUTS versus ChEES-HMC for dataset generation: speed and honest error bars side by side.

    python benchmarks/bench_generate.py [--n 512]

For Gamma, Quartic and MultivariateNormal(3): n eta from each default box, each kernel
with 4 chains x 1000 draws after 500 warm-up steps (mcmc_moments, no re-runs, eta in
blocks of 256), timed after compilation (a first call on the same shapes). Reports eta/s,
effective samples per second (the smallest ESS over the statistics, summed over eta), the
ratio ChEES/NUTS of ESS/s (target >= 10), and the honesty of each kernel's error bars:
mean z^2 of (mcmc - exact) / sqrt(diag(cov_TT) / ess) over every eta and statistic
(1 = honest).
Writes results/generate.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from _common import save

from bayes_et.data import design_eta, mcmc_moments
from bayes_et.expfam import Gamma, MultivariateNormal, Quartic, exact_moments

CHAINS, WARMUP, DRAWS = 4, 500, 1000
KERNELS = ("nuts", "chees")


def measure(family, eta: np.ndarray, kernel: str) -> dict:
    sampler = dict(kernel=kernel, num_chains=CHAINS, num_warmup=WARMUP, num_samples=DRAWS,
                   max_retries=0)
    run = lambda: mcmc_moments(family, eta, jax.random.key(0), sampler)
    run()  # compile
    start = time.perf_counter()
    est = run()
    seconds = time.perf_counter() - start
    exact, _ = exact_moments(family, eta)
    z = (est.mu_T - exact) / np.sqrt(np.diagonal(est.cov_TT, axis1=1, axis2=2) / est.ess)
    min_ess = est.ess.min(axis=1)
    return {"seconds": seconds, "eta_per_s": len(eta) / seconds,
            "ess_per_s": float(min_ess.sum() / seconds), "mean_min_ess": float(min_ess.mean()),
            "mean_z2": float(np.mean(z**2)), "max_abs_z": float(np.abs(z).max()),
            "flagged_fraction": float(np.mean(est.flags != 0))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512, help="eta per family")
    n = parser.parse_args().n
    rows = []
    for family in (Gamma(), Quartic(), MultivariateNormal(3)):
        eta = design_eta(family, n, seed=0)
        row = {"family": family.name, "n_eta": n, "chains": CHAINS, "warmup": WARMUP,
               "draws": DRAWS, **{k: measure(family, eta, k) for k in KERNELS}}
        row["chees_over_nuts_ess_per_s"] = row["chees"]["ess_per_s"] / row["nuts"]["ess_per_s"]
        rows.append(row)
        print(f"{family.name:24s} " + " | ".join(
            f"{k}: {row[k]['eta_per_s']:7.1f} eta/s {row[k]['ess_per_s']:9.0f} ESS/s "
            f"mean z^2 {row[k]['mean_z2']:.2f}" for k in KERNELS)
            + f" | ChEES/NUTS ESS/s {row['chees_over_nuts_ess_per_s']:.1f}")
    print("saved", save("generate", {"rows": rows}))


if __name__ == "__main__":
    main()
