"""Run folders: `bayes-et train` writes one, `bayes-et evaluate` scores it on other data."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

from bayes_et._files import carry, check_output_file, run_folder, write_json, write_text
from bayes_et.data import (
    DataFlag,
    Dataset,
    DataSettings,
    design_eta,
    flag_invalid_rows,
    load_data_config,
    load_dataset,
    moments_dataset,
    save_dataset,
    split_dataset,
)
from bayes_et.data._config import box_arrays, complete_data_config
from bayes_et.data._generate import generate_into
from bayes_et.et import ARCHITECTURES, AbstractET, ChartedET, build
from bayes_et.expfam import (
    ExponentialFamily,
    build_family,
    exact_moments,
    family_from_record,
    family_spec,
    pick_route,
    same_family,
)
from bayes_et.params import get_parameter_count, load_header, load_model, save_model
from bayes_et.settings import as_dict, integer, parse

from ._active import select_eta
from ._calibration import MAX_BINS, MAX_LOCAL, Z2_LEVEL, recalibrate
from ._config import TrainSettings, load_train_config
from ._field import ResidualField
from ._metrics import calibration_metrics, gaussianised
from ._model import LocalScale, TailScale, TrainedET, squares_of
from ._objective import make_targets, mc_noise
from ._plots import plot_calibration, plot_learning_curves
from ._predictive import predict
from ._trainer import train

EXACT_METHODS = ("closed_form", "quadrature")
ADDED = "added.npz"  # rows added to a run's data: active learning, a fallback's answers
CALIBRATION = "calibration.npz"  # the precise calibration set of MCMC data
CALIBRATION_IDS = 10**9  # sampler ids (and design seed offset) of the calibration set
GENERATE_BLOCK = 256  # eta per block of new data: mcmc_moments' block (less is padded to it)
MIN_ROWS = 2  # per split
DIVERGED_NRMSE = 10.0  # held-out normalised RMSE from which a training has diverged


def _dataset(source: str, folder: Path, previous: Path | None,
             family: ExponentialFamily | str | None) -> tuple[Dataset, ExponentialFamily]:
    """The training data and its family: a dataset file (its family built in, or the one
    the user passes), or a data config generated (resumably) into FOLDER/data.npz; the
    dataset of the `previous` run folder is reused when it came from the same config."""
    if not source.endswith((".yaml", ".yml")):
        data = load_dataset(source)
        fam = family_from_record(data.metadata.get("family"), family, "data family")
        carry(Path(source), folder / "data.npz")  # the run holds its rows
        return data, fam
    cfg = load_data_config(source)
    target = folder / "data.npz"
    if previous is not None and (previous / "data.npz").is_file() and not target.exists():
        old = load_dataset(previous / "data.npz", check=False)
        if old.metadata.get("config") == as_dict(cfg):
            os.link(previous / "data.npz", target)
    generate_into(cfg, target)
    return load_dataset(target), build_family(cfg.family)


def exact_truth(family: ExponentialFamily, data: Dataset) -> np.ndarray:
    """Exact mu_T at the dataset's eta: its own targets when they are exact, else closed
    form or quadrature."""
    if data.metadata.get("method") in EXACT_METHODS:
        return np.asarray(data.mu_T, np.float64)
    try:
        return exact_moments(family, data.eta)[0]
    except ValueError as err:
        raise ValueError(f"evaluate: no exact moments to compare with ({err})") from None


def evaluate(model: TrainedET, data: Dataset, family: ExponentialFamily, key: jax.Array,
             num_samples: int = 64) -> dict[str, Any]:
    """Calibration metrics of the model's predictive on `data` against exact moments, or,
    for a family without any (multi-dimensional x), against the data's own Monte-Carlo
    targets with their MC variance added to the predictive one (`truth` says which).
    A prediction that is not finite is an error naming the first such eta."""
    mean, cov, dof = predict(model, data.eta, key, num_samples)
    var = np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2)
    bad = ~np.all(np.isfinite(np.asarray(mean)) & np.isfinite(var), axis=1)
    if bad.any():
        first = np.asarray(data.eta[np.flatnonzero(bad)[0]], np.float64)
        raise ValueError(f"the network's answer is not finite at {int(bad.sum())} of "
                         f"{len(bad)} held-out eta (first: eta = {np.round(first, 4).tolist()})"
                         "; it cannot be scored there")
    mcse = None
    if np.all(np.isfinite(data.ess)):
        mcse = np.sqrt(np.diagonal(mc_noise(data), axis1=1, axis2=2))
    exact = (data.metadata.get("method") in EXACT_METHODS
             or pick_route(family, robust=True) is not None)
    noise = None
    if exact or mcse is None:
        truth, source = exact_truth(family, data), "exact moments"
    else:
        truth, noise = np.asarray(data.mu_T, np.float64), mcse**2
        var = var + noise
        source = ("Monte-Carlo targets (no exact moments exist): their MC variance is added "
                  "to the predictive one and subtracted from the squared error")
    return {"truth": source, **calibration_metrics(np.asarray(mean), var, truth, mcse,
                                                   list(family.flat_names), noise,
                                                   np.asarray(dof))}


def _network(architecture: str, config: dict, family: ExponentialFamily, key,
             chart: bool) -> AbstractET:
    """A fresh network for the family, in its chart if `chart` (and it declares one)."""
    net = build(architecture, family.eta_dim, config, key)
    return ChartedET(net, family.chart) if chart and family.chart is not None else net


def _template(hyperparams: dict, family: ExponentialFamily) -> TrainedET:
    net = _network(hyperparams["architecture"], hyperparams["network"], family,
                   jax.random.key(0), hyperparams.get("chart") is not None)
    names = family.flat_names
    kept = hyperparams.get("slope_squares")  # absent in runs made before it was chosen
    model = TrainedET.wrap(net, square_of=squares_of(family, net) if kept is None else tuple(
        (names.index(b), names.index(a)) for b, a in kept))
    rows = hyperparams.get("local_calibration_rows", 0)
    if rows:
        local = LocalScale.empty(rows, family.eta_dim, family.eta_dim)
        model = eqx.tree_at(lambda m: m.local, model, local, is_leaf=lambda x: x is None)
    if hyperparams.get("tail_bins", 0):
        tail = TailScale.empty(hyperparams["tail_bins"], family.eta_dim)
        model = eqx.tree_at(lambda m: m.tail, model, tail, is_leaf=lambda x: x is None)
    if hyperparams.get("residual_field_rows", 0):
        field = ResidualField.empty(hyperparams["residual_field_rows"], family.eta_dim,
                                    family.eta_dim,
                                    hyperparams.get("residual_field_correlated", False),
                                    hyperparams.get("residual_field_per_coordinate", False))
        model = eqx.tree_at(lambda m: m.field, model, field, is_leaf=lambda x: x is None)
    return model


def _check_header(path: Path, hyperparams: dict, family) -> ExponentialFamily:
    """The header's fields, each checked; returns the family it records."""
    def bad(key: str, allowed: str):
        raise ValueError(f"{path}: header field '{key}' is {hyperparams.get(key)!r}; "
                         f"allowed: {allowed}")

    if hyperparams.get("architecture") not in ARCHITECTURES:
        bad("architecture", ", ".join(ARCHITECTURES))
    dim = hyperparams.get("eta_dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        bad("eta_dim", "an int >= 1")
    if not isinstance(hyperparams.get("network"), dict):
        bad("network", "a mapping")
    for key, most in (("local_calibration_rows", MAX_LOCAL), ("residual_field_rows", MAX_LOCAL),
                      ("tail_bins", MAX_BINS)):
        rows = hyperparams.get(key, 0)
        if type(rows) is not int or not 0 <= rows <= most:
            bad(key, f"an int in [0, {most}]")
    for key in ("residual_field_correlated", "residual_field_per_coordinate"):
        if type(hyperparams.get(key, False)) is not bool:
            bad(key, "true or false")
    family = family_from_record(hyperparams.get("family"), family, f"{path}: family")
    if family.eta_dim != dim or hyperparams.get("stat_names") != list(family.flat_names):
        bad("stat_names", f"{list(family.flat_names)} (eta_dim {family.eta_dim}) of "
            f"{family.name}")
    kept = hyperparams.get("slope_squares")
    if kept is not None and not (isinstance(kept, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)
            and family.squares.get(p[0]) == p[1] for p in kept)):
        bad("slope_squares", f"a list of pairs [square, statistic] among "
            f"{[list(p) for p in family.squares.items()]}")
    chart = None if family.chart is None else family.chart.name
    if hyperparams.get("chart") not in (None, chart):
        bad("chart", f"{chart!r} (the chart {family.name} declares) or null")
    region = hyperparams.get("training_region")
    ok = isinstance(region, dict) and all(
        np.shape(region.get(k)) == (dim,) and np.all(np.isfinite(np.asarray(region[k], float)))
        for k in ("eta_min", "eta_max"))
    if not ok:
        bad("training_region", f"{{eta_min, eta_max}}: {dim} finite numbers each")
    return family


