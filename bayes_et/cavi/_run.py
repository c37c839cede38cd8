"""`bayes-et cavi CONFIG`: a model and its providers from YAML, solved, written to a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayes_et.data._config import _fail, _int, _known, _number, read_config
from bayes_et.train._run import _write_text

from ._model import CAVIModel, model_from_config
from ._plots import plot_cavi
from ._providers import (
    ExactMoments,
    MomentProvider,
    NetworkMoments,
    SamplingMoments,
    WithFallback,
)
from ._solver import CAVIResult, run_cavi
from .examples import EXAMPLES, simulate

KEYS = {"example", "arguments", "data", "model", "providers", "solver"}
SOLVER_DEFAULTS = {"max_iter": 100, "tol": 1e-6, "damping": 0.0, "num_draws": 0, "seed": 0}
NETWORK_KEYS = {"network", "fallback", "max_spread", "margin", "num_samples"}
SIMULATE_KEYS = {"n", "mean", "sd", "seed"}


def _data(value) -> np.ndarray:
    if isinstance(value, dict):
        _known("data", value, {"simulate"}, {"simulate"})
        sim = value["simulate"]
        _known("data.simulate", sim, SIMULATE_KEYS, SIMULATE_KEYS)
        return simulate(_int("data.simulate.n", sim["n"], 1),
                        _number("data.simulate.mean", sim["mean"], -np.inf, np.inf),
                        _number("data.simulate.sd", sim["sd"], 0.0, np.inf),
                        _int("data.simulate.seed", sim["seed"], 0))
    numbers = isinstance(value, list) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers:
        _fail("data", value, "a non-empty list of numbers, or {simulate: {n, mean, sd, seed}}")
    return np.asarray(value, np.float64)


def _model(cfg: dict) -> CAVIModel:
    if ("example" in cfg) == ("model" in cfg):
        raise ValueError("config: give exactly one of 'example' (with 'arguments' and 'data') "
                         "or 'model' (factors and couplings)")
    if "model" in cfg:
        return model_from_config(cfg["model"])
    if cfg["example"] not in EXAMPLES:
        _fail("example", cfg["example"], ", ".join(EXAMPLES))
    if "data" not in cfg:
        raise ValueError("config key 'data' is missing (required with 'example')")
    arguments = cfg.get("arguments") or {}
    if not isinstance(arguments, dict):
        _fail("arguments", arguments, "a mapping of the example's arguments")
    try:
        return EXAMPLES[cfg["example"]](_data(cfg["data"]), **arguments)
    except TypeError as err:
        raise ValueError(f"config key 'arguments': {err}") from None


def _provider(name: str, family, spec) -> MomentProvider:
    key = f"providers.{name}"
    if spec == "exact":
        return ExactMoments(family)
    if spec == "sampling":
        return SamplingMoments(family)
    if isinstance(spec, dict) and set(spec) == {"sampling"}:
        return SamplingMoments(family, **(spec["sampling"] or {}))
    if not (isinstance(spec, dict) and "network" in spec):
        _fail(key, spec, "exact, sampling, {sampling: {...}}, or {network: RUN_DIR, fallback: "
              "exact|sampling|none, max_spread, margin, num_samples}")
    _known(key, spec, NETWORK_KEYS)
    options = {k: spec[k] for k in ("max_spread", "margin", "num_samples") if k in spec}
    network = NetworkMoments(spec["network"], **options)
    if type(network.family) is not type(family):
        raise ValueError(f"config key '{key}.network': {spec['network']} was trained on "
                         f"{network.family.name}; factor '{name}' is {family.name}")
    fallback = spec.get("fallback", "exact")
    if fallback == "none":
        return network
    if fallback not in ("exact", "sampling"):
        _fail(f"{key}.fallback", fallback, "exact, sampling, none")
    return WithFallback(network, _provider(name, family, fallback))


def load_cavi_config(source: str | os.PathLike | dict
                     ) -> tuple[CAVIModel, dict[str, MomentProvider], dict[str, Any]]:
    """(model, providers, solver settings) from a CAVI config (YAML file or dict)."""
    return _load(read_config(source))


def _load(cfg: dict) -> tuple[CAVIModel, dict[str, MomentProvider], dict[str, Any]]:
    _known("", cfg, KEYS)
    model = _model(cfg)
    providers_cfg = cfg.get("providers") or {}
    _known("providers", providers_cfg, set(model.names))
    providers = {name: _provider(name, family, providers_cfg.get(name, "exact"))
                 for name, family in zip(model.names, model.families, strict=True)}
    solver = dict(SOLVER_DEFAULTS)
    _known("solver", cfg.get("solver") or {}, set(SOLVER_DEFAULTS))
    solver.update(cfg.get("solver") or {})
    _int("solver.max_iter", solver["max_iter"], 1)
    _number("solver.tol", solver["tol"], 0.0, np.inf, closed=True)
    _number("solver.damping", solver["damping"], 0.0, 1.0 - 1e-12, closed=True)
    _int("solver.num_draws", solver["num_draws"], 0)
    _int("solver.seed", solver["seed"], 0)
    return model, providers, solver


def cavi_run(config: str | os.PathLike | dict, out: str | os.PathLike | None = None
             ) -> tuple[CAVIResult, Path]:
    """Solve the model a CAVI config describes; write OUT/result.json and OUT/cavi.png."""
    raw = read_config(config)
    model, providers, solver = _load(raw)
    name = "cavi" if isinstance(config, dict) else Path(config).stem
    out = Path(out or Path("runs") / f"cavi-{name}")
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in solver.items() if k != "seed"}
    result = run_cavi(model, providers, key=jax.random.key(solver["seed"]), **settings)
    record = {"config": raw, **result.to_json()}
    _write_text(out / "result.json", json.dumps(record, indent=2))
    plot_cavi(result, dict(zip(model.names, model.families, strict=True)), out / "cavi.png",
              f"CAVI: {name}")
    return result, out
