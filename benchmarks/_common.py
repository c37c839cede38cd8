"""Shared benchmark helpers: environment record, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import jax
import numpy as np

from bayes_et._files import write_text

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    packages = ("bayes-et", "jax", "jaxlib", "equinox", "optax", "blackjax", "diffrax", "numpy")
    return {
        "mode": os.environ.get("BAYES_ET_BENCH_MODE", "full"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "versions": {p: version(p) for p in packages},
    }


def best_time(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls after one warm-up (compilation) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def scaled_error(mu, cov, mu_ref, cov_ref) -> float:
    """Largest moment error relative to |reference| + its standard-deviation scale."""
    sd = np.sqrt(np.diagonal(cov_ref, axis1=-2, axis2=-1))
    e_mu = np.abs(mu - mu_ref) / (np.abs(mu_ref) + sd)
    e_cov = np.abs(cov - cov_ref) / (np.abs(cov_ref) + sd[..., :, None] * sd[..., None, :])
    return float(max(e_mu.max(), e_cov.max()))


def save(name: str, result: dict) -> Path:
    """Write results/NAME.json (with the environment) atomically and return its path."""
    return write_text(RESULTS / f"{name}.json",
                      json.dumps({"environment": environment(), **result}, indent=2))
