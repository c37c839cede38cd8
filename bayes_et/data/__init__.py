"""Training data: MCMC moments (NUTS, ChEES-HMC), eta designs, dataset files, generation."""

from ._config import DataSettings, EtaSettings, load_data_config
from ._dataset import (
    DataFlag,
    Dataset,
    flag_invalid_rows,
    load_dataset,
    save_dataset,
    split_dataset,
)
from ._design import design_eta
from ._generate import generate, moments_dataset, resolve_method
from ._kernels import KERNELS, Chains, Kernel
from ._mcmc import MomentEstimate, SamplerSettings, mcmc_moments
from ._sharding import eta_mesh, map_over_eta

__all__ = [
    "KERNELS", "Chains", "DataFlag", "DataSettings", "Dataset", "EtaSettings", "Kernel",
    "MomentEstimate", "SamplerSettings",
    "design_eta", "eta_mesh", "flag_invalid_rows", "generate", "load_data_config",
    "load_dataset", "map_over_eta", "mcmc_moments", "moments_dataset", "resolve_method",
    "save_dataset", "split_dataset",
]
