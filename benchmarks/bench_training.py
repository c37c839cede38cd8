"""Acceptance runs of the trainer, one run for the whole table: each architecture on
Gamma (NUTS data), the Quartic over its full default box (quadrature data), Beta with
shapes down to 0.01 (closed form) and GinzburgLandau, a 2-D family (NUTS data, scored
against a float64 grid integral computed here); accuracy, calibration and calibration
within 4 bins of predictive spread; then active learning on the Quartic against uniform
design at equal budget.

    python benchmarks/bench_training.py [--archs mlp,convex_potential,geometric_flow]
                                        [--data ...] [--no-active] [--retrain]

Datasets and run folders go to runs/bench_training/ (a finished run folder is scored again,
not retrained, unless --retrain); the table to results/training.json, where the rows (and
the active curves) not run this time stay as saved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import yaml
from _common import RESULTS, save

from bayes_et._files import write_text
from bayes_et.data import flag_invalid_rows, generate, load_dataset, split_dataset
from bayes_et.expfam import GinzburgLandau
from bayes_et.train import (
    calibration_metrics,
    extend_run,
    load_run,
    load_train_config,
    mc_noise,
    predict,
    train_run,
)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench_training"
DATASETS = {"gamma_mcmc": "gamma_4000.yaml", "quartic_quadrature": "quartic_quadrature.yaml",
            "beta_edges": "beta_edges.yaml", "ginzburg_landau_mcmc": "ginzburg_landau.yaml"}
TARGETS = {"rms_error_over_mcse": 0.5, "nrmse": 5e-3, "coverage_90": (0.85, 0.95),
           "mean_z2": (0.6, 1.6)}
ACTIVE = {"start": 2000, "num_eta": 2000, "rounds": 4}  # Quartic: 2000 -> 10 000 eta
CALIBRATION_ETA = 400  # MCMC rows: a calibration set of 400 eta with 16x the draws
GRID = np.linspace(-6.0, 6.0, 1201)  # GinzburgLandau truth: mass beyond |x| = 6 < e^-300


def dataset(name: str) -> Path:
    path = WORK / f"{name}.npz"
    if not path.exists():
        generate(ROOT / "configs" / "data" / DATASETS[name], path, resume=True)
    return path


def grid_moments(eta: np.ndarray) -> np.ndarray:
    """E[T] of GinzburgLandau at each eta by a 1201^2 float64 trapezoid grid on [-6, 6]^2
    (the integrand and all its derivatives vanish at the edges: spectral accuracy)."""
    x1, x2 = np.meshgrid(GRID, GRID, indexing="ij")
    stats = np.stack([x1, x2, x1**2, x2**2, x1 * x2, (x1**2 + x2**2) ** 2], -1).reshape(-1, 6)
    out = []
    for e in eta:
        log_w = stats @ e
        w = np.exp(log_w - log_w.max())
        out.append(w @ stats / w.sum())
    return np.asarray(out)


def grid_scores(run: Path, data: Path) -> dict:
    """The run's test split scored against the grid truth (not the NUTS targets)."""
    model = load_run(run).model
    cfg = load_train_config(json.loads((run / "metrics.json").read_text())["config"])
    family = GinzburgLandau()
    test = split_dataset(flag_invalid_rows(load_dataset(data), family), cfg.split, cfg.seed)[2]
    mean, cov, dof = predict(model, test.eta, jax.random.key(0), cfg.predictive.num_samples)
    var = np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2)
    mcse = np.sqrt(np.diagonal(mc_noise(test), axis1=1, axis2=2))
    truth = grid_moments(test.eta)
    scores = calibration_metrics(np.asarray(mean), var, truth, mcse, list(family.flat_names),
                                 dof=np.asarray(dof))
    # The grid against NUTS: (NUTS - grid) / MCSE should be standard normal.
    scores["nuts_vs_grid_mean_z2"] = float(np.mean(((test.mu_T - truth) / mcse) ** 2))
    return {"truth": "float64 grid integral (1201^2 points on [-6, 6]^2)", **scores}


def _calibrated(scores: dict) -> bool:
    (lo, hi), (z_lo, z_hi) = TARGETS["coverage_90"], TARGETS["mean_z2"]
    return lo <= scores["coverage_90"] <= hi and z_lo <= scores["mean_z2"] <= z_hi


def row(arch: str, data: str, metrics: dict, test: dict) -> dict:
    out = {
        "architecture": arch, "data": data, "train_seconds": round(metrics["training_seconds"], 1),
        "epochs": metrics["epochs"], "num_train": metrics["num_train"], "truth": test["truth"],
        "max_nrmse": max(test["nrmse"].values()), "coverage_90": test["coverage"]["0.9"],
        "mean_z2": test["mean_z2"], "validation_coverage_90": metrics["validation_coverage_90"],
        "calibration": metrics["calibration"], "nrmse": test["nrmse"],
        "by_spread": test["by_spread"],
    }
    if "rms_error_over_mcse" in test:
        out["max_rms_error_over_mcse"] = max(test["rms_error_over_mcse"].values())
        out["rms_error_over_mcse"] = test["rms_error_over_mcse"]
    out["calibrated"] = _calibrated(out)
    out["locally_calibrated"] = all(_calibrated(b) for b in test["by_spread"])
    out["accurate"] = (out["max_rms_error_over_mcse"] <= TARGETS["rms_error_over_mcse"]
                       if "rms_error_over_mcse" in test else out["max_nrmse"] <= TARGETS["nrmse"])
    return out


