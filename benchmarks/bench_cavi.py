"""CAVI on the quartic_prior model: network providers versus quadrature versus joint NUTS.

    python benchmarks/bench_cavi.py [--datasets 50] [--quick]

1. Trains (once; reused from runs/bench_cavi/) each of `--archs` (configs/train/ARCH.yaml) on
   configs/data/quartic_cavi.yaml: Quartic moments by quadrature on the slice of eta that
   the model visits.
2. On the data of configs/cavi/quartic_prior.yaml: time to the fixed point with network
   providers (with and without the ELBO trace, and with 32 function draws for the band),
   with quadrature providers, and a BlackJAX NUTS run (4 chains) on the joint posterior;
   accuracy as KL to the quadrature fixed point and as posterior means against NUTS.
3. Over `--datasets` simulated data sets, for each architecture: KL(q_net || q_quadrature)
   and how often the quadrature fixed point lies inside the network's 90% band.
Writes results/cavi.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import yaml
from _common import best_time, save

from bayes_et.cavi import Audit, ExactMoments, NetworkMoments, examples, run_cavi
from bayes_et.cavi._run import load_cavi_config
from bayes_et.expfam import Quartic, kl_divergence
from bayes_et.train import train_run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench_cavi"
CONFIG = ROOT / "configs" / "cavi" / "quartic_prior.yaml"
NUM_DRAWS = 32
COVERAGE_TARGET = (0.80, 0.98)


def trained_run(quick: bool, arch: str = "mlp") -> Path:
    out = WORK / (f"{arch}-quartic_cavi-quick" if quick else f"{arch}-quartic_cavi")
    if not (out / "model.eqx").exists():
        config = yaml.safe_load((ROOT / "configs" / "train" / f"{arch}.yaml").read_text())
        config["data"] = str(ROOT / "configs" / "data" / "quartic_cavi.yaml")
        if quick:
            config["stages"] = [{"name": "map", "epochs": 300, "lr": 3e-3, "patience": 60},
                                {"name": "vi", "epochs": 50, "lr": 1e-2, "patience": 20}]
        train_run(config, out=out)
    return out


def joint_nuts(data: np.ndarray, eta_prior, a0: float, b0: float, key, num_chains: int = 4,
               num_warmup: int = 1000, num_samples: int = 2000) -> dict:
    """The exact posterior p(mu, tau | x) by NUTS on (mu, log tau): means of
    [mu, mu^2, mu^3, mu^4] and [log tau, tau] with their Monte-Carlo standard errors."""
    x, eta_prior = jnp.asarray(data), jnp.asarray(eta_prior)

    def log_density(z):
        mu, u = z[0], z[1]
        tau = jnp.exp(u)
        prior = eta_prior @ jnp.stack([mu, mu**2, mu**3, mu**4]) + a0 * u - b0 * tau
        return prior + x.size / 2 * u - tau / 2 * jnp.sum((x - mu) ** 2)

    def chain(key):
        warm_key, sample_key = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, log_density)
        (state, params), _ = warmup.run(warm_key, jnp.zeros(2), num_steps=num_warmup)
        kernel = blackjax.nuts(log_density, **params)

        def step(state, k):
            state, _ = kernel.step(k, state)
            mu, u = state.position
            return state, jnp.stack([mu, mu**2, mu**3, mu**4, u, jnp.exp(u)])

        return jax.lax.scan(step, state, jax.random.split(sample_key, num_samples))[1]

    run = jax.jit(lambda k: jax.vmap(chain)(jax.random.split(k, num_chains)))
    seconds = best_time(lambda: run(key), repeats=1)
    draws = np.asarray(run(key), np.float64)
    ess = np.asarray(blackjax.diagnostics.effective_sample_size(draws, 0, 1))
    flat = draws.reshape(-1, 6)
    return {"seconds": seconds, "mean": flat.mean(0), "mcse": flat.std(0) / np.sqrt(ess),
            "ess_min": float(ess.min())}


def headline(run_dir: Path, quick: bool) -> dict:
    model = load_cavi_config(CONFIG).model
    cfg = yaml.safe_load(CONFIG.read_text())
    net = {"mu": NetworkMoments(run_dir)}
    timed = {
        "network": lambda: run_cavi(model, net).eta["mu"],
        "network_no_elbo": lambda: run_cavi(model, net, track_elbo=False).eta["mu"],
        "network_with_band": lambda: run_cavi(model, net, num_draws=NUM_DRAWS).eta["mu"],
        "quadrature": lambda: run_cavi(model).eta["mu"],
    }
    seconds = {name: best_time(fn) for name, fn in timed.items()}
    learned, exact = run_cavi(model, net, num_draws=NUM_DRAWS), run_cavi(model)
    data = examples.simulate(**cfg["data"]["simulate"])
    args = cfg["arguments"]
    nuts = joint_nuts(data, args["eta_prior"], args["a0"], args["b0"], jax.random.key(0),
                      num_warmup=500 if quick else 1000, num_samples=1000 if quick else 2000)
    seconds["nuts_joint"] = nuts["seconds"]
    labels = ["E[mu]", "E[mu^2]", "E[mu^3]", "E[mu^4]", "E[log tau]", "E[tau]"]
    as_vector = lambda r: np.concatenate([r.mean_stats["mu"], r.mean_stats["tau"]])
    versus_nuts = {
        name: {lab: float(d) for lab, d in zip(labels, (as_vector(r) - nuts["mean"])
                                               / nuts["mcse"], strict=True)}
        for name, r in (("network", learned), ("quadrature", exact))}
    return {
        "seconds": seconds,
        "ratios": {"quadrature_over_network": seconds["quadrature"] / seconds["network"],
                   "nuts_over_network": seconds["nuts_joint"] / seconds["network"],
                   "nuts_over_network_with_band": seconds["nuts_joint"]
                   / seconds["network_with_band"],
                   "nuts_over_quadrature": seconds["nuts_joint"] / seconds["quadrature"]},
        "iterations": {"network": learned.iterations, "quadrature": exact.iterations},
        "kl_network_vs_quadrature": {
            name: kl_divergence(f, learned.eta[name], exact.eta[name])
            for name, f in zip(model.names, model.families, strict=True)},
        "mean_stats": {"network": as_vector(learned).tolist(),
                       "quadrature": as_vector(exact).tolist(), "nuts": nuts["mean"].tolist(),
                       "nuts_mcse": nuts["mcse"].tolist(), "labels": labels},
        "error_over_nuts_mcse": versus_nuts, "nuts_ess_min": nuts["ess_min"],
        "band_contains_quadrature": _inside(model, learned, exact),
        "flags": learned.flags,
    }


def _inside(model, learned, exact) -> bool:
    """Whether every coupled coordinate of the exact fixed-point eta is inside the band."""
    contains = learned.band_contains(exact.eta)
    return all(bool(np.all(contains[name][model.coupled(i)]))
               for i, name in enumerate(model.names))


def _half_width_over_sd(learned, exact) -> list[float]:
    """The 90% band's half-width of E[mu] and E[tau] in posterior sd (at the exact fixed
    point: sd of mu from its moments, of tau from the Gamma's shape and rate)."""
    band = learned.band("mean_stats")
    mu, tau = exact.mean_stats["mu"], exact.eta["tau"]
    sd = [np.sqrt(mu[1] - mu[0] ** 2), np.sqrt(tau[0] + 1) / -tau[1]]
    return [(band[n]["hi"][j] - band[n]["lo"][j]) / 2 / s
            for (n, j), s in zip((("mu", 0), ("tau", 1)), sd, strict=True)]


