import numpy as np
import pytest

from bayes_et.data import Dataset, design_eta
from bayes_et.expfam import Gamma, exact_moments, family_spec

TINY = {
    "architecture": "mlp",
    "network": {"width": 16, "depth": 1},
    "batch_size": 64,
    "stages": [{"name": "map", "epochs": 40, "lr": 1e-2, "patience": 40},
               {"name": "vi", "epochs": 10, "lr": 1e-2, "patience": 10}],
    "predictive": {"num_samples": 16},
}


def synthetic_dataset(num: int, seed: int, ess: float | None = 1000.0) -> Dataset:
    """Exact Gamma moments plus Gaussian noise of covariance cov_TT / ess: MCMC-like data
    whose noise is known exactly (ess=None: exact, closed-form data)."""
    family = Gamma()
    eta = design_eta(family, num, seed=seed)
    mu, cov = exact_moments(family, eta)
    k = family.eta_dim
    if ess is not None:
        rng = np.random.default_rng(seed)
        mu = mu + np.einsum("nab,nb->na", np.linalg.cholesky(cov / ess),
                            rng.standard_normal((num, k)))
    ess_arr = np.full((num, k), np.inf if ess is None else ess)
    metadata = {"family": family_spec(family), "stat_names": list(family.flat_names),
                "method": "closed_form" if ess is None else "mcmc"}
    return Dataset(eta, mu, cov, ess_arr, np.full((num, k), np.nan), np.zeros(num, np.int32),
                   metadata)


@pytest.fixture(scope="session")
def noisy_gamma() -> Dataset:
    return synthetic_dataset(400, seed=0)
