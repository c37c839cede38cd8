"""Run every benchmark, then write benchmarks/RESULTS.md from benchmarks/results/*.json.

    python benchmarks/run_all.py [--quick] [--report-only]

Each benchmark runs in its own process (its figures and JSON are its own; a failure is
reported and the others still run). `--quick` runs reduced versions (fewer eta, fewer
architectures, 10 CAVI data sets: ~10 minutes on 2 CPU cores) and marks every JSON and
RESULTS.md as quick; the full run takes about 40 minutes. `--report-only` only rewrites
RESULTS.md from the JSON files already there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bayes_et._files import write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# script -> (full arguments, quick arguments)
BENCHMARKS = {
    "bench_exact_moments.py": ([], ["--n", "2000"]),
    "bench_generate.py": ([], ["--n", "16"]),
    "bench_et_forward.py": ([], ["--n", "2000", "--draws", "8"]),
    "bench_dataset_quality.py": ([], ["--configs", "gamma", "quartic"]),
    "conjugate_regression.py": ([], []),
    "bench_training.py": ([], ["--archs", "mlp,convex_potential", "--no-active"]),
    "bench_cavi.py": ([], ["--quick"]),
    "bench_plates.py": ([], ["--quick"]),
    "bench_audit.py": ([], ["--quick"]),
    "bench_multivariate.py": ([], ["--rows", "20"]),
}


def run_benchmarks(quick: bool) -> dict[str, dict]:
    env = {**os.environ, "BAYES_ET_BENCH_MODE": "quick" if quick else "full"}
    status = {}
    for script, (full, short) in BENCHMARKS.items():
        args = short if quick else full
        print(f"== {script} {' '.join(args)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / script), *args], env=env,
                              cwd=HERE.parent)
        status[script] = {"returncode": done.returncode,
                          "seconds": round(time.perf_counter() - start, 1)}
        print(f"== {script}: exit {done.returncode} after {status[script]['seconds']} s",
              flush=True)
    return status


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _g(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_g(v) if not isinstance(v, str) else v for v in row) + " |"
                  for row in rows]


def _source(name: str, data: dict) -> str:
    env = data.get("environment", {})
    versions = env.get("versions", {})
    return (f"*{name}.json — {env.get('mode', '?')} run on {env.get('cpu_count', '?')} CPU "
            f"cores ({env.get('jax_backend', '?')}), jax {versions.get('jax', '?')}, "
            f"blackjax {versions.get('blackjax', '?')}, bayes-et {versions.get('bayes-et', '?')}*")


def _training(data: dict) -> list[str]:
    t = data["targets"]
    bins = lambda r: ", ".join(f"{b['coverage_90']:.2f}/{b['mean_z2']:.2f}" for b in r["by_spread"])
    rows = [[r["data"], r["architecture"], r["num_train"], r["train_seconds"], r["max_nrmse"],
             r.get("max_rms_error_over_mcse"), r["coverage_90"], r["mean_z2"], bins(r),
             r["accurate"], r["calibrated"], r["locally_calibrated"]] for r in data["runs"]]
    out = [
        "## ET networks: accuracy and calibration (held-out 10%)", "",
        f"Targets: RMS(error/MCSE) <= {t['rms_error_over_mcse']} on MCMC data, normalised RMSE "
        f"<= {t['nrmse']} on exact data, 90% coverage in {t['coverage_90']} and mean z² in "
        f"{t['mean_z2']}, overall and in each quarter of predictive spread (local). Truth: "
        "exact moments; for ginzburg_landau_mcmc (2-D x, no exact moments) a float64 grid "
        "integral computed in the benchmark.", "",
        *_table(["data", "architecture", "train eta", "train s", "max NRMSE",
                 "max RMS(err/MCSE)", "90% coverage", "mean z²",
                 "coverage / z² per spread quarter", "accurate", "calibrated", "locally"],
                rows)]
    active = data.get("active")
    if active:
        curves = active["curves"]
        out += ["", f"Active learning ({active['architecture']}, Quartic over its full box): "
                "max NRMSE on the same held-out eta against the eta used, by predictive "
                "spread and by uniform design at equal budget.", "",
                *_table(["eta", "spread", "uniform"],
                        [[p["num_eta"], p["max_nrmse"], q["max_nrmse"]]
                         for p, q in zip(curves["spread"], curves["uniform"], strict=True)])]
    return out


def _throughput(forward: dict, exact: dict | None, generate: dict | None) -> list[str]:
    closed = next(r["mu_per_s"] for r in forward["rows"] if r["model"] == "closed_form")
    rows = [["closed form (Gamma, jitted)", closed, "-", 1.0]]
    rows += [[f"{r['model']} network", r["mu_per_s"], r["mu_per_s_with_draws"],
              closed / r["mu_per_s"]] for r in forward["rows"] if r["model"] != "closed_form"]
    gamma = lambda data: next((r for r in data["rows"] if r["family"] == "Gamma()"), None)
    if exact and gamma(exact):
        q = gamma(exact)["quadrature_eta_per_s"]
        rows.append(["quadrature (Gamma, float64)", q, "-", closed / q])
    if generate and gamma(generate):
        for kernel, name in (("nuts", "NUTS"), ("chees", "ChEES-HMC")):
            n = gamma(generate)[kernel]["eta_per_s"]
            rows.append([f"{name} (Gamma, generate, gate and re-runs)", n, "-", closed / n])
    return ["## mu_T per second (Gamma eta, one batch)", "",
            f"Networks untrained at their default size; with draws: {forward['draws']} weight "
            "draws per eta (the predictive).", "",
            *_table(["route", "mu_T / s", "mu_T / s with draws", "closed form / route"], rows)]


def _exact(data: dict) -> list[str]:
    rows = [[r["family"], r.get("closed_eta_per_s"), r.get("quadrature_eta_per_s"),
             r.get("closed_over_quadrature"), r.get("max_scaled_error")] for r in data["rows"]]
    return ["## Exact moments: closed form versus quadrature", "",
            *_table(["family", "closed eta/s", "quadrature eta/s", "ratio",
                     "max scaled error"], rows)]


def _generate(data: dict) -> list[str]:
    rows = [[r["family"], r["n_eta"], *[r[k][m] for k in ("nuts", "chees") for m in
                                         ("seconds", "ess_per_s", "mean_z2", "flagged_fraction")],
             r["chees_over_nuts_wall"], r["chees_over_nuts_ess_per_s"]] for r in data["rows"]]
    return ["## MCMC generation: NUTS versus ChEES-HMC, as a user's generation runs", "",
            "`generate` of 2 chunks with the default sampler settings (4 chains x 1000 draws, "
            "the quality gate and its re-runs); seconds of the second chunk (compiled).", "",
            *_table(["family", "eta per chunk", "NUTS s", "NUTS ESS/s", "NUTS mean z²",
                     "NUTS flagged", "ChEES s", "ChEES ESS/s", "ChEES mean z²",
                     "ChEES flagged", "NUTS s / ChEES s", "ChEES/NUTS ESS/s"], rows)]


def _quality(data: dict) -> list[str]:
    rows = [[r["config"], r["kernel"], r["n"], r["flagged_fraction"], r["compute_seconds"],
             r["eta_per_s"], r["ess_per_s"], r["mean_z2"], r["min_ess"]] for r in data["rows"]]
    return ["## MCMC dataset quality by kernel (z of the targets against exact moments)", "",
            "Each default data config generated by each kernel (compilation and re-runs "
            "included).", "",
            *_table(["config", "kernel", "eta", "flagged", "seconds", "eta/s", "ESS/s",
                     "mean z² (1 = honest)", "min ESS"], rows)]


def _natural(data: dict) -> list[str]:
    return ["## Natural gradient versus Adam (conjugate regression, VI stage)", "",
            *_table(["Adam steps", "natural-gradient steps", "speed-up"],
                    [[data["vi_steps_adam"], data["vi_steps_natural"], data["speedup"]]])]


def _cavi(data: dict) -> list[str]:
    h, c = data["headline"], data["coverage"]
    s = h["seconds"]
    rows = [["network providers", s["network"], h["iterations"]["network"]],
            ["network providers, no ELBO trace", s["network_no_elbo"], "-"],
            [f"network providers + {data['num_draws']} function draws (band)",
             s["network_with_band"], "-"],
            ["quadrature providers", s["quadrature"], h["iterations"]["quadrature"]],
            ["NUTS, joint posterior (4 chains)", s["nuts_joint"], "-"]]
    errs = [[name, *[v for v in e.values()]] for name, e in h["error_over_nuts_mcse"].items()]
    kl = h["kl_network_vs_quadrature"]
    net = data.get("network", {})
    return [
        "## CAVI (quartic_prior): network versus quadrature versus NUTS", "",
        f"The network: mlp trained in {_g(net.get('train_seconds'))} s on "
        "configs/data/quartic_cavi.yaml (4000 quadrature eta on the slice the model visits); "
        f"held-out max NRMSE {_g(net.get('max_nrmse'))}, 90% coverage "
        f"{_g(net.get('coverage_90'))}, mean z² {_g(net.get('mean_z2'))}.", "",
        *_table(["method", "seconds to the fixed point (after compilation)", "sweeps"], rows),
        "", "Ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in h["ratios"].items()) + ".", "",
        f"KL(q_net ‖ q_quadrature): {', '.join(f'{k} {v:.1e}' for k, v in kl.items())}. "
        f"Band contains the quadrature fixed point: {_g(h['band_contains_quadrature'])}. Over "
        f"{c['num_datasets']} simulated data sets the 90% band covers the quadrature fixed "
        f"point in {c['band_coverage']:.0%} (target {c['coverage_target']}); max KL "
        f"{', '.join(f'{k} {v:.1e}' for k, v in c['kl_max'].items())}.", "",
        *([] if "coverage_by_architecture" not in data else [
            "Band coverage per architecture (the same data sets):", "",
            *_table(["architecture", "band coverage", "target", "max KL mu", "max KL tau"],
                    [[a, v["band_coverage"], str(v["coverage_target"]), v["kl_max"]["mu"],
                      v["kl_max"]["tau"]]
                     for a, v in data["coverage_by_architecture"].items()]), ""]),
        "Mean-field CAVI against the exact posterior (NUTS), (CAVI − NUTS) / MCSE:", "",
        *_table(["providers", *h["mean_stats"]["labels"]], errs)]


def _plates(data: dict) -> list[str]:
    routes = ("network", "gauss_hermite", "quadrature")
    rows = []
    for r in data.get("largest", []):
        rows.append(["simulated (own process, one call)", r["n"], r["route"], "in the next",
                     r["seconds_with_compilation"], r["iterations"], r["peak_rss_gib"]])
    for r in data["rows"]:
        for route in routes:
            if route in r:
                rows.append([r.get("data", "simulated"), r["n"], route,
                             r[route]["compile_seconds"], r[route]["solve_seconds"],
                             r[route]["iterations"], "-"])
        for name in ("nuts", "svi"):
            if name in r:
                rows.append([r.get("data", "simulated"), r["n"], f"NumPyro {name.upper()}", "-",
                             r[name]["seconds"], "-", "-"])
    real = data["rows"][0]
    errs = [[route, *[real[route]["error_over_nuts_mcse"][k] for k in ("mu", "tau")]]
            for route in routes if route in real and "error_over_nuts_mcse" in real[route]]
    lines = [
        "## CAVI with plates: the Poisson log-normal model, N = 10 to 10^6", "",
        *_table(["data", "N", "route", "compile s", "s to the fixed point", "sweeps",
                 "peak RSS GiB"], rows), "",
        "Real data (N = 301): network vs exact fixed point, in posterior sd: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in real["network_error_in_posterior_sd"].items())
        + f"; KL(q_net ‖ q_quadrature) per member max {real['kl_network_vs_exact']['max']:.1e}"
        f", mean {real['kl_network_vs_exact']['mean']:.1e}.", "",
        "The network's band and the audit on this plate: 'Error bars that hold' below.", "",
        "Mean-field CAVI against the exact posterior (NumPyro NUTS), (CAVI − NUTS) / MCSE:", "",
        *_table(["providers", "E[mu]", "E[tau]"], errs)]
    acc = data.get("acceleration")
    if acc:
        table = []
        for r in acc["rows"]:
            for route in ("gauss_hermite", "network"):
                plain, fast = r[f"{route}_plain"], r[f"{route}_squarem"]
                shift = r[f"{route}_shift_in_posterior_sd"]
                ratio = r.get(f"nuts_over_{route}")
                table.append([r["n"], route, f"{plain['sweeps']} → {fast['sweeps']}",
                              plain["solve_seconds"], fast["solve_seconds"],
                              f"{shift['mu']:.1e}, {shift['tau']:.1e}",
                              "-" if ratio is None else f"{ratio['plain']:.0f}× → "
                              f"{ratio['squarem']:.0f}×"])
        lines += ["", "Plain against SQUAREM-accelerated sweeps (tol 1e-6; seconds to the "
                  "fixed point with the spread check and fallback rounds; the shift of E[mu], "
                  "E[tau] in posterior sd; NumPyro NUTS over CAVI at N = 10^4):", "",
                  *_table(["N", "route", "sweeps", "plain s", "SQUAREM s", "shift / sd",
                           "NUTS / CAVI"], table)]
    two = data.get("two_dimensional_plate")
    if two:
        nuts = two["nuts_joint"]
        lines += ["", f"2-D plate (N = {two['n']}, no quadrature; NUTS data, tensor "
                  "Gauss-Hermite fallback): "
                  f"network CAVI {two['network']['solve_seconds']:.2f} s, NUTS as the provider "
                  f"~{two['nuts_provider_estimate_seconds']:.0f} s (estimated from "
                  f"{two['nuts_provider_seconds_per_eta']:.3f} s per eta), joint NumPyro NUTS "
                  f"{nuts['seconds']:.1f} s; E[m] network "
                  f"{', '.join(f'{v:.4f}' for v in two['network']['m'])} vs NUTS "
                  f"{nuts['m1']['mean']:.4f}, {nuts['m2']['mean']:.4f}."]
        audit = two.get("audit_nuts_oracle")
        if audit:
            lines += ["", f"The audit with a NUTS oracle ({audit['members']} members): "
                      f"{audit['seconds']:.1f} s = {audit['seconds_over_solve']:.1f}× the "
                      f"network solve; E[m] {', '.join(f'{v:.4f}' for v in audit['m'])}, "
                      f"network z² {audit['z2']:.2f}."]
        gh = two.get("gauss_hermite")
        if gh:
            one_d = next((r for r in data["rows"]
                          if r["n"] == 10_000 and r.get("data") == "simulated"), {})
            per = lambda seconds, sweeps: f"{seconds / (10_000 * sweeps) * 1e6:.1f} µs"
            table = [[f"2-D plate, {k}", v["solve_seconds"], v["sweeps"],
                      per(v["solve_seconds"], v["sweeps"])] for k, v in gh["n_10000"].items()]
            table += [[f"1-D plate, {k} (table above)", one_d[k]["solve_seconds"],
                       one_d[k]["iterations"], per(one_d[k]["solve_seconds"],
                                                   one_d[k]["iterations"])]
                      for k in ("network", "gauss_hermite") if k in one_d]
            ex = gh["audit_exact_oracle"]
            lines += ["", "The 2-D plate's exact route, tensor Gauss-Hermite (16² and, on "
                      "retry, 32² "
                      f"nodes in the Laplace frame): N = {two['n']} in {gh['solve_seconds']:.2f}"
                      f" s ({gh['sweeps']} sweeps; the network with its fallback takes "
                      f"{gh['network_solve_over_exact_solve']:.2f}× as long); the network's E[m] "
                      f"is {', '.join(f'{v:+.3f}' for v in gh['network_minus_exact_over_sd'])}"
                      " posterior sd from it; an audit with it as the oracle (30 members) "
                      f"{'contains' if ex['contains_exact'] else 'misses'} it (half-width "
                      f"{', '.join(f'{v:.3f}' for v in ex['half_width_over_sd'])} sd, "
                      f"{ex['seconds']:.1f} s). Seconds per member per sweep at N = 10^4 "
                      "(after compilation; the network with the Gauss-Hermite fallback, no "
                      "sampler in the loop):", "",
                      *_table(["route", "s to the fixed point", "sweeps",
                               "per member per sweep"], table)]
    return lines


QUANTILE_BAND = "5%, 95% quantiles"  # the band of a record without a rule (before band_limits)


def _audit(data: dict) -> list[str]:
    """The plate's band and the audit, per network."""
    pair = lambda d: f"{d['E[mu]']:.1%}, {d['E[tau]']:.1%}"
    widths = lambda d: f"{d['E[mu]']:.2f}, {d['E[tau]']:.2f}"
    bands, audits = [], []
    for name, net in data["networks"].items():
        a, field = net.get("audit"), net.get("field_lengths", "one")
        # measured before: the exact fixed point to tol 1e-6, the audit's floor 10 x tol
        exact_tol = _g(net.get("exact_tol", 1e-6))
        floor = f"{_g(net.get('interval_floor_over_tol', 10.0))} tol"
        for b in (net[k] for k in net if k.startswith("band") and net[k]):
            first = b.get("first_dataset_seed", 2000)
            seeds = f"{first}-{first + b['num_datasets'] - 1}"
            bands.append([name, field, exact_tol, b.get("rule", QUANTILE_BAND),
                          f"{b['num_datasets']} ({seeds})", pair(b["coverage"]),
                          pair(b["coverage_linear_response"]),
                          widths(b["median_half_width_over_sd"]),
                          b["seconds_per_dataset_with_draws"], b["draws_converged"]])
        if a:
            first = a.get("first_dataset_seed", 5000)
            seeds = f"{first}-{first + a['num_datasets'] - 1}"
            audits.append([name, field, exact_tol, floor,
                           f"{a['num_audits']} (data sets {seeds})", a["members"],
                           pair(a["coverage"]),
                           widths(a["median_error_over_sd"]),
                           widths(a["median_half_width_over_sd"]), a["mean_z2"],
                           a["audit_seconds_over_solve_seconds_median"]])
    return [
        "## Error bars that hold: the Poisson log-normal plate", "",
        f"The network's 90% band ({data['num_draws']} function draws; E[mu], E[tau]) against "
        "the Gauss-Hermite fixed point, data simulated on the 301 counties' exposures (target "
        "coverage [0.8, 0.98], half-width <= 0.5 posterior sd; the residual field's lengths: "
        "one per statistic, or one per statistic and eta coordinate; the band: the draws' "
        "mean ± Student's t × sd × √(1 + 1/S), a prediction interval, or, measured before, "
        "their 5% and 95% quantiles, which hold 85% of a new draw at S = 32):", "",
        *_table(["network", "field lengths", "exact to tol", "band", "data sets", "coverage",
                 "linear-response coverage", "half-width / sd", "s per data set",
                 "draws converged"], bands), "",
        "The audit at N = 10^4 (Gauss-Hermite oracle): coverage of the exact E[mu], E[tau] by "
        "the rectified fixed point's 90% interval (target [0.85, 0.95]; 'poor' is the mlp "
        "trained 20x shorter, solved without a fallback; '-epochs4': trained 4x longer; the "
        "interval is never narrower than the floor, relative to the value, after the Newton "
        "step that carries the solver's leftover):", "",
        *_table(["network", "field lengths", "exact to tol", "interval floor", "audits",
                 "members", "coverage", "error / sd",
                 "half-width / sd", "network z^2", "audit s / solve s"], audits)]