def coverage(run_dir: Path, num_datasets: int) -> dict:
    """Band coverage over simulated data sets; the audit (a census of the single factor mu
    with quadrature: the exact sweeps from the network's fixed point) beside it."""
    cfg = yaml.safe_load(CONFIG.read_text())
    args, sim = cfg["arguments"], cfg["data"]["simulate"]
    net = {"mu": NetworkMoments(run_dir)}
    oracle = Audit({"mu": ExactMoments(Quartic())})
    inside, audited, kls, widths, flagged = [], [], [], [], 0
    for seed in range(num_datasets):
        data = examples.simulate(sim["n"], sim["mean"], sim["sd"], 1000 + seed)
        model = examples.quartic_prior(data, **args)
        learned = run_cavi(model, net, num_draws=NUM_DRAWS, audit=oracle)
        exact = run_cavi(model)
        inside.append(_inside(model, learned, exact))
        contains = learned.audit.contains(exact.eta)
        audited.append(all(bool(np.all(contains[n])) for n in model.names))
        widths.append(_half_width_over_sd(learned, exact))
        kls.append([kl_divergence(f, learned.eta[n], exact.eta[n])
                    for n, f in zip(model.names, model.families, strict=True)])
        flagged += bool(learned.flags["mu"])
    kls = np.asarray(kls)
    rate = float(np.mean(inside))
    return {"num_datasets": num_datasets, "band_coverage": rate,
            "median_half_width_over_sd": dict(zip(("E[mu]", "E[tau]"),
                                                  np.median(widths, 0).tolist(), strict=True)),
            "audit_coverage": float(np.mean(audited)),
            "coverage_target": COVERAGE_TARGET,
            "coverage_ok": COVERAGE_TARGET[0] <= rate <= COVERAGE_TARGET[1],
            "kl_max": dict(zip(("mu", "tau"), kls.max(0).tolist(), strict=True)),
            "kl_median": dict(zip(("mu", "tau"), np.median(kls, 0).tolist(), strict=True)),
            "datasets_with_flags": flagged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--archs", default="mlp,convex_potential,geometric_flow",
                        help="architectures of the band-coverage check (the first: headline)")
    parser.add_argument("--quick", action="store_true",
                        help="a shorter training run, 10 data sets, shorter NUTS")
    args = parser.parse_args()
    num = 10 if args.quick else args.datasets
    start = time.perf_counter()
    archs = args.archs.split(",")
    runs = {arch: trained_run(args.quick, arch) for arch in archs}
    networks, coverages = {}, {}
    for arch, run_dir in runs.items():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        networks[arch] = {"train_seconds": metrics["training_seconds"],
                          "epochs": metrics["epochs"],
                          "max_nrmse": max(metrics["test"]["nrmse"].values()),
                          "coverage_90": metrics["test"]["coverage"]["0.9"],
                          "mean_z2": metrics["test"]["mean_z2"]}
        coverages[arch] = coverage(run_dir, num)
        print(f"{arch}: 90% band covers the quadrature fixed point in "
              f"{coverages[arch]['band_coverage']:.0%} of {num} data sets (half-width/sd "
              f"{coverages[arch]['median_half_width_over_sd']}); the audit in "
              f"{coverages[arch]['audit_coverage']:.0%}", flush=True)
    run_dir = runs[archs[0]]
    result = {"run": str(run_dir.relative_to(ROOT)), "network": networks[archs[0]],
              "num_draws": NUM_DRAWS, "headline": headline(run_dir, args.quick),
              "coverage": coverages[archs[0]], "architectures": networks,
              "coverage_by_architecture": coverages}
    result["seconds_total"] = time.perf_counter() - start
    path = save("cavi", result)
    h = result["headline"]
    print("time to the fixed point (s): " + ", ".join(f"{k} {v:.4f}"
                                                     for k, v in h["seconds"].items()))
    print("ratios: " + ", ".join(f"{k} {v:.1f}" for k, v in h["ratios"].items()))
    print("KL(q_net || q_quadrature): " + ", ".join(
        f"{k} {v:.2e}" for k, v in h["kl_network_vs_quadrature"].items()))
    for name, errs in h["error_over_nuts_mcse"].items():
        print(f"{name} CAVI vs NUTS posterior, (CAVI - NUTS) / MCSE: "
              + ", ".join(f"{k} {v:+.1f}" for k, v in errs.items()))
    print(f"band contains the quadrature fixed point: {h['band_contains_quadrature']}")
    for arch, c in coverages.items():
        print(f"{arch}, over {c['num_datasets']} data sets: 90% band covers the quadrature "
              f"fixed point in {c['band_coverage']:.0%} (target {COVERAGE_TARGET}); KL max "
              f"{c['kl_max']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