class TrainedRun(NamedTuple):
    """A run folder as `load_run` reads it: the trained model, the family it learnt, its
    training region (eta_min, eta_max) and the model file's header (hyperparameters)."""

    model: TrainedET
    family: ExponentialFamily
    region: tuple[np.ndarray, np.ndarray]
    header: dict[str, Any]


def load_run(run_dir: str | os.PathLike, family: ExponentialFamily | str | None = None
             ) -> TrainedRun:
    """The trained model of a run folder with its family, region and header (content hash
    and fields checked). A run of a family that is not built in needs `family` (the family,
    or its 'module:Class'): a file never chooses what is imported."""
    path = Path(run_dir) / "model.eqx"
    if not path.is_file():
        raise ValueError(f"run folder {str(run_dir)!r} has no model.eqx (not a training run)")
    hyperparams = load_header(path)["hyperparams"]
    family = _check_header(path, hyperparams, family)
    region = hyperparams["training_region"]
    with jax.enable_x64(False):  # networks are float32, also for a caller in float64
        model = load_model(path, _template(hyperparams, family))
        if model.field is not None:
            model = eqx.tree_at(lambda m: m.field, model,
                                model.field.with_length_per_coordinate())
    return TrainedRun(model, family, tuple(np.asarray(region[k], np.float64)
                                           for k in ("eta_min", "eta_max")), hyperparams)


