"""Build a parameter from a plain array."""

from __future__ import annotations

import jax.numpy as jnp

from ._base import AbstractParameter, check_positive, raw_from_width
from ._deterministic import DeterministicParameter
from ._gaussian import GaussianParameter


def make_parameter(
    value,
    *,
    bayesian: bool = True,
    param_type: type[AbstractParameter] = GaussianParameter,
    init_stdv: float = 1e-2,
) -> AbstractParameter:
    """Wrap `value` (any shape) as a parameter; integer input is cast to the default float dtype.

    `init_stdv` is the initial width (stdv for Gaussian, scale for Laplacian) and must be > 0.
    `bayesian=False` gives a DeterministicParameter whatever `param_type` is.
    """
    mean = jnp.asarray(value)
    if not jnp.issubdtype(mean.dtype, jnp.floating):
        mean = mean.astype(jnp.asarray(1.0).dtype)
    check_positive(init_stdv, "init_stdv")
    if not (isinstance(param_type, type) and issubclass(param_type, AbstractParameter)):
        raise ValueError(f"param_type must be a subclass of AbstractParameter; got {param_type!r}")
    if not bayesian or param_type.width_field is None:
        return DeterministicParameter(mean)
    raw = jnp.full(mean.shape, raw_from_width(float(init_stdv), name="init_stdv"), mean.dtype)
    return param_type(mean, raw)
