"""`bayes-et cavi CONFIG`: a model and its providers from YAML, solved, written to a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

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
from .examples import EXAMPLES, cancer_data, simulate, simulate_counts

KEYS = {"example", "arguments", "data", "model", "providers", "solver"}
SOLVER_DEFAULTS = {"max_iter": 100, "tol": 1e-6, "damping": 0.0, "num_draws": 0, "seed": 0,
                   "track_elbo": True}
NETWORK_KEYS = {"network", "fallback", "max_spread", "margin", "num_samples"}
SIMULATE_KEYS = {"n", "mean", "sd", "seed"}
COUNTS_KEYS = {"n", "mu", "tau", "seed", "groups", "tau_u"}
EXACT_ROUTES = {"exact": "auto", "quadrature": "quadrature", "gauss_hermite": "gauss_hermite"}
DATA_FORMS = ("a list of numbers, {simulate: {n, mean, sd, seed}}, {simulate_counts: {n, mu, "
              "tau, seed, groups, tau_u}}, {statsmodels: cancer, rows: K}, or {arrays: {name: "
              "[...]}}")


def _numbers(key: str, value) -> np.ndarray:
    numbers = isinstance(value, list) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers:
        _fail(key, value, "a non-empty list of numbers")
    return np.asarray(value)


def _array(key: str, value) -> np.ndarray:
    """A non-empty (nested) list of finite numbers as an array."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        array = np.asarray([])
    if array.size == 0 or array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
        _fail(key, value, "a non-empty list (or nested lists of one shape) of finite numbers")
    return array


def _data(value) -> dict[str, np.ndarray]:
    """The config's data as named arrays (`data` for a list of observations)."""
    if isinstance(value, list):
        return {"data": _numbers("data", value).astype(np.float64)}
    if not (isinstance(value, dict) and len(value) in (1, 2)):
        _fail("data", value, DATA_FORMS)
    if "simulate" in value:
        _known("data", value, {"simulate"})
        sim = value["simulate"]
        _known("data.simulate", sim, SIMULATE_KEYS, SIMULATE_KEYS)
        return {"data": simulate(_int("data.simulate.n", sim["n"], 1),
                                 _number("data.simulate.mean", sim["mean"], -np.inf, np.inf),
                                 _number("data.simulate.sd", sim["sd"], 0.0, np.inf),
                                 _int("data.simulate.seed", sim["seed"], 0))}
    if "simulate_counts" in value:
        _known("data", value, {"simulate_counts"})
        sim = value["simulate_counts"]
        _known("data.simulate_counts", sim, COUNTS_KEYS, {"n", "mu", "tau", "seed"})
        key = "data.simulate_counts."
        return simulate_counts(
            _int(key + "n", sim["n"], 1), _number(key + "mu", sim["mu"], -50.0, 50.0),
            _number(key + "tau", sim["tau"], 0.0, np.inf), _int(key + "seed", sim["seed"], 0),
            groups=_int(key + "groups", sim.get("groups", 0), 0),
            tau_u=_number(key + "tau_u", sim.get("tau_u", 4.0), 0.0, np.inf))
    if "statsmodels" in value:
        _known("data", value, {"statsmodels", "rows"})
        if value["statsmodels"] != "cancer":
            _fail("data.statsmodels", value["statsmodels"], "cancer")
        arrays = cancer_data()
        rows = _int("data.rows", value.get("rows", len(arrays["counts"])), 1)
        return {k: a[:rows] for k, a in arrays.items()}
    if "arrays" in value:
        _known("data", value, {"arrays"})
        _known("data.arrays", value["arrays"], set(value["arrays"]))
        return {k: _array(f"data.arrays.{k}", v) for k, v in value["arrays"].items()}
    _fail("data", value, DATA_FORMS)


def _model(cfg: dict) -> CAVIModel:
    if ("example" in cfg) == ("model" in cfg):
        raise ValueError("config: give exactly one of 'example' (with 'arguments' and 'data') "
                         "or 'model' (factors and terms)")
    arrays = _data(cfg["data"]) if "data" in cfg else {}
    if "model" in cfg:
        return model_from_config(cfg["model"], arrays)
    if cfg["example"] not in EXAMPLES:
        _fail("example", cfg["example"], ", ".join(EXAMPLES))
    if "data" not in cfg:
        raise ValueError("config key 'data' is missing (required with 'example')")
    arguments = cfg.get("arguments") or {}
    if not isinstance(arguments, dict):
        _fail("arguments", arguments, "a mapping of the example's arguments")
    try:
        return EXAMPLES[cfg["example"]](**arrays, **arguments)
    except TypeError as err:
        raise ValueError(f"config key 'arguments' (or 'data'): {err}") from None


def _provider(name: str, family, spec) -> MomentProvider:
    key = f"providers.{name}"
    if isinstance(spec, str) and spec in EXACT_ROUTES:
        return ExactMoments(family, EXACT_ROUTES[spec])
    if spec == "sampling":
        return SamplingMoments(family)
    if isinstance(spec, dict) and set(spec) == {"sampling"}:
        return SamplingMoments(family, **(spec["sampling"] or {}))
    if not (isinstance(spec, dict) and "network" in spec):
        _fail(key, spec, "exact, gauss_hermite, quadrature, sampling, {sampling: {...}}, or "
              "{network: RUN_DIR, fallback: exact|gauss_hermite|quadrature|sampling|none, "
              "max_spread, margin, num_samples}")
    _known(key, spec, NETWORK_KEYS)
    options = {k: spec[k] for k in ("max_spread", "margin", "num_samples") if k in spec}
    network = NetworkMoments(spec["network"], **options)
    if network.family != family:
        raise ValueError(f"config key '{key}.network': {spec['network']} was trained on "
                         f"{network.family.name}; factor '{name}' is {family.name}")
    fallback = spec.get("fallback", "exact")
    if fallback == "none":
        return network
    if fallback not in (*EXACT_ROUTES, "sampling"):
        _fail(f"{key}.fallback", fallback, "exact, gauss_hermite, quadrature, sampling, none")
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
    if not isinstance(solver["track_elbo"], bool):
        _fail("solver.track_elbo", solver["track_elbo"], "true or false")
    return model, providers, solver


def cavi_run(config: str | os.PathLike | dict, out: str | os.PathLike | None = None, *,
             region: str | None = None, region_num: int = 4000, region_margin: float = 0.05,
             progress: bool = False) -> tuple[CAVIResult, Path]:
    """Solve the model a CAVI config describes; write OUT/result.json and OUT/cavi.png, and
    with `region` (a factor name) OUT/data-REGION.yaml: a data config of `region_num` eta
    over the box the solver visited for that factor (see `CAVIResult.data_config`)."""
    raw = read_config(config)
    model, providers, solver = _load(raw)
    if region is not None and region not in model.names:
        _fail("--region", region, ", ".join(model.names))
    name = "cavi" if isinstance(config, dict) else Path(config).stem
    out = Path(out or Path("runs") / f"cavi-{name}")
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in solver.items() if k != "seed"}
    result = run_cavi(model, providers, key=jax.random.key(solver["seed"]), progress=progress,
                      **settings)
    record = {"config": raw, **result.to_json()}
    _write_text(out / "result.json", json.dumps(record, indent=2))
    if region is not None:
        data = result.data_config(region, model.families[model.names.index(region)],
                                  num=region_num, margin=region_margin)
        _write_text(out / f"data-{region}.yaml", yaml.safe_dump(data, sort_keys=False))
    plot_cavi(result, dict(zip(model.names, model.families, strict=True)), out / "cavi.png",
              f"CAVI: {name}")
    return result, out
