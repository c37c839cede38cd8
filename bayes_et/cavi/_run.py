"""`bayes-et cavi CONFIG`: a model and its providers from YAML, solved, written to a folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from bayes_et._files import check_name, run_folder, write_json, write_text
from bayes_et._versions import package_versions
from bayes_et.data import Dataset, DataSettings, moments_dataset, save_dataset
from bayes_et.expfam import family_spec, pick_route
from bayes_et.settings import (
    as_dict,
    fail,
    integer,
    known_keys,
    number,
    parse,
    read_config,
)

from ._audit import Audit, AuditSettings
from ._model import CAVIModel, model_from_config
from ._plots import plot_cavi
from ._providers import (
    MomentFlag,
    MomentProvider,
    SamplingMoments,
    WithFallback,
    provider_from_config,
)
from ._solver import CAVIResult, SolverSettings, solve
from .examples import DATASETS, EXAMPLES, simulate, simulate_counts

KEYS = {"example", "arguments", "data", "model", "providers", "solver"}
SIMULATE_KEYS = {"n", "mean", "sd", "seed"}
COUNTS_KEYS = {"n", "mu", "tau", "seed", "groups", "tau_u"}
DATA_FORMS = ("a list of numbers, {simulate: {n, mean, sd, seed}}, {simulate_counts: {n, mu, "
              "tau, seed, groups, tau_u}}, {dataset: cancer or scrt, rows: K}, or {arrays: {name: "
              "[...]}}")


def _array(key: str, value) -> np.ndarray:
    """A non-empty (nested) list of finite numbers as an array."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        array = np.asarray([])
    if array.size == 0 or array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
        fail(key, value, "a non-empty list (or nested lists of one shape) of finite numbers")
    return array


def _data(value) -> dict[str, np.ndarray]:
    """The config's data as named arrays (`data` for a list of observations)."""
    if isinstance(value, list):
        if any(isinstance(v, list) for v in value):
            fail("data", value, "a list of numbers (observations)")
        return {"data": _array("data", value).astype(np.float64)}
    if not (isinstance(value, dict) and len(value) in (1, 2)):
        fail("data", value, DATA_FORMS)
    if "simulate" in value:
        known_keys("data", value, {"simulate"})
        sim = value["simulate"]
        known_keys("data.simulate", sim, SIMULATE_KEYS, SIMULATE_KEYS)
        return {"data": simulate(integer(1, 10**8)("data.simulate.n", sim["n"]),
                                 number()("data.simulate.mean", sim["mean"]),
                                 number(0.0, low_open=True)("data.simulate.sd", sim["sd"]),
                                 integer(0)("data.simulate.seed", sim["seed"]))}
    if "simulate_counts" in value:
        known_keys("data", value, {"simulate_counts"})
        sim = value["simulate_counts"]
        known_keys("data.simulate_counts", sim, COUNTS_KEYS, {"n", "mu", "tau", "seed"})
        key = "data.simulate_counts."
        return simulate_counts(
            integer(1, 10**8)(key + "n", sim["n"]), number(-50.0, 50.0)(key + "mu", sim["mu"]),
            number(0.0, low_open=True)(key + "tau", sim["tau"]),
            integer(0)(key + "seed", sim["seed"]),
            groups=integer(0, 10**6)(key + "groups", sim.get("groups", 0)),
            tau_u=number(0.0, low_open=True)(key + "tau_u", sim.get("tau_u", 4.0)))
    if "dataset" in value:
        known_keys("data", value, {"dataset", "rows"})
        if value["dataset"] not in DATASETS:
            fail("data.dataset", value["dataset"], ", ".join(DATASETS))
        arrays = {k: a for k, a in DATASETS[value["dataset"]]().items()
                  if np.asarray(a).dtype.kind in "iuf"}  # the numbers the builders take
        rows = integer(1)("data.rows", value.get("rows", len(arrays["counts"])))
        return {k: a[:rows] for k, a in arrays.items()}
    if "arrays" in value:
        known_keys("data", value, {"arrays"})
        known_keys("data.arrays", value["arrays"], set(value["arrays"]))
        return {k: _array(f"data.arrays.{k}", v) for k, v in value["arrays"].items()}
    fail("data", value, DATA_FORMS)


