"""Validation of training configs (`bayes-et train CONFIG.yaml`): one-line errors naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from bayes_et.data._config import _fail, _int, _known, _number, read_config
from bayes_et.et import ARCHITECTURES

STAGES = ("map", "vi", "joint")
OPTIMIZERS = ("adam", "natural_sgd")
STAGE_DEFAULTS = {"lr": 3e-3, "warmup": 0.05, "patience": 50, "num_mc": 1}
DEFAULTS: dict[str, Any] = {
    "data": None,
    "network": {},
    "seed": 0,
    "split": [0.8, 0.1, 0.1],
    "batch_size": 256,
    "optimizer": "adam",
    "clip_norm": 1.0,
    "prior_scale": 1.0,
    "likelihood": {"noise_floor": 1e-4, "fisher_weight": 0.0, "init_misfit": 0.1},
    "stages": [{"name": "map", "epochs": 300}, {"name": "vi", "epochs": 100, "lr": 1e-2}],
    "predictive": {"num_samples": 64},
    "validation": {"num_samples": 8},
}
KEYS = {"architecture", *DEFAULTS}


def _section(raw: dict, name: str) -> dict:
    _known(name, raw.get(name, {}), set(DEFAULTS[name]))
    return {**DEFAULTS[name], **raw.get(name, {})}


def _stage(i: int, raw) -> dict:
    key = f"stages[{i}]"
    _known(key, raw, {"name", "epochs", *STAGE_DEFAULTS}, {"name", "epochs"})
    stage = {**STAGE_DEFAULTS, **raw}
    if stage["name"] not in STAGES:
        _fail(f"{key}.name", stage["name"], ", ".join(STAGES))
    _int(f"{key}.epochs", stage["epochs"], 1)
    _int(f"{key}.patience", stage["patience"], 1)
    _int(f"{key}.num_mc", stage["num_mc"], 1)
    _number(f"{key}.lr", stage["lr"], 0.0, np.inf)
    _number(f"{key}.warmup", stage["warmup"], 0.0, 1.0, closed=True)
    return stage


def load_train_config(source: str | Path | dict) -> dict[str, Any]:
    """Read (from YAML or a dict), validate and complete a training config."""
    raw = read_config(source)
    _known("", raw, KEYS, {"architecture"})
    cfg = {**copy.deepcopy(DEFAULTS), **raw}
    if cfg["architecture"] not in ARCHITECTURES:
        _fail("architecture", cfg["architecture"], ", ".join(ARCHITECTURES))
    if not isinstance(cfg["network"], dict):
        _fail("network", cfg["network"], "a mapping of network options")
    if cfg["data"] is not None and not isinstance(cfg["data"], str):
        _fail("data", cfg["data"], "a path to a dataset .npz or a data config .yaml")
    _int("seed", cfg["seed"], 0)
    split = cfg["split"]
    if not (isinstance(split, list) and len(split) == 3 and all(
            isinstance(f, (int, float)) and f > 0 for f in split) and np.isclose(sum(split), 1)):
        _fail("split", split, "three fractions > 0 (train, validation, test) summing to 1")
    _int("batch_size", cfg["batch_size"], 1)
    if cfg["optimizer"] not in OPTIMIZERS:
        _fail("optimizer", cfg["optimizer"], ", ".join(OPTIMIZERS))
    _number("clip_norm", cfg["clip_norm"], 0.0, np.inf)
    _number("prior_scale", cfg["prior_scale"], 0.0, np.inf)
    lik = cfg["likelihood"] = _section(raw, "likelihood")
    _number("likelihood.noise_floor", lik["noise_floor"], 0.0, np.inf)
    _number("likelihood.fisher_weight", lik["fisher_weight"], 0.0, np.inf, closed=True)
    _number("likelihood.init_misfit", lik["init_misfit"], 0.0, np.inf)
    for name in ("predictive", "validation"):
        cfg[name] = _section(raw, name)
        _int(f"{name}.num_samples", cfg[name]["num_samples"], 2)
    if not (isinstance(cfg["stages"], list) and cfg["stages"]):
        _fail("stages", cfg["stages"], "a non-empty list of {name, epochs, ...}")
    cfg["stages"] = [_stage(i, s) for i, s in enumerate(cfg["stages"])]
    return cfg