def _write_history(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def _splits(dataset: Dataset, family, cfg: TrainSettings) -> tuple[Dataset, ...]:
    dataset = flag_invalid_rows(dataset, family)
    splits = split_dataset(dataset, cfg.split, cfg.seed)
    if min(len(s) for s in splits) < MIN_ROWS:
        usable = int(np.count_nonzero(dataset.flags == 0))
        raise ValueError(f"data: {usable} usable rows of {len(dataset)} (the others flagged "
                         f"or invalid: {dataset.metadata['invalid_rows']}); allowed: enough for "
                         f"{MIN_ROWS} rows in each of the train, validation and test splits")
    return splits


def _excluded(dataset: Dataset) -> dict[str, int]:
    """Rows left out of the splits, by reason."""
    flags = dataset.flags
    return {"total": int(np.count_nonzero(flags)),
            **{flag.name.lower(): int(np.count_nonzero(flags & flag)) for flag in DataFlag}}


def train_run(config: str | os.PathLike | dict | TrainSettings, *, data: str | None = None,
              out: str | os.PathLike | None = None, force: bool = False,
              progress: bool = True, family: ExponentialFamily | str | None = None) -> Path:
    """Train the network that `config` describes and write the run folder `out` whole: model.eqx,
    metrics.json, history.csv, learning_curves.png, calibration.png (and data.npz when the data
    is a config, added.npz after active-learning rounds). Inputs and the output path are checked
    before any work; an existing run is replaced (whole) only with `force`. Rows of the data
    that are flagged or invalid (NaN, ess <= 0, eta outside the family's space) are left out and
    counted in metrics.json. `family`: needed for data of a family that is not built in (the
    family, or its 'module:Class')."""
    cfg = load_train_config(config)
    source = data or cfg.data
    if source is None:
        raise ValueError("config key 'data' is missing; set it or pass --data PATH")
    source = str(source)
    if source.endswith((".yaml", ".yml")):
        load_data_config(source)
    else:
        probe = load_dataset(source)
        family_from_record(probe.metadata.get("family"), family, "data family")
    name = Path(config).stem if isinstance(config, (str, os.PathLike)) else cfg.architecture
    out = Path(out or Path("runs") / f"{name}-{Path(source).stem}")
    previous = out if out.is_dir() else None
    inputs = [source] + ([config] if isinstance(config, (str, os.PathLike)) else [])
    with run_folder(out, force=force, config=[as_dict(cfg), source],
                    inputs=inputs) as folder:
        dataset, fam = _dataset(source, folder, previous, family)
        _train_into(folder, cfg, dataset, fam, source, progress)
    return out


def _with_rows(train_set: Dataset, val_set: Dataset, rows: Dataset | None, cfg: TrainSettings,
               family) -> tuple[Dataset, Dataset]:
    """Added rows (active learning, a fallback's answers) joined to the train and
    validation splits in their ratio; the test split stays as it was, so scores compare."""
    if rows is None or len(rows) == 0:
        return train_set, val_set
    rows = flag_invalid_rows(rows, family)
    share = cfg.split[0] / (cfg.split[0] + cfg.split[1])
    new_train, new_val = split_dataset(rows, (share, 1 - share), cfg.seed)
    join = lambda a, b: Dataset.concatenate([a, b], a.metadata)
    return join(train_set, new_train), join(val_set, new_val)


def _fit(model: TrainedET, cfg: TrainSettings, train_set: Dataset, val_set: Dataset,
         calibration_set: Dataset | None, squares: tuple[tuple[int, int], ...],
         key: jax.Array, key_pred: jax.Array, progress: bool, lr_factor: float = 1.0,
         fresh: bool = False) -> tuple[TrainedET, list[dict], np.ndarray]:
    """Train from the model's weights (its standardisation kept; `fresh`: untrained, no
    candidate to keep), then recalibrate on the calibration set (default: the validation
    split), the squares answered by the slope where that helps there (among `squares`);
    also its held-out z^2."""
    floor = cfg.likelihood.noise_floor
    model, history = train(model, make_targets(train_set, model, floor),
                           make_targets(val_set, model, floor), cfg, key=key,
                           progress=progress, lr_factor=lr_factor, keep_start=not fresh)
    model, z2 = recalibrate(model, calibration_set or val_set, key_pred,
                            cfg.predictive.num_samples, squares)
    return model, history, z2


def _generated(family, method: str, eta: np.ndarray, ids: np.ndarray, cfg: DataSettings,
               what: str, progress: bool) -> Dataset:
    """moments_dataset in blocks of GENERATE_BLOCK eta, with a progress bar (the same rows:
    each eta's sampler keys depend on its id only)."""
    starts = range(0, len(eta), GENERATE_BLOCK)
    bar = tqdm(starts, desc=f"{what} ({method})", unit="block", disable=not progress)
    blocks = [moments_dataset(family, method, eta[i:i + GENERATE_BLOCK],
                              ids[i:i + GENERATE_BLOCK], cfg) for i in bar]
    return Dataset.concatenate(blocks)


def _calibration_set(folder: Path, cfg: TrainSettings, dataset: Dataset, family,
                     progress: bool) -> Dataset | None:
    """For MCMC data with `calibration.num_eta`: FOLDER/calibration.npz, eta of the data's
    box sampled with draws_factor x its draws (made once; kept with the run)."""
    settings = cfg.calibration
    if not settings.num_eta or dataset.metadata.get("method") != "mcmc":
        return None
    path = folder / CALIBRATION
    if not path.is_file():
        data_cfg = _recorded_data_config(dataset, family, "calibration")
        sampler = replace(data_cfg.sampler,
                          num_samples=data_cfg.sampler.num_samples * settings.draws_factor)
        eta = design_eta(family, settings.num_eta, box=box_arrays(family, data_cfg.eta.box),
                         seed=cfg.seed + CALIBRATION_IDS)
        rows = _generated(family, "mcmc", eta, CALIBRATION_IDS + np.arange(len(eta)),
                          replace(data_cfg, sampler=sampler), "calibration set", progress)
        save_dataset(path, replace(rows, metadata={**dataset.metadata, "counts": None}))
    rows = flag_invalid_rows(load_dataset(path), family)
    return rows.take(np.flatnonzero(rows.flags == 0))


def _recorded_data_config(dataset: Dataset, family, key: str = "active") -> DataSettings:
    """The data config recorded in the dataset (for more data of the same kind)."""
    raw = dataset.metadata.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"config key '{key}': the data records no config (metadata "
                         "'config'); make it with bayes-et generate")
    return complete_data_config(parse(DataSettings, raw, "data config"), family)


