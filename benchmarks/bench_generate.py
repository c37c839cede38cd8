"""NUTS versus ChEES-HMC for dataset generation, timed as a user's generation is timed.

    python benchmarks/bench_generate.py [--n 512]

For Gamma, Quartic and MultivariateNormal(3): `bayes-et generate` (the `generate` function)
of 2 chunks of n eta from each default box, with the default sampler settings (4 chains x
1000 draws after 500 warm-up steps, quality gate ESS >= 400 and R-hat <= 1.01 with up to
2 re-runs) and each kernel. The first chunk compiles; the second chunk's seconds, from the
dataset's own timings, are the figure (re-runs included). Reports eta/s, effective samples
per second (the smallest ESS over the statistics, summed over eta), the ratios ChEES/NUTS
of wall time and of ESS/s (target >= 10), the flagged fraction and the honesty of each
kernel's error bars: mean z^2 of (mcmc - exact) / sqrt(diag(cov_TT) / ess) over every
eta and statistic (1 = honest).
Writes results/generate.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import save

from bayes_et.data import generate, load_dataset
from bayes_et.expfam import Gamma, MultivariateNormal, Quartic, exact_moments, family_spec

KERNELS = ("nuts", "chees")


def measure(family, n: int, kernel: str, folder: Path) -> dict:
    config = {"family": family_spec(family), "eta": {"num": 2 * n}, "method": "mcmc",
              "sampler": {"kernel": kernel}, "chunk_size": n, "seed": 0}
    ds = load_dataset(generate(config, folder / f"{kernel}.npz", progress=False))
    seconds = ds.metadata["timings"]["chunk_seconds"]
    second = slice(n, 2 * n)  # after compilation
    exact, _ = exact_moments(family, ds.eta)
    z = (ds.mu_T - exact) / np.sqrt(np.diagonal(ds.cov_TT, axis1=1, axis2=2) / ds.ess)
    min_ess = ds.ess[second].min(axis=1)
    return {"seconds": seconds[1], "first_chunk_seconds": seconds[0],
            "eta_per_s": n / seconds[1], "ess_per_s": float(min_ess.sum() / seconds[1]),
            "mean_min_ess": float(min_ess.mean()), "mean_z2": float(np.mean(z**2)),
            "max_abs_z": float(np.abs(z).max()), "flagged_fraction": float(np.mean(ds.flags != 0))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512, help="eta per chunk (2 chunks)")
    n = parser.parse_args().n
    rows = []
    for family in (Gamma(), Quartic(), MultivariateNormal(3)):
        with tempfile.TemporaryDirectory() as folder:
            row = {"family": family.name, "n_eta": n, "chunks": 2,
                   **{k: measure(family, n, k, Path(folder)) for k in KERNELS}}
        row["chees_over_nuts_wall"] = row["nuts"]["seconds"] / row["chees"]["seconds"]
        row["chees_over_nuts_ess_per_s"] = row["chees"]["ess_per_s"] / row["nuts"]["ess_per_s"]
        rows.append(row)
        print(f"{family.name:24s} " + " | ".join(
            f"{k}: {row[k]['seconds']:6.1f} s {row[k]['ess_per_s']:9.0f} ESS/s "
            f"mean z^2 {row[k]['mean_z2']:.2f} flagged {row[k]['flagged_fraction']:.1%}"
            for k in KERNELS)
            + f" | ChEES/NUTS wall {row['chees_over_nuts_wall']:.1f}"
            f" ESS/s {row['chees_over_nuts_ess_per_s']:.1f}")
    print("saved", save("generate", {"rows": rows}))


if __name__ == "__main__":
    main()