def _multivariate(data: dict) -> list[str]:
    gold = data["nuts"]
    rows = [[name, data[key]["seconds"], *data[key]["mu"], *data[key]["lambda_diag"],
             ", ".join(f"{v:+.2f}" for v in data[key].get("minus_nuts_over_nuts_sd", []))
             or "MCSE " + ", ".join(f"{v:.3f}" for v in gold["mcse"])]
            for key, name in (("cavi", "CAVI, tensor Gauss-Hermite plate"),
                              ("nuts", "NumPyro NUTS (4 x 1000)"),
                              ("svi", f"NumPyro SVI, AutoNormal ({data['svi']['steps']} steps)"))]
    cavi = data["cavi"]
    return ["## Multivariate Poisson log-normal on real cells: CAVI, NUTS, SVI", "",
            f"The first {data['rows']} scRT cells, {data['genes']} genes, one model and prior "
            f"(bench_multivariate.py). CAVI: {cavi['sweeps']} sweeps, "
            f"{'converged' if cavi['converged'] else 'NOT converged'}"
            f"{'' if 'flag_counts' not in cavi else ' (flags ' + str(cavi['flag_counts']) + ')'}"
            ", the second call timed "
            f"(the first, with compilation: {_g(cavi['first_call_seconds'])} s). pyPLNmodels: "
            f"{data['pyplnmodels']}.", "",
            *_table(["method", "s", "E[mu_1]", "E[mu_2]", "E[mu_3]", "E[Lambda_11]",
                     "E[Lambda_22]", "E[Lambda_33]", "(x - NUTS) / NUTS sd"], rows)]


