"""Exact-moment routes, one object each, and the one rule that picks a family's route
(the data generator, the CAVI providers and the training report all ask `pick_route`)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ._family import ExponentialFamily
from ._laplace import MAX_TENSOR_DIM


def _dim(family: ExponentialFamily) -> int:
    return int(np.prod(family.x_shape))


class Route:
    """An exact-moment route: its name, whether it answers every valid eta of a family it
    takes (`robust`; else it flags the rows it cannot answer), and which families it takes."""

    name: ClassVar[str]
    robust: ClassVar[bool]

    def refusal(self, family: ExponentialFamily) -> str | None:
        """None where this route answers `family`, else why not (one clause)."""
        raise NotImplementedError


class ClosedForm(Route):
    """The family's own mean_stats and fisher."""

    name, robust = "closed_form", True

    def refusal(self, family):
        return None if family.has_closed_form else f"{family.name} has no closed form"


class Quadrature(Route):
    """Adaptive quadrature on the unconstrained line (one-dimensional x)."""

    name, robust = "quadrature", True

    def refusal(self, family):
        if _dim(family) == 1:
            return None
        return (f"the robust quadrature needs 1-D x; {family.name} has x_shape "
                f"{family.x_shape}")


class GaussHermite(Route):
    """Gauss-Hermite about the Laplace mode: in 1-D (its misses answered by the robust
    quadrature), or the tensor product for x in R^d, d <= MAX_TENSOR_DIM, off the circle
    (rows over its tolerance flagged)."""

    name, robust = "gauss_hermite", False

    def refusal(self, family):
        dim = _dim(family)
        if dim == 1 or (dim <= MAX_TENSOR_DIM and not family.support.periodic):
            return None
        return (f"the tensor Gauss-Hermite route takes x in R^d, d <= {MAX_TENSOR_DIM}, off "
                f"the circle; {family.name} has x_shape {family.x_shape}")


ROUTES: dict[str, Route] = {r.name: r for r in (ClosedForm(), Quadrature(), GaussHermite())}


def pick_route(family: ExponentialFamily, name: str = "auto", *,
               robust: bool = False) -> Route | None:
    """The one rule for a family's exact route. ``auto``: the closed form where there is
    one, else the robust quadrature (1-D x), else (unless `robust`) the Gauss-Hermite route
    where it takes the family; None where none does. A named route: that route, or a
    ValueError saying why it does not take the family."""
    if name == "auto":
        names = ("closed_form", "quadrature") if robust else tuple(ROUTES)
        return next((ROUTES[n] for n in names if ROUTES[n].refusal(family) is None), None)
    if name not in ROUTES:
        raise ValueError(f"route {name!r}: allowed auto, {', '.join(ROUTES)}")
    why = ROUTES[name].refusal(family)
    if why is not None:
        raise ValueError(f"route {name!r}: {why}")
    return ROUTES[name]