def _check_not_diverged(test: dict[str, Any], cfg: TrainSettings) -> None:
    """A run whose held-out error is DIVERGED_NRMSE times the targets' own spread or more
    (or not finite) diverged: an error naming the figure, never a run folder (a short,
    undertrained run stays near 1)."""
    bad = {k: v for k, v in test["nrmse"].items() if not v <= DIVERGED_NRMSE}  # NaN too
    if bad:
        name, value = next(iter(bad.items()))
        lrs = ", ".join(f"{s.name} {s.lr:g}" for s in cfg.stages)
        raise ValueError(f"training diverged: the held-out normalised RMSE of {name} is "
                         f"{value:.3g} (> {DIVERGED_NRMSE:g}: far worse than the targets' "
                         f"mean); lower the stages' lr ({lrs})")


def _curve_point(test: dict[str, Any], num_eta: int) -> dict[str, Any]:
    return {"num_eta": num_eta, "max_nrmse": max(test["nrmse"].values()),
            "coverage_90": test["coverage"]["0.9"], "mean_z2": test["mean_z2"]}


def _train_into(folder: Path, cfg: TrainSettings, dataset: Dataset, family, source: str,
                progress: bool, *, start: TrainedET | None = None,
                added: Dataset | None = None, refit: bool = True,
                extends: str | None = None) -> None:
    """Train (from `start`'s weights if given; with `refit` False straight to the rounds)
    on the dataset's splits plus `added` rows, run the config's active-learning rounds,
    and write the run's files into `folder`."""
    train_set, val_set, test_set = _splits(dataset, family, cfg)
    data_cfg = _recorded_data_config(dataset, family) if cfg.active.rounds else None
    key_net, key_train, key_pred = jax.random.split(jax.random.key(cfg.seed), 3)
    fresh = start is None
    if fresh:
        net = _network(cfg.architecture, cfg.network, family, key_net, cfg.chart)
        start = TrainedET.wrap(net.standardize(train_set.eta, train_set.mu_T),
                               cfg.likelihood.init_misfit)
    squares = squares_of(family, start.net)  # candidates for the slope's answer
    train_set, val_set = _with_rows(train_set, val_set, added, cfg, family)
    num_samples = cfg.predictive.num_samples
    calibration_set = _calibration_set(folder, cfg, dataset, family, progress)
    began = time.perf_counter()
    model, history, val_z2 = start, [], None
    if refit:
        model, history, val_z2 = _fit(start, cfg, train_set, val_set, calibration_set,
                                      squares, key_train, key_pred, progress, fresh=fresh)
    curve = []
    for index in range(cfg.active.rounds):
        curve.append(_curve_point(evaluate(model, test_set, family, key_pred, num_samples),
                                  len(train_set) + len(val_set)))
        ids = len(dataset) + (0 if added is None else len(added)) + np.arange(
            cfg.active.num_eta)
        eta = select_eta(model, family, box_arrays(family, data_cfg.eta.box), cfg.active,
                         jax.random.fold_in(key_pred, index), cfg.seed + 1 + index, num_samples)
        rows = _generated(family, dataset.metadata["method"], eta, ids[: len(eta)], data_cfg,
                          f"active round {index + 1}", progress)
        rows = replace(rows, metadata={**dataset.metadata, "counts": None})
        added = rows if added is None else Dataset.concatenate([added, rows], added.metadata)
        train_set, val_set = _with_rows(train_set, val_set, rows, cfg, family)
        model, more, val_z2 = _fit(model, cfg, train_set, val_set, calibration_set,
                                   squares, jax.random.fold_in(key_train, index + 1), key_pred,
                                   progress, cfg.active.lr_decay ** (index + 1))
        history += [{**row, "epoch": len(history) + i, "round": index + 1}
                    for i, row in enumerate(more)]
    seconds = time.perf_counter() - began
    test = evaluate(model, test_set, family, key_pred, num_samples)
    _check_not_diverged(test, cfg)
    if curve:  # the last point is the final score
        curve.append(_curve_point(test, len(train_set) + len(val_set)))
    if val_z2 is None:  # not recalibrated here: the loaded model's band, in sample
        mean, cov, dof = predict(model, val_set.eta, key_pred, num_samples)
        val_var = np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2) + np.diagonal(
            mc_noise(val_set), axis1=1, axis2=2)
        val_z2 = gaussianised((val_set.mu_T - np.asarray(mean, np.float64))
                              / np.sqrt(val_var), np.asarray(dof)) ** 2
    spec = family_spec(family)
    hyperparams = {
        "architecture": cfg.architecture, "eta_dim": family.eta_dim,
        "network": cfg.network, "family": spec,
        "chart": model.net.chart.name if isinstance(model.net, ChartedET) else None,
        "stat_names": list(family.flat_names),
        "slope_squares": [[family.flat_names[b], family.flat_names[a]]
                          for b, a in model.square_of],
        "training_region": {"eta_min": train_set.eta.min(0).tolist(),
                            "eta_max": train_set.eta.max(0).tolist()},
        "data": source, "data_method": dataset.metadata.get("method"),
        "local_calibration_rows": 0 if model.local is None else len(model.local.eta),
        "residual_field_rows": 0 if model.field is None else len(model.field.z),
        "tail_bins": 0 if model.tail is None else len(model.tail.log_v),
        "residual_field_correlated": getattr(model.field, "correlation", None) is not None,
        "residual_field_per_coordinate": model.field is not None,
    }
    save_model(folder / "model.eqx", model, **hyperparams)
    if added is not None:
        save_dataset(folder / ADDED, added)
    flagged = flag_invalid_rows(dataset, family)
    metrics = {
        "architecture": cfg.architecture, "family": spec,
        "data": source, "num_rows": len(dataset), "excluded_rows": _excluded(flagged),
        "added_rows": 0 if added is None else len(added), "extends": extends,
        "num_train": len(train_set), "num_validation": len(val_set), "num_test": len(test_set),
        "num_calibration": 0 if calibration_set is None else len(calibration_set),
        "parameters": get_parameter_count(model.net),
        "slope_squares": [family.flat_names[b] for b, _ in model.square_of],
        "training_seconds": seconds, "epochs": len(history),
        "calibration": {k: np.asarray(v, np.float64).tolist()
                        for k, v in model.spread_calibration._asdict().items()} | {
            "local_bandwidth": None if model.local is None
            else np.exp(np.asarray(model.local.log_bandwidth, np.float64)).tolist(),
            "field_lengthscale": None if model.field is None
            else np.exp(np.asarray(model.field.log_lengthscale, np.float64)).tolist(),
            "field_correlation": None if not hyperparams["residual_field_correlated"]
            else np.asarray(model.field.correlation @ model.field.correlation.T,
                            np.float64).tolist(),
            "tail": None if model.tail is None else {  # per spread bin (rows), statistic
                "log_variance": np.asarray(model.tail.log_v, np.float64).tolist(),
                "scale": np.exp(np.asarray(model.tail.log_s, np.float64)).tolist(),
                "inverse_dof": np.asarray(model.tail.inv_nu, np.float64).tolist()}},
        "validation_mean_z2": float(np.mean(val_z2)),
        "validation_coverage_90": float(np.mean(val_z2 <= Z2_LEVEL)),
        "test": test,
        "active_learning": curve,
        "config": as_dict(cfg),
    }
    write_json(folder / "metrics.json", metrics)
    _write_history(folder / "history.csv", [{"round": 0, **row} for row in history])
    plot_learning_curves(history, folder / "learning_curves.png")
    plot_calibration(metrics["test"], folder / "calibration.png",
                     f"{cfg.architecture} on {family.name}: held-out eta vs "
                     f"{metrics['test']['truth'].split(' (')[0]}")


