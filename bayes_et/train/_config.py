"""Training configs (`bayes-et train CONFIG.yaml`): TrainSettings from YAML or a dict."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from bayes_et.et import ARCHITECTURES
from bayes_et.settings import (
    SEED_MAX,
    boolean,
    choice,
    fail,
    integer,
    list_of,
    mapping,
    nested,
    number,
    optional,
    parse,
    read_config,
    setting,
    text,
)


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """One training stage: map (means), vi (widths) or joint."""

    name: str = setting(check=choice("map", "vi", "joint"))
    epochs: int = setting(check=integer(1, 10**7))
    lr: float = setting(3e-3, number(0.0, 10.0, low_open=True))
    warmup: float = setting(0.05, number(0.0, 1.0))
    patience: int = setting(50, integer(1, 10**7))
    num_mc: int = setting(1, integer(1, 1024))
    average: float = setting(0.0, number(0.0, 1.0, high_open=True))
    """Per-epoch decay of an exponential moving average of the trained weights (0: none);
    the average is what is validated and kept, so noise the steps fit averages out."""


@dataclasses.dataclass(frozen=True)
class LikelihoodSettings:
    noise_floor: float = setting(1e-4, number(0.0, 1e3, low_open=True))
    fisher_weight: float = setting(0.0, number(0.0))
    init_misfit: float = setting(0.1, number(0.0, 1e3, low_open=True))


@dataclasses.dataclass(frozen=True)
class DrawSettings:
    num_samples: int = setting(64, integer(2, 100_000))


def _architecture(key: str, value: Any) -> str:
    return choice(*ARCHITECTURES)(key, value)


def _split(key: str, value: Any) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    fractions = tuple(number(0.0, 1.0, low_open=True)(key, v) for v in value) if ok else ()
    if not ok or abs(sum(fractions) - 1.0) > 1e-9:
        fail(key, value, "three fractions > 0 (train, validation, test) summing to 1")
    return fractions


@dataclasses.dataclass(frozen=True)
class ActiveSettings:
    """Active learning after training: `rounds` times, score `candidates` x `num_eta`
    uniform eta of the data's box by predictive spread (design: spread) or not at all
    (design: uniform, the baseline), generate data at the `num_eta` chosen (the data's
    method) and continue training from the last weights, round r's stages at
    lr_decay^r x their lr (warm restarts of falling height: the schedule continues)."""

    rounds: int = setting(0, integer(0, 1000))
    num_eta: int = setting(100, integer(1, 10**7))
    candidates: int = setting(4, integer(1, 1000))
    design: str = setting("spread", choice("spread", "uniform"))
    lr_decay: float = setting(0.5, number(0.0, 1.0, low_open=True))


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """For MCMC data: recalibrate on `num_eta` extra eta sampled with `draws_factor` times
    the data's draws (targets precise enough to show the network's error) instead of the
    validation split; 0: the validation split."""

    num_eta: int = setting(0, integer(0, 10**6))
    draws_factor: int = setting(16, integer(1, 10**4))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """A training config (configs/train/*.yaml)."""

    architecture: str = setting(check=_architecture)
    data: str | None = setting(None, optional(text))
    network: dict = setting(check=mapping, factory=dict)
    chart: bool = setting(True, boolean)  # learn in the family's chart, where it declares one
    seed: int = setting(0, integer(0, SEED_MAX))
    split: tuple[float, float, float] = setting((0.8, 0.1, 0.1), _split)
    batch_size: int = setting(256, integer(1, 10**7))
    optimizer: str = setting("adam", choice("adam", "natural_sgd"))
    clip_norm: float = setting(1.0, number(0.0, low_open=True))
    prior_scale: float = setting(1.0, number(0.0, low_open=True))
    likelihood: LikelihoodSettings = setting(LikelihoodSettings(), nested(LikelihoodSettings))
    stages: tuple[StageSettings, ...] = setting(
        (StageSettings("map", 300), StageSettings("vi", 100, lr=1e-2)), list_of(StageSettings))
    predictive: DrawSettings = setting(DrawSettings(), nested(DrawSettings))
    validation: DrawSettings = setting(DrawSettings(8), nested(DrawSettings))
    active: ActiveSettings = setting(ActiveSettings(), nested(ActiveSettings))
    calibration: CalibrationSettings = setting(CalibrationSettings(),
                                               nested(CalibrationSettings))


def load_train_config(source: str | os.PathLike | Mapping | TrainSettings) -> TrainSettings:
    """Read (from YAML, a dict or settings) and validate a training config."""
    if isinstance(source, TrainSettings):
        return source
    return parse(TrainSettings, read_config(source))