def render() -> str:
    """RESULTS.md from the JSON files in results/."""
    sections = [
        ("training", _training), ("cavi", _cavi), ("plates", _plates), ("audit", _audit),
        ("multivariate", _multivariate),
        ("exact_moments", _exact),
        ("generate", _generate), ("dataset_quality", _quality), ("natural_gradient", _natural),
    ]
    lines = ["# Benchmark results", "",
             "Written by `python benchmarks/run_all.py`; every number comes from the JSON file "
             "named under its table (machine and versions recorded there).", ""]
    forward = _load("et_forward")
    if forward:
        lines += [*_throughput(forward, _load("exact_moments"), _load("generate")), "",
                  _source("et_forward", forward), ""]
    for name, fn in sections:
        data = _load(name)
        if data is None:
            lines += [f"## {name}: no results yet", ""]
            continue
        lines += [*fn(data), "", _source(name, data), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced runs (~10 minutes)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite RESULTS.md from results/*.json")
    args = parser.parse_args()
    start = time.perf_counter()
    status = {} if args.report_only else run_benchmarks(args.quick)
    path = write_text(HERE / "RESULTS.md", render())
    failed = [s for s, v in status.items() if v["returncode"] != 0]
    print(f"wrote {path} after {time.perf_counter() - start:.0f} s"
          + (f"; FAILED: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