def extend_run(run_dir: str | os.PathLike, data: str | os.PathLike | list = (), *,
               out: str | os.PathLike | None = None, config: Any = None,
               force: bool = False, progress: bool = True,
               family: ExponentialFamily | str | None = None) -> Path:
    """A new run folder `out` (default RUN_DIR-extended) whose network continues from the
    run's weights on its data plus the rows of `data` (dataset files, for example the
    answers a CAVI fallback gave: `fallback-<factor>.npz`), joined to the train and
    validation splits; the test split stays the run's. `config` (default: the run's,
    without active-learning rounds) sets the stages; with `active.rounds` in it (and no
    data) the run gets that many more active-learning rounds."""
    model, fam, _, hyperparams = load_run(run_dir, family)
    run_dir = Path(run_dir)
    recorded = json.loads((run_dir / "metrics.json").read_text())["config"]
    cfg = load_train_config(config if config is not None else
                            {**recorded, "active": {"rounds": 0}})
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    parts = [load_dataset(run_dir / ADDED)] if (run_dir / ADDED).is_file() else []
    for path in paths:
        rows = load_dataset(path)
        if not same_family(rows.metadata.get("family"), hyperparams["family"]):
            raise ValueError(f"--data: {path} holds {rows.metadata.get('family')!r}; the run "
                             f"was trained on {hyperparams['family']!r}")
        parts.append(rows)
    if not parts and not cfg.active.rounds:
        raise ValueError("--data: nothing to add (no rows, no active.rounds in the config)")
    source = hyperparams["data"]
    if not (run_dir / "data.npz").is_file() and not Path(source).is_absolute():
        raise ValueError(f"run_dir: {run_dir} holds no data.npz and records its data by the "
                         f"relative path {source!r}; retrain it with this version")
    dataset = load_dataset(run_dir / "data.npz" if (run_dir / "data.npz").is_file()
                           else source)
    out = Path(out or f"{run_dir}-extended")
    with run_folder(out, force=force, config=[str(run_dir), [str(p) for p in paths],
                                              as_dict(cfg)],
                    inputs=[run_dir, *paths]) as folder:
        for name in ("data.npz", CALIBRATION):
            if (run_dir / name).is_file() and not (folder / name).exists():
                os.link(run_dir / name, folder / name)
        added = Dataset.concatenate(parts, parts[0].metadata) if parts else None
        _train_into(folder, cfg, dataset, fam, source, progress, start=model, added=added,
                    refit=bool(paths), extends=str(run_dir))
    return out


