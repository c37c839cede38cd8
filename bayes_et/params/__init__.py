"""Variational parameter core: parameter kinds, priors, tree utilities, layers, save/load."""

from . import _kl  # noqa: F401  (fills the closed-form KL table)
from ._base import (
    KL_RULES,
    WIDTH_FLOOR,
    AbstractParameter,
    AbstractPrior,
    raw_from_width,
    width_from_raw,
)
from ._deterministic import DeterministicParameter
from ._gaussian import GaussianParameter
from ._laplacian import LaplacianParameter
from ._layers import BayesianLinear, BayesianMLP, parameter_value
from ._make import make_parameter
from ._natural_gradient import natural_gradient
from ._priors import AdaptivePrior, LaplacePrior, NormalPrior
from ._serialisation import load_header, load_model, save_model
from ._tree import (
    entropy,
    flatten_means,
    flatten_stdvs,
    freeze_means,
    freeze_params,
    freeze_stdvs,
    gaussian_entropy,
    get_parameter_count,
    get_parameter_groups,
    get_parameters,
    is_parameter,
    kl_divergence,
    laplacian_entropy,
    sample_all_parameters,
    trainable_filter,
    unfreeze_all,
)

__all__ = [
    "KL_RULES", "WIDTH_FLOOR", "AbstractParameter", "AbstractPrior", "AdaptivePrior",
    "BayesianLinear",
    "BayesianMLP", "DeterministicParameter", "GaussianParameter", "LaplacePrior",
    "LaplacianParameter", "NormalPrior", "entropy", "flatten_means", "flatten_stdvs",
    "freeze_means", "freeze_params", "freeze_stdvs", "gaussian_entropy", "get_parameter_count",
    "get_parameter_groups", "get_parameters", "is_parameter", "kl_divergence",
    "laplacian_entropy", "load_header", "load_model", "make_parameter", "natural_gradient",
    "parameter_value", "raw_from_width", "sample_all_parameters", "save_model",
    "trainable_filter", "unfreeze_all", "width_from_raw",
]
