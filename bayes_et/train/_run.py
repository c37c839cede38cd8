"""Run folders: `bayes-et train` writes one, `bayes-et evaluate` scores it on other data."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayes_et.data import Dataset, generate, load_data_config, load_dataset, split_dataset
from bayes_et.et import build
from bayes_et.expfam import ExponentialFamily, build_family, exact_moments
from bayes_et.params import get_parameter_count, load_header, load_model, save_model

from ._config import load_train_config
from ._metrics import calibration_metrics
from ._model import TrainedET
from ._objective import make_targets, mc_noise
from ._plots import plot_calibration, plot_learning_curves
from ._predictive import mean_z2, predict, recalibrate
from ._trainer import train

EXACT_METHODS = ("closed_form", "quadrature")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dataset(source: str, out: Path) -> Dataset:
    """A dataset file, or a data config generated (once, resumably) into OUT/data.npz."""
    if source.endswith((".yaml", ".yml")):
        target = out / "data.npz"
        if not target.exists():
            generate(source, target, resume=True)
        data = load_dataset(target)
        if data.metadata.get("config") != load_data_config(source):
            raise ValueError(f"data: {target} was generated from a different config than "
                             f"{source}; delete it or choose another --out")
        return data
    return load_dataset(source)


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
    targets with their MC variance added to the predictive one (`truth` says which)."""
    mean, cov = predict(model, data.eta, key, num_samples)
    var = np.diagonal(np.asarray(cov, np.float64), axis1=1, axis2=2)
    mcse = None
    if np.all(np.isfinite(data.ess)):
        mcse = np.sqrt(np.diagonal(mc_noise(data), axis1=1, axis2=2))
    exact = data.metadata.get("method") in EXACT_METHODS or family.has_closed_form or (
        int(np.prod(family.x_shape)) == 1)
    if exact or mcse is None:
        truth, source = exact_truth(family, data), "exact moments"
    else:
        truth, var = np.asarray(data.mu_T, np.float64), var + mcse**2
        source = "Monte-Carlo targets (their MC variance added; no exact moments exist)"
    return {"truth": source, **calibration_metrics(np.asarray(mean), var, truth, mcse,
                                                   list(family.flat_names))}


def _template(hyperparams: dict) -> TrainedET:
    net = build(hyperparams["architecture"], hyperparams["eta_dim"], hyperparams["network"],
                jax.random.key(0))
    return TrainedET.wrap(net)


def load_run(run_dir: str | os.PathLike) -> tuple[TrainedET, dict[str, Any]]:
    """The trained model of a run folder and its header hyperparameters."""
    path = Path(run_dir) / "model.eqx"
    if not path.is_file():
        raise ValueError(f"run folder {str(run_dir)!r} has no model.eqx (not a training run)")
    hyperparams = load_header(path)["hyperparams"]
    with jax.enable_x64(False):  # networks are float32, also for a caller in float64
        return load_model(path, _template(hyperparams)), hyperparams


def _write_history(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    _write_text(path, buffer.getvalue())


def train_run(config: str | os.PathLike | dict, *, data: str | None = None,
              out: str | os.PathLike | None = None, force: bool = False,
              progress: bool = True) -> Path:
    """Train the network that `config` describes and write the run folder `out`:
    model.eqx, metrics.json, history.csv, learning_curves.png, calibration.png."""
    cfg = load_train_config(config)
    source = data or cfg["data"]
    if source is None:
        raise ValueError("config key 'data' is missing; set it or pass --data PATH")
    name = Path(config).stem if not isinstance(config, dict) else cfg["architecture"]
    out = Path(out or Path("runs") / f"{name}-{Path(source).stem}")
    if (out / "model.eqx").exists() and not force:
        raise ValueError(f"--out: {out} already holds a run; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    dataset = _dataset(str(source), out)
    family = build_family(dataset.metadata["family"])
    train_set, val_set, test_set = split_dataset(dataset, tuple(cfg["split"]), cfg["seed"])
    key_net, key_train, key_pred = jax.random.split(jax.random.key(cfg["seed"]), 3)
    net = build(cfg["architecture"], family.eta_dim, cfg["network"], key_net)
    model = TrainedET.wrap(net.standardize(train_set.eta, train_set.mu_T),
                           cfg["likelihood"]["init_misfit"])
    floor = cfg["likelihood"]["noise_floor"]
    start = time.perf_counter()
    model, history = train(model, make_targets(train_set, model, floor),
                           make_targets(val_set, model, floor), cfg, key=key_train,
                           progress=progress)
    seconds = time.perf_counter() - start
    num_samples = cfg["predictive"]["num_samples"]
    model = recalibrate(model, val_set, key_pred, num_samples)
    mean, cov = predict(model, val_set.eta, key_pred, num_samples)
    val_z2 = mean_z2(np.asarray(mean), np.diagonal(np.asarray(cov), axis1=1, axis2=2),
                     val_set.mu_T, np.diagonal(mc_noise(val_set), axis1=1, axis2=2))
    hyperparams = {
        "architecture": cfg["architecture"], "eta_dim": family.eta_dim,
        "network": cfg["network"], "family": dataset.metadata["family"],
        "stat_names": list(family.flat_names),
        "training_region": {"eta_min": train_set.eta.min(0).tolist(),
                            "eta_max": train_set.eta.max(0).tolist()},
        "data": str(source), "data_method": dataset.metadata.get("method"),
    }
    save_model(out / "model.eqx", model, **hyperparams)
    metrics = {
        "architecture": cfg["architecture"], "family": dataset.metadata["family"],
        "data": str(source), "num_train": len(train_set), "num_validation": len(val_set),
        "parameters": get_parameter_count(model.net),
        "training_seconds": seconds, "epochs": len(history),
        "calibration_scale": float(model.calibration),
        "validation_mean_z2": val_z2,
        "test": evaluate(model, test_set, family, key_pred, num_samples),
        "config": cfg,
    }
    _write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    _write_history(out / "history.csv", history)
    plot_learning_curves(history, out / "learning_curves.png")
    plot_calibration(metrics["test"], out / "calibration.png",
                     f"{cfg['architecture']} on {family.name}: held-out eta vs exact moments")
    return out


def evaluate_run(run_dir: str | os.PathLike, data: str, *, num_samples: int = 64,
                 seed: int = 0) -> tuple[dict[str, Any], Path]:
    """Metrics of a run's model on the dataset `data`, written to
    RUN_DIR/evaluation-<data stem>.json with its calibration figure beside it."""
    model, hyperparams = load_run(run_dir)
    dataset = load_dataset(data)
    family = build_family(hyperparams["family"])
    if dataset.eta.shape[1] != family.eta_dim:
        raise ValueError(f"--data: {data} has eta of dimension {dataset.eta.shape[1]}; the run "
                         f"was trained for {family.name} (dimension {family.eta_dim})")
    rows = np.flatnonzero(dataset.flags == 0)
    metrics = evaluate(model, dataset.take(rows), family, jax.random.key(seed), num_samples)
    metrics["data"] = str(data)
    stem = Path(data).stem
    path = Path(run_dir) / f"evaluation-{stem}.json"
    _write_text(path, json.dumps(metrics, indent=2))
    plot_calibration(metrics, Path(run_dir) / f"calibration-{stem}.png",
                     f"{hyperparams['architecture']} on {family.name}: {stem}")
    return metrics, path
