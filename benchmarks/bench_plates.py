"""CAVI with plates: the Poisson log-normal random-effects model, N = 10 to 10^6 members.

    python benchmarks/bench_plates.py [--quick] [--sizes 10,100,...] [--only-2d]
                                      [--acceleration]

Model (configs/cavi/poisson_lognormal_cancer.yaml): y_i ~ Poisson(E_i e^{r_i}),
r_i ~ N(mu, 1/tau), mu ~ N(0, 10^2), tau ~ Gamma(1, 1), full mean field; the plate `z` is
the log expected count (PoissonLogNormal). Needs the bench extra (NumPyro, statsmodels).

1. The network for z: the Gauss-Hermite solve on the real data and on a simulated N = 10^4
   data set gives the eta box the model visits; 8000 quadrature eta there; the mlp of
   configs/train/mlp.yaml (cached in runs/bench_plates/).
2. Per N (simulated from the real data's fixed point: mu = -5.66, tau = 15.9, exposures
   log-uniform over the counties' range) and on the real data: compile seconds (first call
   minus second) and seconds to the fixed point (second call) for the network (fallback:
   Gauss-Hermite), the robust quadrature and Gauss-Hermite providers; NumPyro NUTS on the
   exact joint (4 chains x 1000 after 1000 warm-up) and NumPyro SVI (AutoNormal, 20 000
   Adam steps) with their time to answer. N = 10^6 runs in a subprocess for its peak memory.
3. Accuracy: KL(q_net || q_quadrature) per member (max, mean); E[mu], E[tau] against the
   exact-provider fixed point in posterior sd, and against NUTS in MCSE units (the
   mean-field's own error, the same for every provider).
4. A plate whose x is two-dimensional (two counts per member with correlated log-rates,
   `BivariatePoissonLogNormal` below, defined here as a user would): no quadrature exists,
   so its network learns from NUTS data, with the tensor Gauss-Hermite route as the
   fallback; against NumPyro NUTS on the joint, the cost of NUTS as the provider (per eta),
   an audit of the network's fixed point with a NUTS oracle at 30 members (its cost), and
   the tensor Gauss-Hermite fixed point, audit and cost per member at N = 10^4.
5. `--acceleration`: plain against SQUAREM-accelerated sweeps (sweeps, seconds, the shift of
   the fixed point), Gauss-Hermite and network, with NumPyro NUTS at N = 10^4.
The network's band and the audit on this plate: benchmarks/bench_audit.py.
Writes results/plates.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from _common import save

from bayes_et._files import write_text
from bayes_et.cavi import (
    Audit,
    ExactMoments,
    Model,
    NetworkMoments,
    SamplingMoments,
    WithFallback,
    audit_result,
    examples,
    run_cavi,
)
from bayes_et.data import mcmc_moments
from bayes_et.expfam import ExponentialFamily, Gaussian, PoissonLogNormal, Real, kl_divergence
from bayes_et.train import train_run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench_plates"
MU, TAU = -5.66, 15.9  # near the real data's fixed point
SOLVER = {"tol": 1e-6, "max_iter": 500, "track_elbo": False}
NUM_DRAWS = 32
FAMILY = PoissonLogNormal()


def simulated(n: int, seed: int, exposure_range) -> dict:
    rng = np.random.default_rng(seed)
    exposure = np.exp(rng.uniform(*np.log(exposure_range), n))
    return examples.simulate_counts(n, MU, TAU, seed, exposure=exposure)


def providers(route: str, run: Path | None = None) -> dict:
    if route == "network":
        return {"z": WithFallback(NetworkMoments(run), ExactMoments(FAMILY, "gauss_hermite"))}
    return {"z": ExactMoments(FAMILY, route)}


def trained_run(quick: bool, real: dict, exposure_range) -> Path:
    out = WORK / ("mlp-quick" if quick else "mlp")
    if (out / "metrics.json").exists():  # written last: a finished run
        return out
    boxes = []
    for data in (real, simulated(10_000, 0, exposure_range)):
        model = examples.poisson_lognormal(data["counts"], data["exposure"])
        boxes.append(run_cavi(model, providers("gauss_hermite"), **SOLVER))
    config = boxes[0].data_config("z", FAMILY, num=2000 if quick else 8000)
    for result in boxes[1:]:
        other = result.data_config("z", FAMILY)
        for name, (lo, hi) in other["eta"]["box"].items():
            box = config["eta"]["box"][name]
            config["eta"]["box"][name] = [min(box[0], lo), max(box[1], hi)]
    train = yaml.safe_load((ROOT / "configs" / "train" / "mlp.yaml").read_text())
    if quick:
        train["stages"] = [{"name": "map", "epochs": 300, "lr": 3e-3, "patience": 60},
                           {"name": "vi", "epochs": 50, "lr": 1e-2, "patience": 20}]
    WORK.mkdir(parents=True, exist_ok=True)
    write_text(WORK / "data-z.yaml", yaml.safe_dump(config))
    train["data"] = str(WORK / "data-z.yaml")
    train_run(train, out=out)
    return out


def timed_cavi(model, provs, **settings) -> tuple:
    """(result, compile seconds = first call - second call, solve seconds = second call)."""
    began = time.perf_counter()
    run_cavi(model, provs, **SOLVER, **settings)
    first = time.perf_counter() - began
    began = time.perf_counter()
    result = run_cavi(model, provs, **SOLVER, **settings)
    second = time.perf_counter() - began
    return result, max(first - second, 0.0), second


def numpyro_model(counts, exposure):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    tau = numpyro.sample("tau", dist.Gamma(1.0, 1.0))
    with numpyro.plate("county", len(counts)):
        r = numpyro.sample("r", dist.Normal(mu, 1 / jax.numpy.sqrt(tau)))
        numpyro.sample("y", dist.Poisson(exposure * jax.numpy.exp(r)), obs=counts)


def nuts(data: dict, seed: int = 0) -> dict:
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(numpyro_model), num_warmup=1000, num_samples=1000, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    began = time.perf_counter()
    mcmc.run(jax.random.key(seed), data["counts"], data["exposure"])
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    seconds = time.perf_counter() - began
    out = {"seconds": seconds}
    for name in ("mu", "tau"):
        draws = np.asarray(samples[name], np.float64)
        ess = float(effective_sample_size(draws))
        out[name] = {"mean": float(draws.mean()), "sd": float(draws.std()),
                     "mcse": float(draws.std() / np.sqrt(ess)), "ess": ess}
    return out


def svi(data: dict, steps: int = 20_000, seed: int = 0) -> dict:
    import numpyro.optim
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    guide = AutoNormal(numpyro_model)
    engine = SVI(numpyro_model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    began = time.perf_counter()
    state = engine.run(jax.random.key(seed), steps, data["counts"], data["exposure"],
                       progress_bar=False)
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - began
    draws = guide.sample_posterior(jax.random.key(1), state.params, sample_shape=(4000,))
    return {"seconds": seconds, "steps": steps,
            **{n: {"mean": float(np.mean(draws[n])), "sd": float(np.std(draws[n]))}
               for n in ("mu", "tau")}}


def posterior_summary(result) -> dict:
    """E and sd of mu (Gaussian) and tau (Gamma) from their natural parameters."""
    mu_prec = -2 * result.eta["mu"][1]
    shape, rate = result.eta["tau"][0] + 1, -result.eta["tau"][1]
    return {"mu": {"mean": float(result.mean_stats["mu"][0]), "sd": float(mu_prec ** -0.5)},
            "tau": {"mean": float(shape / rate), "sd": float(np.sqrt(shape) / rate)}}


def member_kl(learned, exact, sample: int = 400) -> dict:
    n = len(exact.eta["z"])
    rows = np.linspace(0, n - 1, min(n, sample)).astype(int)
    kl = np.array([kl_divergence(FAMILY, learned.eta["z"][i], exact.eta["z"][i])
                   for i in rows])
    return {"max": float(kl.max()), "mean": float(kl.mean()), "members_checked": len(rows)}


def one_size(n: int, routes: list[str], run: Path, exposure_range, with_numpyro: bool,
             data: dict | None = None) -> dict:
    data = data if data is not None else simulated(n, 1, exposure_range)
    model = examples.poisson_lognormal(data["counts"], data["exposure"])
    row, results = {"n": n}, {}
    for route in routes:
        result, compile_s, solve_s = timed_cavi(model, providers(route, run))
        results[route] = result
        row[route] = {"compile_seconds": compile_s, "solve_seconds": solve_s,
                      "iterations": result.iterations, "converged": result.converged,
                      "flag_counts": result.flag_counts["z"], **posterior_summary(result)}
        print(f"N={n:>7} {route:14s} compile {compile_s:7.2f} s  solve {solve_s:8.4f} s  "
              f"{result.iterations} sweeps", flush=True)
    exact = results.get("quadrature", results.get("gauss_hermite"))
    if "network" in results and exact is not None:
        row["kl_network_vs_exact"] = member_kl(results["network"], exact)
        ref = posterior_summary(exact)
        row["network_error_in_posterior_sd"] = {
            k: (row["network"][k]["mean"] - ref[k]["mean"]) / ref[k]["sd"] for k in ("mu", "tau")}
    if with_numpyro:
        row["nuts"] = nuts(data)
        row["svi"] = svi(data)
        print(f"N={n:>7} NUTS {row['nuts']['seconds']:.1f} s, SVI {row['svi']['seconds']:.1f} s",
              flush=True)
        for route in results:
            row[route]["error_over_nuts_mcse"] = {
                k: (row[route][k]["mean"] - row["nuts"][k]["mean"]) / row["nuts"][k]["mcse"]
                for k in ("mu", "tau")}
    return row


class BivariatePoissonLogNormal(ExponentialFamily):
    """Two log-rates x in R^2 of two counts with a correlated Gaussian prior:
    T = [x1, x2, x1^2, x2^2, x1 x2, e^x1, e^x2]."""

    x_shape = (2,)
    stat_shapes = {"x1": (), "x2": (), "x1_sq": (), "x2_sq": (), "x1x2": (), "exp_x1": (),
                   "exp_x2": ()}
    support = Real()
    squares = {"x1_sq": "x1", "x2_sq": "x2"}

    def _compute_stats(self, x):
        return {"x1": x[0], "x2": x[1], "x1_sq": x[0] ** 2, "x2_sq": x[1] ** 2,
                "x1x2": x[0] * x[1], "exp_x1": jnp.exp(x[0]), "exp_x2": jnp.exp(x[1])}

    def eta_constraints(self, eta):
        a, b, c = -2 * eta["x1_sq"], -2 * eta["x2_sq"], -eta["x1x2"]  # precision [[a, c], [c, b]]
        return {"precision positive definite": (a > 0) & (a * b > c * c),
                "eta['exp_x1'] < 0, eta['exp_x2'] < 0": (eta["exp_x1"] < 0)
                & (eta["exp_x2"] < 0)}


PRECISION_2D = np.array([[6.0, -3.6], [-3.6, 6.0]])  # sd 0.51, correlation 0.6
M_2D = np.array([-5.5, -6.5])


def bivariate_counts(n: int, seed: int, exposure: np.ndarray) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(2), np.linalg.inv(PRECISION_2D), n) + M_2D
    offsets = np.log(exposure)[:, None]
    return {"counts": rng.poisson(np.exp(x + offsets)).astype(float), "offset": offsets[:, 0]}


def bivariate_model(data: dict):
    """x_i ~ N(m + o_i, P^-1) with P known, y_ik ~ Poisson(e^{x_ik}), m_k ~ N(0, 10^2):
    factors m1, m2 (Gaussian) and the plate x (log expected counts)."""
    y, o, p = data["counts"], data["offset"], PRECISION_2D
    n = len(y)
    po = (p @ np.stack([o, o])).T  # (n, 2): P o_i
    m = Model()
    m1 = m.factor("m1", Gaussian(), [-(po[:, 0].sum()), -0.5 * (n * p[0, 0] + 0.01)])
    m2 = m.factor("m2", Gaussian(), [-(po[:, 1].sum()), -0.5 * (n * p[1, 1] + 0.01)])
    const = np.ones(n)
    x = m.factor("x", BivariatePoissonLogNormal(), np.stack(
        [y[:, 0] + po[:, 0], y[:, 1] + po[:, 1], -p[0, 0] / 2 * const, -p[1, 1] / 2 * const,
         -p[0, 1] * const, -const, -const], 1))
    m.term(p[0, 0], x["x1"], m1["x"])
    m.term(p[0, 1], x["x1"], m2["x"])
    m.term(p[0, 1], x["x2"], m1["x"])
    m.term(p[1, 1], x["x2"], m2["x"])
    m.term(-n * p[0, 1], m1["x"], m2["x"])
    return m.build()


def two_dimensional(quick: bool, exposure: np.ndarray) -> dict:
    family = BivariatePoissonLogNormal()
    n = len(exposure)
    data = bivariate_counts(n, 7, exposure)
    # The eta box from the data's ranges: eta_k = y_k + (P (m + o))_k with m within +-1 of
    # the crude log-rates log(sum y / sum E).
    crude = np.log(data["counts"].sum(0) / exposure.sum())
    spans = [PRECISION_2D @ (crude[:, None] + s + np.stack([data["offset"]] * 2))
             for s in (-1.0, 1.0)]
    lo = np.minimum(*[sp.min(1) for sp in spans]) + data["counts"].min(0)
    hi = np.maximum(*[sp.max(1) for sp in spans]) + data["counts"].max(0)
    p = PRECISION_2D
    fixed = {"x1_sq": -p[0, 0] / 2, "x2_sq": -p[1, 1] / 2, "x1x2": -p[0, 1], "exp_x1": -1.0,
             "exp_x2": -1.0}
    fixed = {k: float(v) for k, v in fixed.items()}
    config = {"family": {"import": "bench_plates:BivariatePoissonLogNormal"},
              "eta": {"num": 600 if quick else 2000,
                      "box": {"x1": [float(lo[0]), float(hi[0])],
                              "x2": [float(lo[1]), float(hi[1])],
                              **{k: [v, v] for k, v in fixed.items()}}},
              "method": "mcmc", "sampler": {"num_warmup": 400, "num_samples": 1000}}
    out = WORK / ("mlp-2d-quick" if quick else "mlp-2d")
    began = time.perf_counter()
    if not (out / "metrics.json").exists():
        train = yaml.safe_load((ROOT / "configs" / "train" / "mlp.yaml").read_text())
        WORK.mkdir(parents=True, exist_ok=True)
        write_text(WORK / "data-x-2d.yaml", yaml.safe_dump(config))
        train["data"] = str(WORK / "data-x-2d.yaml")
        if quick:
            train["stages"] = [{"name": "map", "epochs": 300, "lr": 3e-3, "patience": 60},
                               {"name": "vi", "epochs": 50, "lr": 1e-2, "patience": 20}]
        train_run(train, out=out)
    prepare = time.perf_counter() - began
    metrics = json.loads((out / "metrics.json").read_text())
    model = bivariate_model(data)
    sampler = {"num_warmup": 300, "num_samples": 500}
    # the tensor Gauss-Hermite route as the fallback (no sampler inside the sweeps)
    provs = {"x": WithFallback(NetworkMoments(out, family=family),  # this module's class
                               ExactMoments(family, "gauss_hermite"))}
    start = {f"m{k + 1}": [crude[k] * 1e-2, -0.5e-2] for k in range(2)}  # sd 10 at the crude
    learned, compile_s, solve_s = timed_cavi(model, provs, num_draws=0, init=start)
    banded = run_cavi(model, provs, num_draws=NUM_DRAWS, init=start, **SOLVER)
    # NUTS as the provider: seconds per member per sweep, measured on 64 of the final eta
    eta = learned.eta["x"][:64]
    began = time.perf_counter()
    mcmc_moments(family, eta, jax.random.key(0), sampler)
    per_eta = (time.perf_counter() - began) / len(eta)
    # The audit with a NUTS oracle: 30 members answered by sampling at the fixed point
    began = time.perf_counter()
    audit = audit_result(model, learned, Audit({"x": SamplingMoments(family, **sampler)}, 30, 0),
                         provs, tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
    audit_s = time.perf_counter() - began
    joint = nuts_bivariate(data)
    exact = tensor_gauss_hermite(model, learned, provs, family, start, data, n, solve_s)
    band = banded.band("mean_stats")
    row = {"n": n, "data_and_training_seconds": prepare, "test_metrics": metrics["test"],
           "network": {"compile_seconds": compile_s, "solve_seconds": solve_s,
                       "iterations": learned.iterations, "converged": learned.converged,
                       "flag_counts": learned.flag_counts["x"],
                       "m": [float(learned.mean_stats["m1"][0]),
                             float(learned.mean_stats["m2"][0])],
                       "m_band": [[band[k]["lo"][0], band[k]["hi"][0]] for k in ("m1", "m2")]},
           "nuts_provider_seconds_per_eta": per_eta,
           "nuts_provider_estimate_seconds": per_eta * n * learned.iterations,
           "nuts_joint": joint,
           "audit_nuts_oracle": {
               "members": 30, "seconds": audit_s, "seconds_over_solve": audit_s / solve_s,
               "m": [float(audit.mean_stats[k][0]) for k in ("m1", "m2")],
               "m_interval": [[float(audit.mean_lo[k][0]), float(audit.mean_hi[k][0])]
                              for k in ("m1", "m2")], "z2": float(audit.z2["x"])},
           "gauss_hermite": exact}
    print(f"2-D plate N={n}: network CAVI {solve_s:.3f} s ({learned.iterations} sweeps); NUTS "
          f"as provider ~{row['nuts_provider_estimate_seconds']:.0f} s; joint NUTS "
          f"{joint['seconds']:.1f} s; m {row['network']['m']} vs NUTS "
          f"{[joint[k]['mean'] for k in ('m1', 'm2')]}; NUTS-oracle audit (30 members) "
          f"{audit_s:.1f} s = {audit_s / solve_s:.1f}x the solve, m "
          f"{row['audit_nuts_oracle']['m']} in {row['audit_nuts_oracle']['m_interval']}",
          flush=True)
    return row


def tensor_gauss_hermite(model, learned, provs, family, start, data, n, network_s) -> dict:
    """The 2-D plate's exact route (ExactMoments 'gauss_hermite': 16 x 16 and, on retry,
    32 x 32 nodes in the Laplace frame): its fixed point, the network's distance from it in
    posterior sd, an audit with it as the oracle (30 members), and seconds per member per
    sweep of the network (Gauss-Hermite fallback: no sampler in the loop) and of the route at
    N = 10^4 (exposures resampled from the real ones, so that eta stays in the training region)."""
    exact = ExactMoments(family, "gauss_hermite")
    gh, gh_compile, gh_s = timed_cavi(model, {"x": exact}, num_draws=0, init=start)
    m = lambda r: np.array([r.mean_stats[k][0] for k in ("m1", "m2")])
    sd = np.sqrt([-0.5 / gh.eta[k][1] for k in ("m1", "m2")])  # q(m_k) is Gaussian
    audit = audit_result(model, learned, Audit({"x": exact}, 30, 0), provs,
                         tol=SOLVER["tol"], max_iter=SOLVER["max_iter"])
    lo, hi = (np.array([bound[k][0] for k in ("m1", "m2")])
              for bound in (audit.mean_lo, audit.mean_hi))
    rng = np.random.default_rng(11)
    big_data = bivariate_counts(10_000, 8, rng.choice(np.exp(data["offset"]), 10_000))
    big = bivariate_model(big_data)
    network = {"x": WithFallback(provs["x"].primary, exact)}
    big_start = {f"m{k + 1}": [float(v) * 1e-2, -0.5e-2] for k, v in enumerate(m(gh))}
    per_member = {}
    for name, providers in (("network", network), ("gauss_hermite", {"x": exact})):
        result, _, seconds = timed_cavi(big, providers, num_draws=0, init=big_start)
        per_member[name] = {"solve_seconds": seconds, "sweeps": result.iterations,
                            "flag_counts": result.flag_counts["x"],
                            "seconds_per_member_sweep": seconds / (10_000 * result.iterations)}
    out = {"compile_seconds": gh_compile, "solve_seconds": gh_s, "sweeps": gh.iterations,
           "flag_counts": gh.flag_counts["x"], "m": m(gh).tolist(),
           "network_minus_exact_over_sd": ((m(learned) - m(gh)) / sd).tolist(),
           "network_solve_over_exact_solve": network_s / gh_s,
           "audit_exact_oracle": {"members": 30, "seconds": audit.seconds,
                                  "m": [float(audit.mean_stats[k][0]) for k in ("m1", "m2")],
                                  "contains_exact": bool(np.all((lo <= m(gh)) & (m(gh) <= hi))),
                                  "half_width_over_sd": ((hi - lo) / 2 / sd).tolist(),
                                  "z2": float(audit.z2["x"])},
           "n_10000": per_member}
    print(f"2-D plate, tensor Gauss-Hermite: {gh_s:.2f} s ({gh.iterations} sweeps), network "
          f"{out['network_minus_exact_over_sd']} sd off; at N = 10^4 per member per sweep: "
          + ", ".join(f"{k} {v['seconds_per_member_sweep'] * 1e6:.1f} us"
                      for k, v in per_member.items()), flush=True)
    return out


def nuts_bivariate(data: dict, seed: int = 0) -> dict:
    import numpyro
    import numpyro.distributions as dist
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    cov = np.linalg.inv(PRECISION_2D)

    def model(counts, offset):
        m = numpyro.sample("m", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        with numpyro.plate("member", len(counts)):
            x = numpyro.sample("x", dist.MultivariateNormal(m + offset[:, None],
                                                            covariance_matrix=cov))
            numpyro.sample("y", dist.Poisson(jnp.exp(x)).to_event(1), obs=counts)

    mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    began = time.perf_counter()
    mcmc.run(jax.random.key(seed), data["counts"], data["offset"])
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["m"], np.float64)
    seconds = time.perf_counter() - began
    out = {"seconds": seconds}
    for k in range(2):
        ess = float(effective_sample_size(draws[..., k]))
        out[f"m{k + 1}"] = {"mean": float(draws[..., k].mean()),
                            "mcse": float(draws[..., k].std() / np.sqrt(ess))}
    return out


def acceleration(run: Path, exposure_range, sizes: list[int]) -> dict:
    """Sweeps and seconds to the fixed point with plain and SQUAREM-accelerated sweeps, side
    by side (Gauss-Hermite and network), and NumPyro NUTS at the largest N of 10^4 or less
    (the ratio a user meets: the exact route against the sampler)."""
    rows = []
    for n in sizes:
        data = simulated(n, 1, exposure_range)
        model = examples.poisson_lognormal(data["counts"], data["exposure"])
        row = {"n": n}
        for route in ("gauss_hermite", "network"):
            fixed = {}
            for accelerate in (False, True):
                result, _, solve_s = timed_cavi(model, providers(route, run),
                                                accelerate=accelerate)
                fixed[accelerate] = posterior_summary(result)
                row[f"{route}_{'squarem' if accelerate else 'plain'}"] = {
                    "solve_seconds": solve_s, "sweeps": result.iterations,
                    "converged": result.converged}
                print(f"N={n:>7} {route:14s} accelerate={accelerate!s:5} {solve_s:8.4f} s "
                      f"{result.iterations} sweeps", flush=True)
            row[f"{route}_shift_in_posterior_sd"] = {
                k: abs(fixed[True][k]["mean"] - fixed[False][k]["mean"]) / fixed[False][k]["sd"]
                for k in ("mu", "tau")}
        if n == max(s for s in sizes if s <= 10_000):
            row["nuts"] = nuts(data)
            for route in ("gauss_hermite", "network"):
                row[f"nuts_over_{route}"] = {
                    mode: row["nuts"]["seconds"] / row[f"{route}_{mode}"]["solve_seconds"]
                    for mode in ("plain", "squarem")}
            print(f"N={n:>7} NUTS {row['nuts']['seconds']:.1f} s: "
                  f"{row['nuts_over_gauss_hermite']}", flush=True)
        rows.append(row)
    return {"solver": SOLVER, "rows": rows}


def largest(n: int, route: str, run: str, exposure_range) -> dict:
    """One size in this process, one solve (compilation included): its seconds and the
    process's peak resident memory."""
    data = simulated(n, 1, exposure_range)
    model = examples.poisson_lognormal(data["counts"], data["exposure"])
    began = time.perf_counter()
    result = run_cavi(model, providers(route, Path(run)), **SOLVER)
    return {"n": n, "route": route, "seconds_with_compilation": time.perf_counter() - began,
            "iterations": result.iterations, "converged": result.converged,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 10..1e5)")
    parser.add_argument("--largest", default="1000000", help="N for the memory run (0: none)")
    parser.add_argument("--only-2d", action="store_true",
                        help="run the 2-D plate only, into the saved results/plates.json")
    parser.add_argument("--acceleration", action="store_true",
                        help="plain against SQUAREM sweeps only, into the saved plates.json")
    parser.add_argument("--one", nargs=3, metavar=("N", "ROUTE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    real = examples.cancer_data()
    exposure_range = (real["exposure"].min(), real["exposure"].max())
    # the family as the run records it (bench_plates:..., never __main__:...)
    two_d = importlib.import_module("bench_plates").two_dimensional
    if args.one:
        print("JSON", json.dumps(largest(int(args.one[0]), args.one[1], args.one[2],
                                         exposure_range)))
        return
    if args.acceleration:
        saved = json.loads((ROOT / "benchmarks" / "results" / "plates.json").read_text())
        saved["acceleration"] = acceleration(
            trained_run(args.quick, real, exposure_range), exposure_range,
            [int(s) for s in (args.sizes or "1000,10000,100000").split(",")])
        print("saved", save("plates", saved))
        return
    if args.only_2d:
        saved = json.loads((ROOT / "benchmarks" / "results" / "plates.json").read_text())
        saved["two_dimensional_plate"] = two_d(args.quick, real["exposure"][:100])
        print("saved", save("plates", saved))
        return
    sizes = [int(s) for s in (args.sizes or ("10,100,1000" if args.quick else
                                             "10,100,1000,10000,100000")).split(",")]
    run = trained_run(args.quick, real, exposure_range)
    metrics = json.loads((run / "metrics.json").read_text())
    rows = []
    rows.append({"data": "cancer (real, N = 301)", **one_size(
        301, ["network", "quadrature", "gauss_hermite"], run, exposure_range, True, real)})
    for n in sizes:
        routes = ["network", "gauss_hermite"] + (["quadrature"] if n <= 10_000 else [])
        rows.append({"data": "simulated", **one_size(n, routes, run, exposure_range,
                                                     n <= (1000 if args.quick else 10_000))})
    result = {
        "network": {"run": str(run.relative_to(ROOT)), "test_metrics": metrics["test"],
                    "training_seconds": metrics["training_seconds"],
                    "num_train": metrics["num_train"]},
        "solver": SOLVER, "rows": rows,
    }
    print("saved", save("plates", result))
    result["two_dimensional_plate"] = two_d(args.quick, real["exposure"][:100])
    print("saved", save("plates", result))
    big = []
    if int(args.largest):
        for route in ("network",):
            done = subprocess.run(
                [sys.executable, __file__, "--one", args.largest, route, str(run)],
                capture_output=True, text=True, cwd=ROOT)
            line = [x for x in done.stdout.splitlines() if x.startswith("JSON ")]
            big.append(json.loads(line[0][5:]) if line else
                       {"n": int(args.largest), "route": route, "error": done.stderr[-500:]})
            print(big[-1] if not line else f"N={args.largest} {route}: "
                  f"{big[-1]['seconds_with_compilation']:.1f} s, peak RSS "
                  f"{big[-1]['peak_rss_gib']:.2f} GiB", flush=True)
    result["largest"] = big
    print("saved", save("plates", result))


if __name__ == "__main__":
    main()
