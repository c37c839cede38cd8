"""Training ET networks: MAP then VI, predictive uncertainty, recalibration, calibration."""

from ._active import select_eta, spread_score
from ._calibration import fit_calibration, fit_tail, recalibrate
from ._config import (
    ActiveSettings,
    CalibrationSettings,
    DrawSettings,
    LikelihoodSettings,
    StageSettings,
    TrainSettings,
    load_train_config,
)
from ._metrics import calibration_metrics
from ._model import SpreadCalibration, TailScale, TrainedET, stage_filter
from ._objective import Targets, make_targets, mc_noise, objective
from ._predictive import Predictive, function_draws, predict
from ._run import (
    TrainedRun,
    evaluate,
    evaluate_run,
    exact_truth,
    extend_run,
    load_run,
    train_run,
)
from ._trainer import train, validation_nll

__all__ = [
    "ActiveSettings", "CalibrationSettings", "DrawSettings", "LikelihoodSettings",
    "Predictive", "SpreadCalibration", "StageSettings", "TailScale", "Targets", "TrainSettings",
    "TrainedET", "TrainedRun", "calibration_metrics", "evaluate", "evaluate_run", "exact_truth",
    "extend_run", "fit_calibration", "fit_tail", "function_draws", "load_run",
    "load_train_config", "make_targets", "mc_noise", "objective", "predict", "recalibrate",
    "select_eta", "spread_score", "stage_filter", "train", "train_run", "validation_nll",
]
