"""Throughput of exact moments: closed form versus quadrature, eta per second.

    python benchmarks/bench_exact_moments.py [--n 10000]

Both routes run in one process on the same batch (uniform in each family's default box);
the accuracy column is quadrature against the closed form (error scaled by
|reference| + standard deviation). Prints a table and writes results/exact_moments.json.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import best_time, save, scaled_error

from bayes_et.data import design_eta
from bayes_et.expfam import (
    Beta,
    Gamma,
    Gaussian,
    LaplaceProduct,
    MultivariateNormal,
    Quartic,
    TruncatedNormal,
    VonMises,
    exact_moments,
    quadrature_moments,
)

FAMILIES = [Gaussian(), Gamma(), Beta(), VonMises(), LaplaceProduct(1), TruncatedNormal(),
            MultivariateNormal(3), Quartic()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="eta per batch")
    n = parser.parse_args().n
    rows = []
    with jax.enable_x64(True):
        for family in FAMILIES:
            eta = design_eta(family, n)
            row = {"family": family.name, "n": n}
            if family.has_closed_form:
                row["closed_eta_per_s"] = n / best_time(
                    lambda f=family, e=eta: exact_moments(f, e)
                )
            if int(np.prod(family.x_shape)) == 1:
                row["quadrature_eta_per_s"] = n / best_time(
                    lambda f=family, e=eta: quadrature_moments(f, e), repeats=1
                )
            if len(row) == 4:
                ratio = row["closed_eta_per_s"] / row["quadrature_eta_per_s"]
                row["closed_over_quadrature"] = ratio
                row["max_scaled_error"] = scaled_error(
                    *quadrature_moments(family, eta), *exact_moments(family, eta)
                )
            rows.append(row)
            print(
                f"{row['family']:22s} closed {row.get('closed_eta_per_s', float('nan')):12.0f}/s"
                f"  quadrature {row.get('quadrature_eta_per_s', float('nan')):9.0f}/s"
                f"  ratio {row.get('closed_over_quadrature', float('nan')):8.0f}"
                f"  max error {row.get('max_scaled_error', float('nan')):.1e}"
            )
    print("saved", save("exact_moments", {"rows": rows}))


if __name__ == "__main__":
    main()
