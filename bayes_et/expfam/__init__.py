"""Exponential families, their supports, and exact moments (closed form or quadrature)."""

from ._charts import BetaShapes, Chart, GammaShapes, LogEdges
from ._divergence import kl_divergence, log_partition_difference
from ._family import ExponentialFamily
from ._laplace import laplace_moments_at
from ._named import (
    Beta,
    Gamma,
    GinzburgLandau,
    LaplaceProduct,
    PoissonLogNormal,
    Quartic,
    VonMises,
)
from ._normal import Gaussian, MultivariateNormal, MultivariatePoissonLogNormal, TruncatedNormal
from ._quadrature import exact_moments, quadrature_moments
from ._routes import ROUTES, Route, pick_route
from ._spec import build_family, family_from_record, family_spec, same_family
from ._supports import Circle, Interval, Positive, PositiveDefinite, Real, Support
from ._wishart import Wishart

FAMILIES = {
    cls.__name__: cls
    for cls in (Gaussian, MultivariateNormal, Gamma, Beta, VonMises, LaplaceProduct,
                TruncatedNormal, Quartic, PoissonLogNormal, GinzburgLandau,
                MultivariatePoissonLogNormal, Wishart)
}
"""Built-in families by name (as used in configs)."""

__all__ = [
    "Beta", "BetaShapes", "Chart", "Circle", "ExponentialFamily", "FAMILIES", "Gamma",
    "GammaShapes", "Gaussian", "GinzburgLandau",
    "Interval", "LaplaceProduct", "LogEdges", "MultivariateNormal", "MultivariatePoissonLogNormal",
    "PoissonLogNormal", "Positive", "PositiveDefinite", "Quartic", "Real", "Support",
    "ROUTES", "Route", "TruncatedNormal", "VonMises", "Wishart", "build_family",
    "exact_moments", "family_from_record", "family_spec",
    "kl_divergence", "laplace_moments_at", "log_partition_difference", "pick_route",
    "quadrature_moments", "same_family",
]
