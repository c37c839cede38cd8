"""The multivariate Poisson log-normal model on real cells: CAVI (tensor Gauss-Hermite plate)
against NumPyro NUTS (the gold standard, with Monte-Carlo standard errors) and NumPyro SVI
(mean-field Gaussian guide), one run, the same model and priors.

    python benchmarks/bench_multivariate.py [--rows 100]

Data: the first `rows` scRT cells shipped with bayes_et (3 genes, offsets the log library
size). Model: y_ij ~ Poisson(e^{o_i + z_ij}), z_i ~ N(mu, Lambda^-1), mu ~ N(0, 10^2 I),
Lambda ~ Wishart(4, I / 4). Reports seconds (CAVI: first call with compilation, and a
second call), E[mu] and E[Lambda]'s diagonal by each method, and each method's distance
from NUTS in NUTS posterior sd. pyPLNmodels (PyTorch) is the field's usual tool; it is not
run here (no PyTorch in the bench extra). Writes results/multivariate.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import save

from bayes_et.cavi import examples, run_cavi

P = 3
PRIOR_SD, NU0 = 10.0, P + 1.0  # E[Lambda] = I (the example's default scale I / nu0)
NUTS_SETTINGS = {"num_warmup": 1000, "num_samples": 1000, "num_chains": 4}
SVI_STEPS = 20_000


DIAGONAL = np.equal(*np.tril_indices(P))  # the diagonal's places in a lower triangle


def cavi(data: dict) -> dict:
    model = examples.multivariate_poisson_lognormal(data["counts"], data["offsets"],
                                                    prior_sd=PRIOR_SD, nu0=NU0)
    settings = {"tol": 1e-6, "max_iter": 500, "track_elbo": True}
    began = time.perf_counter()
    run_cavi(model, **settings)
    first = time.perf_counter() - began
    began = time.perf_counter()
    result = run_cavi(model, **settings)
    mean = result.mean_stats
    return {"seconds": time.perf_counter() - began, "first_call_seconds": first,
            "sweeps": result.iterations, "converged": result.converged,
            "flag_counts": result.flag_counts,
            "mu": mean["mu"][:P].tolist(),
            "lambda_diag": mean["Lambda"][1:][DIAGONAL].tolist()}


def numpyro_model(counts, offsets):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD).expand([P]).to_event(1))
    lam = numpyro.sample("Lambda", dist.Wishart(NU0, scale_matrix=jnp.eye(P) / NU0))
    with numpyro.plate("cell", len(counts)):
        z = numpyro.sample("z", dist.MultivariateNormal(mu, precision_matrix=lam))
        numpyro.sample("y", dist.Poisson(jnp.exp(offsets[:, None] + z)).to_event(1),
                       obs=counts)


def summary(mu: np.ndarray, lam: np.ndarray, chains: bool) -> dict:
    """Means (and, for chains (c, s, ...), sd and MCSE) of mu and Lambda's diagonal."""
    from numpyro.diagnostics import effective_sample_size

    values = np.concatenate([mu, np.diagonal(lam, axis1=-2, axis2=-1)], -1)
    flat = values.reshape(-1, values.shape[-1])
    out = {"mu": flat.mean(0)[:P].tolist(), "lambda_diag": flat.mean(0)[P:].tolist(),
           "sd": flat.std(0).tolist()}
    if chains:
        ess = np.asarray(effective_sample_size(values))
        out["mcse"] = (flat.std(0) / np.sqrt(ess)).tolist()
        out["min_ess"] = float(ess.min())
    return out


def nuts(data: dict) -> dict:
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(numpyro_model), chain_method="vectorized", progress_bar=False,
                **NUTS_SETTINGS)
    began = time.perf_counter()
    mcmc.run(jax.random.key(0), jnp.asarray(data["counts"]), jnp.asarray(data["offsets"]))
    draws = mcmc.get_samples(group_by_chain=True)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, **summary(np.asarray(draws["mu"], np.float64),
                                          np.asarray(draws["Lambda"], np.float64), True)}


def svi(data: dict) -> dict:
    import optax
    from numpyro.infer import SVI, Predictive, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    guide = AutoNormal(numpyro_model)
    counts, offsets = jnp.asarray(data["counts"]), jnp.asarray(data["offsets"])
    began = time.perf_counter()
    fit = SVI(numpyro_model, guide, optax.adam(5e-3), Trace_ELBO()).run(
        jax.random.key(0), SVI_STEPS, counts, offsets, progress_bar=False)
    seconds = time.perf_counter() - began
    draws = Predictive(guide, params=fit.params, num_samples=4000)(jax.random.key(1), counts,
                                                                  offsets)
    return {"seconds": seconds, "steps": SVI_STEPS,
            **summary(np.asarray(draws["mu"], np.float64),
                      np.asarray(draws["Lambda"], np.float64), False)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100, help="the first ROWS scRT cells")
    rows = parser.parse_args().rows
    full = examples.scrt_data()
    if not 2 <= rows <= len(full["counts"]):
        parser.error(f"--rows: got {rows}; allowed: 2 to {len(full['counts'])} (the cells)")
    data = {"counts": full["counts"][:rows], "offsets": full["offsets"][:rows]}
    out = {"rows": rows, "genes": P, "cavi": cavi(data), "nuts": nuts(data), "svi": svi(data),
           "pyplnmodels": "not run: it needs PyTorch, outside the bench extra"}
    gold = out["nuts"]
    centre = np.array(gold["mu"] + gold["lambda_diag"])
    for method in ("cavi", "svi"):
        found = np.array(out[method]["mu"] + out[method]["lambda_diag"])
        out[method]["minus_nuts_over_nuts_sd"] = ((found - centre) / np.array(gold["sd"])).tolist()
    for method in ("cavi", "nuts", "svi"):
        row = out[method]
        print(f"{method:5s} {row['seconds']:8.1f} s  E[mu] "
              + " ".join(f"{v:7.3f}" for v in row["mu"]) + "  E[Lambda]_ii "
              + " ".join(f"{v:7.3f}" for v in row["lambda_diag"])
              + ("" if method == "nuts" else "  (x - NUTS) / sd " + " ".join(
                  f"{v:+.2f}" for v in row["minus_nuts_over_nuts_sd"])), flush=True)
    print("NUTS MCSE", " ".join(f"{v:.4f}" for v in gold["mcse"]), "min ESS", gold["min_ess"])
    print("saved", save("multivariate", out))


if __name__ == "__main__":
    main()
