"""ET networks: Bayesian maps eta -> E[T(x) | eta], every weight a bayes_et parameter."""

from ._base import AbstractET, Standardizer
from ._charted import ChartedET
from ._convex import ConvexPotentialET
from ._geometric_flow import GeometricFlowET, LearnedField
from ._glow import GlowET
from ._inverse import eta_from_mu
from ._registry import ARCHITECTURES, build
from ._regressors import GLUET, MLPET, QuadraticET

__all__ = [
    "ARCHITECTURES", "AbstractET", "ChartedET", "ConvexPotentialET", "GLUET", "GeometricFlowET",
    "GlowET", "LearnedField", "MLPET", "QuadraticET", "Standardizer", "build",
    "eta_from_mu",
]
