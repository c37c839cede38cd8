"""Validation of dataset-generation configs: one-line errors that name the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bayes_et.expfam import build_family

from ._design import DESIGNS

METHODS = ("auto", "closed_form", "quadrature", "mcmc")
SAMPLER_DEFAULTS = {
    "num_chains": 4, "num_warmup": 500, "num_samples": 1000, "target_accept": 0.8,
    "rhat_max": 1.01, "ess_min": 400.0, "max_retries": 2,
}
DEFAULTS = {
    "eta": {"design": "uniform", "box": None},
    "method": "auto",
    "sampler": SAMPLER_DEFAULTS,
    "chunk_size": 512,
    "seed": 0,
}
KEYS = {"family", "eta", "method", "sampler", "chunk_size", "seed"}
ETA_KEYS = {"num", "design", "box"}


def _fail(key: str, value: Any, allowed: str):
    raise ValueError(f"config key '{key}': got {value!r}; allowed: {allowed}")


def _int(key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(key, value, f"an int >= {minimum}")
    return value


def _number(key: str, value, lo: float, hi: float, closed: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (lo <= value <= hi if closed else lo < value < hi):
        _fail(key, value, f"a number in {'[' if closed else '('}{lo}, {hi}{']' if closed else ')'}")
    return float(value)


def _known(section: str, mapping, allowed: set[str], required: set[str] = frozenset()):
    if not isinstance(mapping, dict):
        _fail(section or "<top level>", mapping, "a mapping")
    prefix = f"{section}." if section else ""
    for key in mapping:
        if key not in allowed:
            raise ValueError(f"config key '{prefix}{key}' is unknown; allowed: {sorted(allowed)}")
    for key in required:
        if key not in mapping:
            raise ValueError(f"config key '{prefix}{key}' is missing (required)")


def read_config(source: str | Path | dict) -> dict:
    """A config as a fresh dict: a copy of `source`, or the YAML file it names."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}")
    return yaml.safe_load(path.read_text()) or {}


def load_data_config(source: str | Path | dict) -> dict[str, Any]:
    """Read (from YAML or a dict), validate and complete a dataset-generation config."""
    raw = read_config(source)
    _known("", raw, KEYS, {"family", "eta"})
    family = build_family(raw["family"])
    cfg = {"family": raw["family"], **copy.deepcopy(DEFAULTS)}
    _known("eta", raw["eta"], ETA_KEYS, {"num"})
    cfg["eta"].update(raw["eta"])
    _int("eta.num", cfg["eta"]["num"], 1)
    if cfg["eta"]["design"] not in DESIGNS:
        _fail("eta.design", cfg["eta"]["design"], ", ".join(DESIGNS))
    cfg["eta"]["box"] = _box(family, cfg["eta"]["box"])
    cfg["method"] = raw.get("method", "auto")
    if cfg["method"] not in METHODS:
        _fail("method", cfg["method"], ", ".join(METHODS))
    _known("sampler", raw.get("sampler", {}), set(SAMPLER_DEFAULTS))
    cfg["sampler"].update(raw.get("sampler", {}))
    s = cfg["sampler"]
    _int("sampler.num_chains", s["num_chains"], 2)
    _int("sampler.num_warmup", s["num_warmup"], 1)
    _int("sampler.num_samples", s["num_samples"], 4)
    _int("sampler.max_retries", s["max_retries"], 0)
    _number("sampler.target_accept", s["target_accept"], 0.0, 1.0)
    _number("sampler.rhat_max", s["rhat_max"], 1.0, np.inf)
    _number("sampler.ess_min", s["ess_min"], 0.0, np.inf, closed=True)
    cfg["chunk_size"] = _int("chunk_size", raw.get("chunk_size", cfg["chunk_size"]), 1)
    cfg["seed"] = _int("seed", raw.get("seed", cfg["seed"]), 0)
    return cfg


def _box(family, box) -> dict[str, list] | None:
    """Per-statistic [lo, hi] (scalars or lists per element); None keeps the family's box."""
    if box is None:
        return None
    _known("eta.box", box, set(family.stat_names))
    out = {}
    for name, bounds in box.items():
        key = f"eta.box.{name}"
        if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2):
            _fail(key, bounds, "[lo, hi]")
        try:
            shape = family.stat_shapes[name]
            lo, hi = (np.broadcast_to(np.asarray(b, float), shape) for b in bounds)
        except (ValueError, TypeError):
            _fail(key, bounds, f"[lo, hi] of numbers or arrays of shape {family.stat_shapes[name]}")
        if np.any(lo > hi) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            _fail(key, bounds, "finite lo <= hi")
        out[name] = [lo.tolist(), hi.tolist()]
    return out


def box_arrays(family, box: dict | None) -> tuple[np.ndarray, np.ndarray]:
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