def evaluate_run(run_dir: str | os.PathLike, data: str, *, num_samples: int = 64,
                 seed: int = 0, force: bool = False,
                 family: ExponentialFamily | str | None = None) -> tuple[dict[str, Any], Path]:
    """Metrics of a run's model on the dataset `data`, written to
    RUN_DIR/evaluation-<data stem>.json with its calibration figure beside it (an existing
    evaluation is replaced only with `force`). Data of another family (name and arguments)
    is refused; invalid and flagged rows are left out and counted."""
    model, fam, _, hyperparams = load_run(run_dir, family)
    dataset = load_dataset(data)
    if not same_family(dataset.metadata.get("family"), hyperparams["family"]):
        raise ValueError(f"--data: {data} holds {dataset.metadata.get('family')!r}; the run "
                         f"was trained on {hyperparams['family']!r}")
    integer(2, 100_000)("--num-samples", num_samples)
    stem = Path(data).stem
    path = check_output_file(Path(run_dir) / f"evaluation-{stem}.json", force=force)
    figure = check_output_file(Path(run_dir) / f"calibration-{stem}.png", force=force)
    dataset = flag_invalid_rows(dataset, fam)
    rows = np.flatnonzero(dataset.flags == 0)
    if rows.size == 0:
        raise ValueError(f"--data: {data} has no usable rows ({_excluded(dataset)})")
    metrics = evaluate(model, dataset.take(rows), fam, jax.random.key(seed), num_samples)
    metrics.update(data=str(data), num_rows=len(dataset), excluded_rows=_excluded(dataset))
    write_json(path, metrics)
    plot_calibration(metrics, figure, f"{hyperparams['architecture']} on {fam.name}: {stem}")
    return metrics, path
