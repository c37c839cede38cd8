"""Quality of every default MCMC dataset config, by each kernel: flagged fraction, speed,
honest error bars.

    python benchmarks/bench_dataset_quality.py [--out DIR] [--configs gamma quartic ...]
                                               [--kernels nuts chees]

Runs `generate` on configs/data/<name>.yaml (2000 eta each) once per sampler kernel (the
config's sampler with `kernel` replaced; re-runs of flagged eta included), then compares
each dataset with exact moments: z = (mcmc - exact) / sqrt(diag(cov_TT) / ess) should
have mean square ~1 if the error bars the dataset carries are honest. Reports eta/s and
ESS/s (smallest ESS over the statistics, summed over eta) of the whole generation,
compilation included. Writes results/dataset_quality.json. ~15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import save

from bayes_et.data import generate, load_dataset
from bayes_et.expfam import build_family, exact_moments
from bayes_et.settings import read_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"
NAMES = ("gaussian", "gamma", "beta", "von_mises", "truncated_normal", "quartic",
         "multivariate_normal", "laplace_product")
KERNELS = ("nuts", "chees")


def score(ds, name: str, kernel: str) -> dict:
    family = build_family(ds.metadata["family"])
    mu, _ = exact_moments(family, ds.eta)
    z = (ds.mu_T - mu) / np.sqrt(np.diagonal(ds.cov_TT, axis1=1, axis2=2) / ds.ess)
    ok = ds.flags == 0
    seconds = ds.metadata["timings"]["compute_seconds"]
    return {"config": name, "kernel": kernel, "family": family.name,
            **ds.metadata["counts"], "compute_seconds": seconds,
            "eta_per_s": len(ds.eta) / seconds,
            "ess_per_s": float(ds.ess[ok].min(axis=1).sum() / seconds),
            "mean_z2": float(np.mean(z[ok] ** 2)), "max_abs_z": float(np.abs(z[ok]).max()),
            "min_ess": float(ds.ess[ok].min())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="where datasets go (default: a temp dir)")
    parser.add_argument("--configs", nargs="*", default=NAMES)
    parser.add_argument("--kernels", nargs="*", default=KERNELS)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bayes_et_quality_"))
    rows = []
    for name in args.configs:
        for kernel in args.kernels:
            config = read_config(CONFIGS / f"{name}.yaml")
            config["sampler"] = {**config.get("sampler", {}), "kernel": kernel}
            path = generate(config, out / f"{name}-{kernel}.npz", force=True)
            rows.append(row := score(load_dataset(path), name, kernel))
            print(f"{name:20s} {kernel:6s} flagged {100 * row['flagged_fraction']:5.2f}%  "
                  f"mean z^2 {row['mean_z2']:.3f}  max |z| {row['max_abs_z']:.2f}  "
                  f"{row['eta_per_s']:6.1f} eta/s {row['ess_per_s']:9.0f} ESS/s", flush=True)
    print("saved", save("dataset_quality", {"rows": rows}))


if __name__ == "__main__":
    main()
