"""Active learning: new eta where the network is least sure, data there, more training."""

from __future__ import annotations

import numpy as np
from jaxtyping import PRNGKeyArray

from bayes_et.data import design_eta
from bayes_et.expfam import ExponentialFamily

from ._config import ActiveSettings
from ._model import TrainedET
from ._predictive import predict


def spread_score(model: TrainedET, eta: np.ndarray, key: PRNGKeyArray,
                 num_samples: int = 64) -> np.ndarray:
    """The calibrated predictive variance (squared scale) at each eta summed over the
    statistics, in units of the training targets' standard deviation: (n,)."""
    cov = predict(model, eta, key, num_samples).cov
    var = np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2)
    return np.sum(var / np.asarray(model.net.scaler.mu_scale, np.float64) ** 2, axis=1)


def select_eta(model: TrainedET, family: ExponentialFamily,
               box: tuple[np.ndarray, np.ndarray], settings: ActiveSettings,
               key: PRNGKeyArray, seed: int, num_samples: int = 64) -> np.ndarray:
    """The `settings.num_eta` eta of one round: of `candidates` x num_eta uniform eta in
    `box`, those of largest predictive spread (design spread), or num_eta uniform eta
    (design uniform, the baseline at equal budget)."""
    if settings.design == "uniform":
        return design_eta(family, settings.num_eta, box=box, seed=seed)
    pool = design_eta(family, settings.num_eta * settings.candidates, box=box, seed=seed)
    score = spread_score(model, pool, key, num_samples)
    return pool[np.sort(np.argsort(-score, kind="stable")[: settings.num_eta])]
