"""Training configs (`bayes-et train CONFIG.yaml`): TrainSettings from YAML or a dict."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bayes_et.settings import TrainSettings, parse, read_config


def load_train_config(source: str | os.PathLike | Mapping | TrainSettings) -> TrainSettings:
    """Read (from YAML, a dict or settings) and validate a training config."""
    if isinstance(source, TrainSettings):
        return source
    return parse(TrainSettings, read_config(source))
