"""Forward throughput of the ET networks against the closed form, in one run.

    python benchmarks/bench_et_forward.py [--n 10000] [--draws 32]

mu_T evaluations per second on a batch of n Gamma eta: each architecture's posterior
mean, and `draws` weight draws (each draw evaluated on the whole batch), next to
`Gamma().mean_stats` (float32, jitted). Untrained networks at their default size: the
cost does not depend on the weights. Writes results/et_forward.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _common import best_time, save

from bayes_et.data import design_eta
from bayes_et.et import ARCHITECTURES, build
from bayes_et.expfam import Gamma


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--draws", type=int, default=32)
    args = parser.parse_args()
    family = Gamma()
    eta = jnp.asarray(design_eta(family, args.n), jnp.float32)
    closed = jax.jit(jax.vmap(family._mean_stats))
    closed_rate = args.n / best_time(lambda: closed(eta))
    print(f"{'closed form (Gamma.mean_stats)':34s} {closed_rate:14.0f} mu/s")
    rows = [{"model": "closed_form", "mu_per_s": closed_rate}]
    keys = jax.random.split(jax.random.key(1), args.draws)
    for name in sorted(ARCHITECTURES):
        model = build(name, family.eta_dim, {}, jax.random.key(0))
        mean_fn = jax.jit(jax.vmap(model))
        one_draw = lambda k, m=model: jax.vmap(lambda e: m(e, key=k, sample=True))(eta)
        draws_fn = jax.jit(jax.vmap(one_draw))
        mean_rate = args.n / best_time(lambda f=mean_fn: f(eta))
        draws_rate = args.n * args.draws / best_time(lambda f=draws_fn: f(keys), repeats=1)
        row = {"model": name, "mu_per_s": mean_rate, "mu_per_s_with_draws": draws_rate,
               "closed_over_model": closed_rate / mean_rate,
               "closed_over_model_draws": closed_rate / draws_rate}
        rows.append(row)
        print(f"{name:34s} {mean_rate:14.0f} mu/s (mean)  {draws_rate:12.0f} mu/s "
              f"({args.draws} draws)  closed form is {row['closed_over_model']:7.1f}x / "
              f"{row['closed_over_model_draws']:7.1f}x faster")
    print("saved", save("et_forward", {"n": args.n, "draws": args.draws, "rows": rows}))


if __name__ == "__main__":
    main()
