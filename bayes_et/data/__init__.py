"""Training data: MCMC moments (BlackJAX NUTS), eta designs, the dataset file, generation."""

from ._config import load_data_config
from ._dataset import Dataset, load_dataset, save_dataset, split_dataset
from ._design import design_eta
from ._generate import generate, resolve_method
from ._mcmc import FLAG_ESS, FLAG_NONFINITE, FLAG_RHAT, MomentEstimate, mcmc_moments
from ._sharding import eta_mesh, map_over_eta

__all__ = [
    "FLAG_ESS", "FLAG_NONFINITE", "FLAG_RHAT", "Dataset", "MomentEstimate", "design_eta",
    "eta_mesh", "generate", "load_data_config", "load_dataset", "map_over_eta", "mcmc_moments",
    "resolve_method", "save_dataset", "split_dataset",
]
