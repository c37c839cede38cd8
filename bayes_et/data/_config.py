"""Dataset-generation configs: DataSettings, with the checks that need the family."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bayes_et.expfam import build_family
from bayes_et.settings import (
    SEED_MAX,
    choice,
    fail,
    integer,
    known_keys,
    mapping,
    nested,
    optional,
    parse,
    read_config,
    setting,
)

from ._mcmc import SamplerSettings


@dataclasses.dataclass(frozen=True)
class EtaSettings:
    """How many eta, their design, and an optional box per statistic ([lo, hi])."""

    num: int = setting(check=integer(1, 10**8))
    design: str = setting("uniform", choice("uniform", "log_uniform", "grid", "chart"))
    box: dict | None = setting(None, optional(mapping))


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """A dataset-generation config (configs/data/*.yaml)."""

    family: Any = setting(check=None, doc="a family name or {name|import, args}")
    eta: EtaSettings = setting(check=nested(EtaSettings))
    method: str = setting("auto", choice("auto", "closed_form", "quadrature", "mcmc"))
    sampler: SamplerSettings = setting(SamplerSettings(), nested(SamplerSettings))
    chunk_size: int = setting(512, integer(1, 10**7))
    seed: int = setting(0, integer(0, SEED_MAX))


def load_data_config(source: str | os.PathLike | Mapping | DataSettings) -> DataSettings:
    """Read (from YAML, a dict or settings), validate and complete a dataset config."""
    cfg = source if isinstance(source, DataSettings) else parse(DataSettings,
                                                                read_config(source))
    return complete_data_config(cfg, build_family(cfg.family))


def complete_data_config(cfg: DataSettings, family) -> DataSettings:
    """`cfg` with its box checked against `family` (given: a recorded config never
    imports code) and completed."""
    box = _box(family, cfg.eta.box)
    lo, hi = box_arrays(family, box)
    if lo is None:
        raise ValueError(f"config key 'eta.box': {family.name} has no default box; "
                         f"give [lo, hi] for each of {list(family.stat_names)}")
    return dataclasses.replace(cfg, eta=dataclasses.replace(cfg.eta, box=box))


def _box(family, box) -> dict[str, list] | None:
    """Per-statistic [lo, hi] (scalars or lists per element); None keeps the family's box."""
    if box is None:
        return None
    known_keys("eta.box", box, set(family.stat_names))
    out = {}
    for name, bounds in box.items():
        key = f"eta.box.{name}"
        if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2):
            fail(key, bounds, "[lo, hi]")
        try:
            shape = family.stat_shapes[name]
            lo, hi = (np.broadcast_to(np.asarray(b, float), shape) for b in bounds)
        except (ValueError, TypeError):
            fail(key, bounds, f"[lo, hi] of numbers or arrays of shape {family.stat_shapes[name]}")
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.all(np.isfinite(hi - lo))  # also hi - lo: a uniform draw needs it
        if np.any(lo > hi) or not finite:
            fail(key, bounds, "finite lo <= hi (hi - lo finite)")
        out[name] = [lo.tolist(), hi.tolist()]
    return out


def box_arrays(family, box: dict | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Flat (lo, hi) from a validated per-statistic box, the family's default elsewhere."""
    lo, hi = family.eta_bounds() if family.eta_box is not None else (None, None)
    if box is None:
        return lo, hi
    if lo is None and set(box) != set(family.stat_names):
        raise ValueError(f"config key 'eta.box': {family.name} has no default box: "
                         f"give all of {list(family.stat_names)}")
    lo = np.zeros(family.eta_dim) if lo is None else lo.copy()
    hi = np.zeros(family.eta_dim) if hi is None else hi.copy()
    offsets = np.cumsum((0, *family.stat_sizes))
    for i, name in enumerate(family.stat_names):
        if name in box:
            lo[offsets[i]:offsets[i + 1]] = np.ravel(box[name][0])
            hi[offsets[i]:offsets[i + 1]] = np.ravel(box[name][1])
    return lo, hi
