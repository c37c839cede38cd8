"""Coordinate-ascent variational inference with exact, learned or sampled moments."""

from . import examples
from ._audit import Audit, AuditResult, AuditSettings
from ._model import Block, CAVIModel, Factor, Model, Stat, model_from_config
from ._providers import (
    PROVIDER_CONFIGS,
    ExactMoments,
    MomentFlag,
    MomentProvider,
    Moments,
    NetworkMoments,
    NetworkSettings,
    SamplingMoments,
    WithFallback,
    flag_names,
    flag_where,
    on_rows,
    provider_from_config,
)
from ._run import CAVIConfig, audit_answers, cavi_run, fallback_answers, load_cavi_config
from ._solver import CAVIResult, SolverSettings, audit_result, band_limits, run_cavi

__all__ = [
    "Audit", "AuditResult", "AuditSettings", "Block", "CAVIConfig", "CAVIModel", "CAVIResult",
    "ExactMoments", "Factor", "Model", "MomentFlag", "MomentProvider", "Moments",
    "NetworkMoments", "NetworkSettings", "PROVIDER_CONFIGS", "SamplingMoments",
    "SolverSettings", "Stat", "WithFallback", "audit_answers", "audit_result", "band_limits",
    "cavi_run", "examples", "fallback_answers", "flag_names", "flag_where", "load_cavi_config",
    "model_from_config", "on_rows", "provider_from_config", "run_cavi",
]