def _trained(config: dict, data: str, out: Path, retrain: bool) -> Path:
    if retrain or not (out / "metrics.json").is_file():
        train_run(config, data=data, out=out, force=True, progress=False)
    return out


def active_curves(arch: str = "mlp", retrain: bool = False) -> dict:
    """Quartic over its full box: ACTIVE['start'] uniform eta, then rounds of num_eta
    chosen by predictive spread, or uniform ones (equal budget), each continuing from the
    same first network; max NRMSE on the same held-out eta after each round."""
    data_cfg = yaml.safe_load((ROOT / "configs" / "data" / "quartic_quadrature.yaml").read_text())
    data_cfg["eta"]["num"] = ACTIVE["start"]
    source = WORK / f"quartic_{ACTIVE['start']}.yaml"
    write_text(source, yaml.safe_dump(data_cfg))
    config = yaml.safe_load((ROOT / "configs" / "train" / f"{arch}.yaml").read_text())
    config["split"] = [0.6, 0.1, 0.3]  # 600 held-out eta: a steadier max NRMSE
    first = _trained(config, str(source), WORK / f"active-{arch}-first", retrain)
    curves = {}
    for design in ("spread", "uniform"):
        active = {"rounds": ACTIVE["rounds"], "num_eta": ACTIVE["num_eta"], "design": design}
        run = WORK / f"active-{arch}-{design}"
        if retrain or not (run / "metrics.json").is_file():
            extend_run(first, config={**config, "active": active}, force=True, out=run,
                       progress=False)
        curves[design] = json.loads((run / "metrics.json").read_text())["active_learning"]
        print(f"active learning ({design}): " + ", ".join(
            f"{p['num_eta']} eta {p['max_nrmse']:.2e}" for p in curves[design]), flush=True)
    return {"architecture": arch, **ACTIVE, "curves": curves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="mlp,convex_potential,geometric_flow")
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--no-active", action="store_true", help="skip the active-learning runs")
    parser.add_argument("--retrain", action="store_true",
                        help="train again where a finished run folder exists")
    parser.add_argument("--active-only", action="store_true",
                        help="only the active-learning runs; the table's rows stay as saved")
    args = parser.parse_args()
    if args.active_only:
        saved = json.loads((RESULTS / "training.json").read_text())
        saved.pop("environment")
        print(f"saved {save('training', {**saved, 'active': active_curves(retrain=True)})}")
        return
    rows = []
    for data in args.data.split(","):
        for arch in args.archs.split(","):
            config = yaml.safe_load((ROOT / "configs" / "train" / f"{arch}.yaml").read_text())
            if data.endswith("_mcmc"):  # recalibrate on precise targets (16x the draws)
                config["calibration"] = {"num_eta": CALIBRATION_ETA}
            out = _trained(config, str(dataset(data)), WORK / f"{arch}-{data}", args.retrain)
            metrics = json.loads((out / "metrics.json").read_text())
            test = grid_scores(out, dataset(data)) if data.startswith("ginzburg") else \
                metrics["test"]
            rows.append(row(arch, data, metrics, test))
            r = rows[-1]
            print(f"{arch} on {data}: {r['train_seconds']} s, max NRMSE {r['max_nrmse']:.2e}, "
                  f"90% coverage {r['coverage_90']:.3f}, mean z^2 {r['mean_z2']:.2f}, by "
                  "spread bin " + ", ".join(f"{b['coverage_90']:.2f}/{b['mean_z2']:.2f}"
                                            for b in r["by_spread"]), flush=True)
    active = None if args.no_active else active_curves(retrain=args.retrain)
    print("\ntraining acceptance (`python benchmarks/bench_training.py`; held-out 10%):")
    print("| data | architecture | train s | max NRMSE | max RMS(err/MCSE) | 90% coverage | "
          "mean z^2 | 90% coverage / mean z^2 per spread quarter | accurate | calibrated | "
          "locally |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mcse = f"{r['max_rms_error_over_mcse']:.3f}" if "max_rms_error_over_mcse" in r else "-"
        bins = ", ".join(f"{b['coverage_90']:.2f}/{b['mean_z2']:.2f}" for b in r["by_spread"])
        yes = lambda flag: "yes" if flag else "no"
        print(f"| {r['data']} | {r['architecture']} | {r['train_seconds']} | "
              f"{r['max_nrmse']:.2e} | {mcse} | {r['coverage_90']:.3f} | {r['mean_z2']:.2f} | "
              f"{bins} | {yes(r['accurate'])} | {yes(r['calibrated'])} | "
              f"{yes(r['locally_calibrated'])} |")
    # rows and curves not run this time stay as saved
    saved = json.loads((RESULTS / "training.json").read_text()) if (
        RESULTS / "training.json").is_file() else {}
    ran = {(r["architecture"], r["data"]) for r in rows}
    rows = [r for r in saved.get("runs", []) if (r["architecture"], r["data"]) not in ran] + rows
    active = active or saved.get("active")
    print(f"saved {save('training', {'targets': TARGETS, 'runs': rows, 'active': active})}")


if __name__ == "__main__":
    main()