def _model(cfg: dict) -> CAVIModel:
    if ("example" in cfg) == ("model" in cfg):
        raise ValueError("config: give exactly one of 'example' (with 'arguments' and 'data') "
                         "or 'model' (factors and terms)")
    arrays = _data(cfg["data"]) if "data" in cfg else {}
    if "model" in cfg:
        with np.errstate(all="ignore"):  # an overflow is refused as a non-finite eta0
            return model_from_config(cfg["model"], arrays)
    if cfg["example"] not in EXAMPLES:
        fail("example", cfg["example"], ", ".join(EXAMPLES))
    if "data" not in cfg:
        raise ValueError("config key 'data' is missing (required with 'example')")
    arguments = cfg.get("arguments") or {}
    if not isinstance(arguments, dict):
        fail("arguments", arguments, "a mapping of the example's arguments")
    try:
        with np.errstate(all="ignore"):  # an overflow is refused as a non-finite eta0
            return EXAMPLES[cfg["example"]](**arrays, **arguments)
    except TypeError as err:
        raise ValueError(f"config key 'arguments' (or 'data'): {err}") from None


class CAVIConfig(NamedTuple):
    """A CAVI config, parsed: the model, a provider per factor, the solver's settings and
    the audit (None without one)."""

    model: CAVIModel
    providers: dict[str, MomentProvider]
    solver: SolverSettings
    audit: Audit | None


def _audit(providers_cfg: dict, model: CAVIModel, solver: SolverSettings) -> Audit | None:
    """The audit: the oracles named per factor (`providers.NAME.audit`), with the members
    and seed of `solver.audit` (its defaults when only oracles are named)."""
    oracles = {}
    for name, family in zip(model.names, model.families, strict=True):
        spec = providers_cfg.get(name)
        if isinstance(spec, dict) and spec.get("audit") is not None:
            oracles[name] = provider_from_config(family, spec["audit"], f"providers.{name}")
    if not oracles:
        if solver.audit is not None:
            fail("solver.audit", as_dict(solver.audit), "an audit needs an oracle named beside "
                 "a network: providers.FACTOR.audit (exact, gauss_hermite, quadrature, "
                 "sampling)")
        return None
    settings = solver.audit or parse(AuditSettings, None)
    return Audit(oracles, settings.members, settings.seed, settings.design)


def load_cavi_config(source: str | os.PathLike | dict) -> CAVIConfig:
    """(model, providers, solver settings, audit) from a CAVI config (YAML file or dict)."""
    cfg = known_keys("", read_config(source), KEYS)
    model = _model(cfg)
    for name in model.names:  # they name files: fallback-NAME.npz, audit-NAME.npz, ...
        check_name("factor name", name)
    providers_cfg = cfg.get("providers") or {}
    known_keys("providers", providers_cfg, set(model.names))
    providers = {name: provider_from_config(family, providers_cfg.get(name, "exact"),
                                            f"providers.{name}")
                 for name, family in zip(model.names, model.families, strict=True)}
    solver = parse(SolverSettings, cfg.get("solver"), "solver")
    return CAVIConfig(model, providers, solver, _audit(providers_cfg, model, solver))


def answer_rows(family, provider: MomentProvider, eta: np.ndarray, seed: int,
                source: str) -> Dataset:
    """The answers of an exact or sampling `provider` at `eta` (n, d) as a dataset to extend
    a network's run with (`bayes_et.train.extend_run`): the family's robust exact moments
    (`pick_route`) for an exact provider, NUTS moments with its settings for a sampling
    one (with the default settings for a family without a robust exact route)."""
    route = None if isinstance(provider, SamplingMoments) else pick_route(family, robust=True)
    method, sampler = ((route.name, {}) if route
                       else ("mcmc", dict(getattr(provider, "settings", ()))))
    raw = {"family": family_spec(family), "eta": {"num": len(eta)}, "method": method,
           "sampler": sampler, "seed": seed}
    cfg = parse(DataSettings, raw, "answer data")
    rows = moments_dataset(family, method, eta, np.arange(len(eta)), cfg)
    return dataclasses.replace(rows, metadata={
        "family": raw["family"], "stat_names": list(family.flat_names), "method": method,
        "config": as_dict(cfg), "source": source, "versions": package_versions()})


