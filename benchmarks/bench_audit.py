"""Error bars that hold, on the Poisson log-normal plate: the network's band and the audit.

    python benchmarks/bench_audit.py [--quick] [--datasets 50] [--audit-datasets 20]
                                     [--audit-seeds 10] [--audit-first 0] [--band-first 0]
                                     [--archs mlp,convex_potential,...]
                                     [--epochs-factor 1]  (train F x longer)
                                     [--keep]  (keep the other networks' results; with
                                     --datasets 0 or --audit-datasets 0, keep that part)

Model (configs/cavi/poisson_lognormal_cancer.yaml): y_i ~ Poisson(E_i e^{r_i}),
r_i ~ N(mu, 1/tau), mu ~ N(0, 10^2), tau ~ Gamma(1, 1); the plate z answered by a network with
the Gauss-Hermite route as its fallback, against the Gauss-Hermite fixed point (exact; solved
to tol 1e-10, the network's to 1e-6).
Needs the bench extra (statsmodels: the cancer exposures).

1. Networks for z: each of `--archs` (configs/train/ARCH.yaml) and a deliberately poor one
   (`poor`: the mlp config with 20x fewer epochs, solved without a fallback so that every
   member's answer is the poor network's; with one, its spread sends them all to
   Gauss-Hermite and the audit has nothing to correct), trained on the eta box that the plate
   visits (runs/bench_plates/data-z.yaml, as bench_plates makes it; cached in
   runs/bench_audit/).
2. The network's band alone (not for `poor`): over `--datasets` data sets simulated on the
   cancer exposures (N = 301; seeds 2000 + band-first, ...; a band from another first seed
   is kept beside the others as band_SEED), whether the 90% band of 32 function
   draws (and the linear-response band of the same draws) contains the exact E[mu] and
   E[tau], its median half-width in posterior sd, and the two bands' agreement.
3. The audit: `--audit-datasets` data sets simulated at N = 10^4 (exposures log-uniform over
   the counties' range; seeds 5000, ...), each solved once with the network, then audited
   `--audit-seeds` times with n = max(30, N/100) members (Gauss-Hermite oracle): coverage of
   the exact E[mu] and E[tau] by the rectified 90% intervals (each, and both at once), the
   rectified answer's error and the interval's half-width in posterior sd, the network's
   mean z^2 at the audited members, and the audit's seconds against the network solve's.
Writes results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml
from _common import save

from bayes_et._files import write_text
from bayes_et.cavi import (
    Audit,
    ExactMoments,
    NetworkMoments,
    WithFallback,
    audit_result,
    band_limits,
    examples,
    run_cavi,
)
from bayes_et.cavi._audit import STEP_SLACK  # the audit interval's floor after a step
from bayes_et.expfam import PoissonLogNormal
from bayes_et.params import load_header
from bayes_et.train import train_run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench_audit"
DATA = ROOT / "runs" / "bench_plates" / "data-z.yaml"
MU, TAU = -5.66, 15.9  # near the real data's fixed point (bench_plates)
FAMILY = PoissonLogNormal()
GH = ExactMoments(FAMILY, "gauss_hermite")
SOLVER = {"tol": 1e-6, "max_iter": 500, "track_elbo": False}
EXACT = {**SOLVER, "tol": 1e-10}  # the exact fixed point: its stopping error far below a band's
NUM_DRAWS = 32
BAND_TARGET = (0.80, 0.98)
AUDIT_TARGET = (0.85, 0.95)
AUDIT_N = 10_000
BAND_RULE = "mean ± t·sd·√(1+1/S)"  # band_limits; before: the draws' 5% and 95% quantiles


def data_config(real: dict, exposure_range) -> Path:
    """The eta box the plate visits (real data and a simulated N = 10^4 set), widened."""
    if DATA.is_file():
        return DATA
    boxes = []
    for data in (real, simulated(AUDIT_N, 0, exposure_range)):
        model = examples.poisson_lognormal(data["counts"], data["exposure"])
        boxes.append(run_cavi(model, {"z": GH}, **SOLVER))
    config = boxes[0].data_config("z", FAMILY, num=8000)
    other = boxes[1].data_config("z", FAMILY)
    for name, (lo, hi) in other["eta"]["box"].items():
        box = config["eta"]["box"][name]
        config["eta"]["box"][name] = [min(box[0], lo), max(box[1], hi)]
    DATA.parent.mkdir(parents=True, exist_ok=True)
    write_text(DATA, yaml.safe_dump(config))
    return DATA


def trained(arch: str, quick: bool, factor: int = 1) -> Path:
    """The network `arch` trained (once), its stages' epochs and patience times `factor`."""
    out = WORK / (f"{arch}-quick" if quick else label(arch, factor))
    if (out / "metrics.json").exists():  # written last: a finished run
        return out
    base = "mlp" if arch == "poor" else arch
    config = yaml.safe_load((ROOT / "configs" / "train" / f"{base}.yaml").read_text())
    shrink = 20 if arch == "poor" else (4 if quick else 1)
    config["stages"] = [{**s, "epochs": max(2, s["epochs"] * factor // shrink),
                         "patience": max(2, s["patience"] * factor // shrink)}
                        for s in config["stages"]]
    config["data"] = str(DATA)
    train_run(config, out=out)
    return out


def label(arch: str, factor: int) -> str:
    return arch if factor == 1 else f"{arch}-epochs{factor}"


def simulated(n: int, seed: int, exposure_range=None, exposure=None) -> dict:
    if exposure is None:
        rng = np.random.default_rng(seed)
        exposure = np.exp(rng.uniform(*np.log(exposure_range), n))
    return examples.simulate_counts(n, MU, TAU, seed, exposure=exposure)


def quantities(mean_stats: dict) -> np.ndarray:
    """E[mu], E[tau] from a fixed point's mean statistics."""
    return np.array([mean_stats["mu"][0], mean_stats["tau"][1]])


def posterior_sd(exact) -> np.ndarray:
    """The sd of mu (Gaussian) and of tau (Gamma: shape / rate^2) under q at the exact
    fixed point."""
    mu = exact.mean_stats["mu"]
    shape, rate = exact.eta["tau"][0] + 1, -exact.eta["tau"][1]
    return np.array([np.sqrt(mu[1] - mu[0] ** 2), np.sqrt(shape) / rate])


def network(run: Path) -> dict:
    """The providers: the network with the Gauss-Hermite fallback; `poor` alone."""
    if run.name.startswith("poor"):
        return {"z": NetworkMoments(run)}
    return {"z": WithFallback(NetworkMoments(run), GH)}


def band(run: Path, num: int, exposure: np.ndarray, first: int = 0) -> dict:
    inside, inside_lr, widths, agreement, seconds, converged = [], [], [], [], [], 0
    for seed in range(2000 + first, 2000 + first + num):
        data = simulated(len(exposure), seed, exposure=exposure)
        model = examples.poisson_lognormal(data["counts"], data["exposure"])
        began = time.perf_counter()
        learned = run_cavi(model, network(run), num_draws=NUM_DRAWS, linear_response=True,
                           **SOLVER)
        seconds.append(time.perf_counter() - began)
        converged += int(np.sum(learned.draws["converged"]))
        exact = run_cavi(model, {"z": GH}, **EXACT)
        truth, sd = quantities(exact.mean_stats), posterior_sd(exact)
        draws = np.stack([learned.draws["mean_stats"]["mu"][:, 0],
                          learned.draws["mean_stats"]["tau"][:, 1]], 1)
        lo, hi = band_limits(draws)
        inside.append((lo <= truth) & (truth <= hi))
        print(f"  band data set {seed}: network off by "
              f"{np.abs(quantities(learned.mean_stats) - truth) / sd} sd, half-width "
              f"{(hi - lo) / 2 / sd} sd, covers {inside[-1]}", flush=True)
        widths.append((hi - lo) / 2 / sd)
        # the linear-response band of eta; E[mu], E[tau] by the closed forms at each draw
        response = learned.draws["eta_linear_response"]
        lr = np.stack([-response["mu"][:, 0] / (2 * response["mu"][:, 1]),
                       (response["tau"][:, 0] + 1) / -response["tau"][:, 1]], 1)
        lr_lo, lr_hi = band_limits(lr)
        inside_lr.append((lr_lo <= truth) & (truth <= lr_hi))
        agreement.append(np.abs(np.array([lr_lo, lr_hi]) - np.array([lo, hi])).max(0)
                         / np.maximum(hi - lo, 1e-300))
    inside, inside_lr = np.asarray(inside), np.asarray(inside_lr)
    out = {"num_datasets": num, "first_dataset_seed": 2000 + first, "n": len(exposure),
           "coverage": {
        "E[mu]": float(inside[:, 0].mean()), "E[tau]": float(inside[:, 1].mean()),
        "both": float(np.all(inside, 1).mean())},
        "coverage_linear_response": {"E[mu]": float(inside_lr[:, 0].mean()),
                                     "E[tau]": float(inside_lr[:, 1].mean())},
        "median_half_width_over_sd": dict(zip(("E[mu]", "E[tau]"),
                                              np.median(widths, 0).tolist(), strict=True)),
        "linear_response_vs_draws_max_endpoint_gap_over_width": dict(zip(
            ("E[mu]", "E[tau]"), np.median(agreement, 0).tolist(), strict=True)),
        "seconds_per_dataset_with_draws": float(np.median(seconds)),
        "draws_converged": f"{converged}/{num * NUM_DRAWS}", "target": BAND_TARGET,
        "rule": BAND_RULE}
    print(f"  band: coverage {out['coverage']}, LR {out['coverage_linear_response']}, "
          f"half-width/sd {out['median_half_width_over_sd']}", flush=True)
    return out


def audits(run: Path, num: int, seeds: int, exposure_range, first: int = 0) -> dict:
    members = max(30, AUDIT_N // 100)
    hits, errors, widths, z2, cost, failed = [], [], [], [], [], 0
    for seed in range(5000 + first, 5000 + first + num):
        data = simulated(AUDIT_N, seed, exposure_range)
        model = examples.poisson_lognormal(data["counts"], data["exposure"])
        providers = network(run)
        began = time.perf_counter()
        learned = run_cavi(model, providers, **SOLVER)
        solve_seconds = time.perf_counter() - began
        exact = run_cavi(model, {"z": GH}, **EXACT)
        truth, sd = quantities(exact.mean_stats), posterior_sd(exact)
        for audit_seed in range(seeds):
            began = time.perf_counter()
            try:
                audit = audit_result(model, learned, Audit({"z": GH}, members, audit_seed),
                                     providers, tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
            except ValueError as err:  # no answer: counted as a miss, its figures NaN
                print(f"  audit seed {audit_seed}: {err}", flush=True)
                failed += 1
                hits.append(np.zeros(2, bool))
                continue
            cost.append((time.perf_counter() - began) / solve_seconds)
            centre, lo, hi = (quantities(d) for d in (audit.mean_stats, audit.mean_lo,
                                                       audit.mean_hi))
            hits.append((lo <= truth) & (truth <= hi))
            errors.append(np.abs(centre - truth) / sd)
            widths.append((hi - lo) / 2 / sd)
            z2.append(audit.z2["z"])
        network_error = np.abs(quantities(learned.mean_stats) - truth) / sd
        print(f"  data set {seed}: network off by {network_error} sd; audits cover "
              f"{np.mean(hits[-seeds:], 0)}", flush=True)
    hits = np.asarray(hits)
    out = {"num_audits": len(hits), "num_datasets": num, "first_dataset_seed": 5000 + first,
           "seeds_per_dataset": seeds,
           "N": AUDIT_N, "members": members, "coverage": {
               "E[mu]": float(hits[:, 0].mean()), "E[tau]": float(hits[:, 1].mean()),
               "both": float(np.all(hits, 1).mean())},
           "median_error_over_sd": dict(zip(("E[mu]", "E[tau]"),
                                            np.median(errors, 0).tolist(), strict=True)),
           "median_half_width_over_sd": dict(zip(("E[mu]", "E[tau]"),
                                                 np.median(widths, 0).tolist(), strict=True)),
           "mean_z2": float(np.nanmean(z2)), "failed_audits": failed,
           "audit_seconds_over_solve_seconds_median": float(np.median(cost)),
           "target": AUDIT_TARGET}
    print(f"  audit: coverage {out['coverage']}, error/sd {out['median_error_over_sd']}, "
          f"half-width/sd {out['median_half_width_over_sd']}, z2 {out['mean_z2']:.2f}, "
          f"cost {out['audit_seconds_over_solve_seconds_median']:.2f} x the solve", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--audit-datasets", type=int, default=20)
    parser.add_argument("--audit-seeds", type=int, default=10)
    parser.add_argument("--audit-first", type=int, default=0,
                        help="the first audit data set (its seed is 5000 + this)")
    parser.add_argument("--band-first", type=int, default=0,
                        help="the first band data set (its seed is 2000 + this)")
    parser.add_argument("--archs", default="mlp,convex_potential,geometric_flow,poor")
    parser.add_argument("--epochs-factor", type=int, default=1,
                        help="train with each stage's epochs and patience times this "
                             "(results under ARCH-epochsF)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the other networks' results in results/audit.json")
    args = parser.parse_args()
    real = examples.cancer_data()
    exposure_range = (real["exposure"].min(), real["exposure"].max())
    data_config(real, exposure_range)
    kept = {}
    if args.keep and (ROOT / "benchmarks" / "results" / "audit.json").is_file():
        kept = json.loads((ROOT / "benchmarks" / "results" / "audit.json").read_text())[
            "networks"]
    result = {"solver": SOLVER, "exact_solver": EXACT, "num_draws": NUM_DRAWS, "networks": kept}
    began = time.time()
    for arch in args.archs.split(","):
        run = trained(arch, args.quick, args.epochs_factor)
        name = label(arch, args.epochs_factor)
        metrics = json.loads((run / "metrics.json").read_text())
        print(f"{arch}: trained in {metrics['training_seconds']:.0f} s, held-out 90% coverage "
              f"{metrics['test']['coverage']['0.9']:.3f}", flush=True)
        band_key = "band" if args.band_first == 0 else f"band_{2000 + args.band_first}"
        same = kept.get(name, {}).get("training_seconds") == metrics["training_seconds"]
        entry = result["networks"][name] = {  # what this run measures replaces what is kept,
            **(kept[name] if same else {}),  # and a retrained network's keeps nothing
            "run": str(run.relative_to(ROOT)),
            "training_seconds": metrics["training_seconds"],
            "epochs": metrics["epochs"], "max_nrmse": max(metrics["test"]["nrmse"].values()),
            "held_out_coverage_90": metrics["test"]["coverage"]["0.9"],
            "epochs_factor": args.epochs_factor, "exact_tol": EXACT["tol"],
            "interval_floor_over_tol": STEP_SLACK,
            "field_lengths": "one per eta coordinate" if load_header(run / "model.eqx")[
                "hyperparams"].get("residual_field_per_coordinate") else "one"}
        if args.datasets:
            entry[band_key] = None if arch == "poor" else band(
                run, args.datasets, real["exposure"], args.band_first)
        if args.audit_datasets:
            entry["audit"] = audits(run, args.audit_datasets, args.audit_seeds,
                                    exposure_range, args.audit_first)
        result["seconds_total"] = time.time() - began
        print("saved", save("audit", result), flush=True)


if __name__ == "__main__":
    main()
