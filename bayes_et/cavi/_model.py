"""A mean-field model: named exponential-family factors and pairwise couplings.

log p = sum_i eta_i0 . T_i + sum_{i<j} T_i^T A_ij T_j (+ const), so that the CAVI update of
factor i is eta_i = eta_i0 + sum_j A_ij <T_j> (with A_ji = A_ij^T).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from bayes_et.expfam import ExponentialFamily, build_family


class Factor(NamedTuple):
    """One factor: its family and its own natural parameters eta0 (eta_dim,), the terms of
    log p in T_i alone (prior plus data-only terms). eta0 may lie outside the
    natural-parameter space when all of a factor's information comes from couplings."""

    family: ExponentialFamily
    eta0: Any


class CAVIModel(eqx.Module):
    """Factors (in update order) and couplings. Arrays are pytree leaves, so one compiled
    solver serves every model of the same structure (e.g. new data)."""

    names: tuple[str, ...] = eqx.field(static=True)
    families: tuple[ExponentialFamily, ...] = eqx.field(static=True)
    eta0: tuple[Float[Array, " d_i"], ...]  # NumPy float64 until traced
    pairs: tuple[tuple[int, int], ...] = eqx.field(static=True)
    couplings: tuple[Float[Array, "d_i d_j"], ...]

    def __init__(self, factors: dict[str, Factor | tuple],
                 couplings: dict[tuple[str, str], Any] | None = None):
        """factors: name -> Factor(family, eta0); couplings: (name_i, name_j) -> A_ij of
        shape (eta_dim_i, eta_dim_j), the coefficient matrix of T_i^T A_ij T_j."""
        if not isinstance(factors, dict) or not factors:
            raise ValueError(f"factors: expected a non-empty mapping name -> Factor; got "
                             f"{factors!r}")
        names, families, eta0 = [], [], []
        for name, factor in factors.items():
            family, eta = Factor(*factor)
            if not isinstance(family, ExponentialFamily):
                raise ValueError(f"factor '{name}': family must be an ExponentialFamily; "
                                 f"got {family!r}")
            eta = np.asarray(eta, np.float64)
            if eta.shape != (family.eta_dim,) or not np.all(np.isfinite(eta)):
                raise ValueError(f"factor '{name}': eta0 must be {family.eta_dim} finite numbers"
                                 f" (statistics {list(family.flat_names)}); got {eta.tolist()}")
            names.append(str(name))
            families.append(family)
            eta0.append(eta)
        index = {name: i for i, name in enumerate(names)}
        pairs, mats = [], []
        for key, matrix in (couplings or {}).items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(k in index for k in key)
                    and key[0] != key[1]):
                raise ValueError(f"coupling {key!r}: expected a pair of two different factor "
                                 f"names from {names}")
            i, j = index[key[0]], index[key[1]]
            if (i, j) in pairs or (j, i) in pairs:
                raise ValueError(f"coupling {key!r}: given twice")
            matrix = np.asarray(matrix, np.float64)
            shape = (families[i].eta_dim, families[j].eta_dim)
            if matrix.shape != shape or not np.all(np.isfinite(matrix)):
                raise ValueError(
                    f"coupling {key!r}: A must be a finite {shape[0]}x{shape[1]} matrix (rows: "
                    f"'{key[0]}' statistics {list(families[i].flat_names)}, columns: "
                    f"'{key[1]}' statistics {list(families[j].flat_names)}); got shape "
                    f"{matrix.shape}")
            pairs.append((i, j))
            mats.append(matrix)
        self.names, self.families, self.eta0 = tuple(names), tuple(families), tuple(eta0)
        self.pairs, self.couplings = tuple(pairs), tuple(mats)

    def target(self, i: int, means: tuple[Array, ...]) -> Float[Array, " d_i"]:
        """The CAVI update of factor i: eta_i0 + sum_j A_ij <T_j>."""
        eta = self.eta0[i]
        for (a, b), matrix in zip(self.pairs, self.couplings, strict=True):
            if a == i:
                eta = eta + matrix @ means[b]
            elif b == i:
                eta = eta + matrix.T @ means[a]
        return eta

    def coupled(self, i: int) -> np.ndarray:
        """Boolean mask (eta_dim_i,): the coordinates of eta_i that the couplings move."""
        mask = np.zeros(self.families[i].eta_dim, bool)
        for (a, b), matrix in zip(self.pairs, self.couplings, strict=True):
            if i in (a, b):
                m = np.asarray(matrix if a == i else matrix.T)
                mask |= np.any(m != 0, axis=1)
        return mask

    def energy(self, means: tuple[Array, ...]) -> Float[Array, ""]:
        """E_q[log p] up to the base measures and a constant: sum_i eta_i0 . <T_i> +
        sum_{i<j} <T_i>^T A_ij <T_j>."""
        total = sum(jnp.dot(e, m) for e, m in zip(self.eta0, means, strict=True))
        for (a, b), matrix in zip(self.pairs, self.couplings, strict=True):
            total = total + means[a] @ matrix @ means[b]
        return total


def model_from_config(spec: dict[str, Any]) -> CAVIModel:
    """A model from a config mapping: {factors: {name: {family, eta0}}, couplings:
    [{factors: [a, b], A: [[...]]}]}."""
    if not isinstance(spec, dict) or "factors" not in spec:
        raise ValueError(f"model: expected a mapping with 'factors' (and 'couplings'); got "
                         f"{spec!r}")
    unknown = set(spec) - {"factors", "couplings"}
    if unknown:
        raise ValueError(f"model: unknown key(s) {sorted(unknown)}; allowed: couplings, factors")
    factors = {}
    for name, entry in (spec["factors"] or {}).items():
        if not isinstance(entry, dict) or set(entry) != {"family", "eta0"}:
            raise ValueError(f"model.factors.{name}: expected {{family: ..., eta0: [...]}}; "
                             f"got {entry!r}")
        factors[name] = Factor(build_family(entry["family"], f"model.factors.{name}.family"),
                               entry["eta0"])
    couplings = {}
    for n, entry in enumerate(spec.get("couplings") or []):
        if not isinstance(entry, dict) or set(entry) != {"factors", "A"}:
            raise ValueError(f"model.couplings[{n}]: expected {{factors: [a, b], A: [[...]]}}; "
                             f"got {entry!r}")
        couplings[tuple(entry["factors"])] = entry["A"]
    return CAVIModel(factors, couplings)