def fallback_answers(result: CAVIResult, providers: dict[str, MomentProvider]
                     ) -> dict[str, Dataset]:
    """Per factor whose network needed its fallback at the fixed point: the backup's
    answers at those members' eta (`answer_rows`)."""
    answers = {}
    for index, name in enumerate(result.names):
        provider = providers.get(name)
        if not isinstance(provider, WithFallback):
            continue
        used = (result.member_flags[name] & MomentFlag.ANSWERED_BY_FALLBACK) != 0
        eta = np.reshape(result.eta[name], (-1, provider.family.eta_dim))[used]
        if len(eta):
            answers[name] = answer_rows(provider.family, provider.backup, eta, index,
                                        f"fallback answers of CAVI factor {name!r}")
    return answers


def audit_answers(result: CAVIResult, audit: Audit) -> dict[str, Dataset]:
    """Per audited factor: the oracle's answers at the audited members' eta
    (`answer_rows`), training rows where the model is."""
    if result.audit is None:
        return {}
    return {name: answer_rows(oracle.family, oracle, result.audit.oracle_eta[name],
                              result.names.index(name), f"audit answers of CAVI factor "
                              f"{name!r}") for name, oracle in audit.oracles.items()}


def cavi_run(config: str | os.PathLike | dict, out: str | os.PathLike | None = None, *,
             region: str | None = None, region_num: int = 4000, region_margin: float = 0.05,
             force: bool = False, progress: bool = False) -> tuple[CAVIResult, Path]:
    """Solve the model a CAVI config describes; write the folder OUT whole (result.json,
    cavi.png, and with `region` (a factor name) data-REGION.yaml: a data config of
    `region_num` eta over the box the solver visited for that factor, see
    `CAVIResult.data_config`), and fallback-FACTOR.npz where a network's fallback answered
    at the fixed point (`fallback_answers`), and with an audit audit-FACTOR.npz (the
    oracle's answers at the audited members). An existing OUT is replaced only with
    `force`."""
    raw = read_config(config)
    model, providers, solver, audit = load_cavi_config(raw)
    if region is not None and region not in model.names:
        fail("--region", region, ", ".join(model.names))
    integer(2)("--region-num", region_num)
    number(0.0, 10.0)("--region-margin", region_margin)
    name = "cavi" if isinstance(config, dict) else Path(config).stem
    out = Path(out or Path("runs") / f"cavi-{name}")
    networks = [spec["network"] for spec in (raw.get("providers") or {}).values()
                if isinstance(spec, dict) and isinstance(spec.get("network"), str)]
    inputs = networks + ([] if isinstance(config, dict) else [config])
    with run_folder(out, force=force, config=[raw, region, region_num, region_margin],
                    inputs=inputs) as folder:
        result = solve(model, providers, solver, audit=audit, progress=progress)
        write_json(folder / "result.json", {"config": raw, **result.to_json()})
        for factor, rows in fallback_answers(result, providers).items():
            save_dataset(folder / f"fallback-{factor}.npz", rows)
        for factor, rows in audit_answers(result, audit).items():
            save_dataset(folder / f"audit-{factor}.npz", rows)
        if region is not None:
            data = result.data_config(region, model.families[model.names.index(region)],
                                      num=region_num, margin=region_margin)
            versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
            write_text(folder / f"data-{region}.yaml", f"# written by bayes-et cavi ({versions})\n"
                       + yaml.safe_dump(data, sort_keys=False))
        plot_cavi(result, dict(zip(model.names, model.families, strict=True)),
                  folder / "cavi.png", f"CAVI: {name}")
    return result, out

