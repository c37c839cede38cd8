"""Quality of every default MCMC dataset config: flagged fraction, time, honest error bars.

    python benchmarks/bench_dataset_quality.py [--out DIR] [--configs gamma quartic ...]

Runs `bayes-et generate` on configs/data/<name>.yaml (2000 eta each), then compares each
dataset with exact moments: z = (mcmc - exact) / sqrt(diag(cov_TT) / ess) should have
mean square ~1 if the error bars the dataset carries are honest. Writes
results/dataset_quality.json. Takes ~12 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import save

from bayes_et.data import generate, load_dataset
from bayes_et.expfam import build_family, exact_moments

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"
NAMES = ("gaussian", "gamma", "beta", "von_mises", "truncated_normal", "quartic",
         "multivariate_normal", "laplace_product")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="where datasets go (default: a temp dir)")
    parser.add_argument("--configs", nargs="*", default=NAMES)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bayes_et_quality_"))
    rows = []
    for name in args.configs:
        ds = load_dataset(generate(CONFIGS / f"{name}.yaml", out / f"{name}.npz", force=True))
        family = build_family(ds.metadata["family"])
        mu, _ = exact_moments(family, ds.eta)
        z = (ds.mu_T - mu) / np.sqrt(np.diagonal(ds.cov_TT, axis1=1, axis2=2) / ds.ess)
        ok = ds.flags == 0
        row = {"config": name, "family": family.name, **ds.metadata["counts"],
               "compute_seconds": ds.metadata["timings"]["compute_seconds"],
               "mean_z2": float(np.mean(z[ok] ** 2)), "max_abs_z": float(np.abs(z[ok]).max()),
               "min_ess": float(ds.ess[ok].min())}
        rows.append(row)
        print(f"{name:20s} flagged {100 * row['flagged_fraction']:5.2f}%  mean z^2 "
              f"{row['mean_z2']:.3f}  max |z| {row['max_abs_z']:.2f}  "
              f"{row['compute_seconds']:6.0f} s")
    print("saved", save("dataset_quality", {"rows": rows}))


if __name__ == "__main__":
    main()
