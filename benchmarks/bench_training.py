"""Acceptance runs of the trainer: each architecture on MCMC data (Gamma, 4000 eta) and on
quadrature data (Quartic, 4000 eta), scored on held-out eta against exact moments.

    python benchmarks/bench_training.py [--archs mlp,convex_potential,geometric_flow]

Datasets and run folders go to runs/bench_training/; the table to results/training.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from _common import save

from bayes_et.data import generate
from bayes_et.train import train_run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench_training"
DATASETS = {"gamma_mcmc": "gamma_4000.yaml", "quartic_quadrature": "quartic_quadrature.yaml",
            "quartic_quadrature_large": "quartic_quadrature_large.yaml"}
# The 40 000-eta Quartic set (10x denser) trains the mlp with 150 MAP epochs: as many
# optimiser steps as 1500 epochs on 4000 eta.
EXTRA = ("mlp", "quartic_quadrature_large",
         {"stages": [{"name": "map", "epochs": 150, "lr": 3e-3, "patience": 40},
                     {"name": "vi", "epochs": 20, "lr": 1e-2, "patience": 10}]})
TARGETS = {"rms_error_over_mcse": 0.5, "nrmse": 5e-3, "coverage_90": (0.85, 0.95),
           "mean_z2": (0.6, 1.6)}


def dataset(name: str) -> Path:
    path = WORK / f"{name}.npz"
    if not path.exists():
        generate(ROOT / "configs" / "data" / DATASETS[name], path, resume=True)
    return path


def row(arch: str, data: str, metrics: dict) -> dict:
    test = metrics["test"]
    out = {
        "architecture": arch, "data": data, "train_seconds": round(metrics["training_seconds"], 1),
        "epochs": metrics["epochs"], "num_train": metrics["num_train"],
        "max_nrmse": max(test["nrmse"].values()), "coverage_90": test["coverage"]["0.9"],
        "mean_z2": test["mean_z2"], "validation_mean_z2": metrics["validation_mean_z2"],
        "calibration_scale": metrics["calibration_scale"], "nrmse": test["nrmse"],
    }
    if "rms_error_over_mcse" in test:
        out["max_rms_error_over_mcse"] = max(test["rms_error_over_mcse"].values())
        out["rms_error_over_mcse"] = test["rms_error_over_mcse"]
    lo, hi = TARGETS["coverage_90"]
    z_lo, z_hi = TARGETS["mean_z2"]
    out["calibrated"] = lo <= out["coverage_90"] <= hi and z_lo <= out["mean_z2"] <= z_hi
    out["accurate"] = (out["max_rms_error_over_mcse"] <= TARGETS["rms_error_over_mcse"]
                       if "rms_error_over_mcse" in test else out["max_nrmse"] <= TARGETS["nrmse"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="mlp,convex_potential,geometric_flow")
    parser.add_argument("--data", default="gamma_mcmc,quartic_quadrature")
    parser.add_argument("--no-extra", action="store_true", help="skip the dense-Quartic mlp run")
    args = parser.parse_args()
    runs = [(arch, data, {}) for data in args.data.split(",") for arch in args.archs.split(",")]
    if not args.no_extra:
        runs.append(EXTRA)
    rows = []
    for arch, data, override in runs:
        config = yaml.safe_load((ROOT / "configs" / "train" / f"{arch}.yaml").read_text())
        out = train_run(config | override, data=str(dataset(data)), out=WORK / f"{arch}-{data}",
                        force=True, progress=False)
        rows.append(row(arch, data, json.loads((out / "metrics.json").read_text())))
        r = rows[-1]
        print(f"{arch} on {data}: {r['train_seconds']} s, max NRMSE {r['max_nrmse']:.2e}, "
              f"90% coverage {r['coverage_90']:.3f}, mean z^2 {r['mean_z2']:.2f}", flush=True)
    print("\ntraining acceptance (`python benchmarks/bench_training.py`; held-out 10%, exact "
          "truth):")
    print("| data | architecture | train s | max NRMSE | max RMS(err/MCSE) | 90% coverage | "
          "mean z^2 | accurate | calibrated |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mcse = f"{r['max_rms_error_over_mcse']:.3f}" if "max_rms_error_over_mcse" in r else "-"
        print(f"| {r['data']} | {r['architecture']} | {r['train_seconds']} | "
              f"{r['max_nrmse']:.2e} | {mcse} | {r['coverage_90']:.3f} | {r['mean_z2']:.2f} | "
              f"{'yes' if r['accurate'] else 'no'} | {'yes' if r['calibrated'] else 'no'} |")
    print(f"saved {save('training', {'targets': TARGETS, 'runs': rows})}")


if __name__ == "__main__":
    main()
