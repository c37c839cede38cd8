"""Build an ET network by name: the entry point of the YAML configs."""

from __future__ import annotations

from typing import Any

from ._base import AbstractET, check_config
from ._convex import CONVEX_DEFAULTS, ConvexPotentialET
from ._geometric_flow import FLOW_DEFAULTS, GeometricFlowET
from ._glow import GLOW_DEFAULTS, GlowET
from ._regressors import GLUET, MLPET, REGRESSOR_DEFAULTS, QuadraticET

ARCHITECTURES: dict[str, tuple[type[AbstractET], dict[str, Any]]] = {
    "mlp": (MLPET, REGRESSOR_DEFAULTS),
    "glu": (GLUET, REGRESSOR_DEFAULTS),
    "quadratic": (QuadraticET, REGRESSOR_DEFAULTS),
    "glow": (GlowET, GLOW_DEFAULTS),
    "geometric_flow": (GeometricFlowET, FLOW_DEFAULTS),
    "convex_potential": (ConvexPotentialET, CONVEX_DEFAULTS),
}

MAX_ETA_DIM = 10_000  # checked before a network (of a model file's header) is built


def build(name: str, eta_dim: int, config: dict[str, Any] | None, key, **kwargs) -> AbstractET:
    """An ET network `name` for eta of dimension `eta_dim`; `config` overrides the
    architecture's defaults (``{}`` gives working ones)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"et: unknown architecture {name!r}; allowed: {sorted(ARCHITECTURES)}")
    if not (isinstance(eta_dim, int) and 1 <= eta_dim <= MAX_ETA_DIM):
        raise ValueError(f"et.{name}: eta_dim={eta_dim!r}; allowed: an int in [1, "
                         f"{MAX_ETA_DIM}]")
    cls, defaults = ARCHITECTURES[name]
    return cls(eta_dim, check_config(name, dict(config or {}), defaults), key, **kwargs)

