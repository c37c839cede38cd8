"""`bayes-et run`: the end-to-end pipeline on the embedded default configuration."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import yaml

KEYS = {"family", "slice"}
SLICE_KEYS = {"start", "stop", "num"}


def default_config_path() -> Path:
    return Path(str(resources.files("bayes_et") / "quickstart.yaml"))


def load_config(path: str | Path | None) -> dict:
    """Read and validate a pipeline YAML; errors name the key and what is allowed."""
    from bayes_et.expfam import FAMILIES

    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"config: {path} must hold a mapping of keys, got {type(config).__name__}")
    unknown = set(config) - KEYS
    if unknown:
        raise ValueError(f"config: unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    if config.get("family") not in FAMILIES:
        raise ValueError(f"config: family={config.get('family')!r}; allowed: {sorted(FAMILIES)}")
    line = config.get("slice") or {}
    if set(line) != SLICE_KEYS:
        raise ValueError(
            f"config: slice needs exactly the keys {sorted(SLICE_KEYS)}; got {sorted(line)}"
        )
    if not (isinstance(line["num"], int) and line["num"] >= 2):
        raise ValueError(f"config: slice.num={line['num']!r}; allowed: an int >= 2")
    return config


def run_quickstart(config_path: str | None = None) -> int:
    """Run every built stage of the pipeline and say which stages are not built yet."""
    from bayes_et.cli import PIPELINE
    from bayes_et.expfam import FAMILIES, exact_moments

    config = load_config(config_path)
    family = FAMILIES[config["family"]]()
    line = config["slice"]
    t = np.linspace(0.0, 1.0, line["num"])[:, None]
    start, stop = (np.asarray(line[k], float) for k in ("start", "stop"))
    eta = family.validate_eta(start + t * (stop - start), "slice")
    mu, cov = exact_moments(family, eta)
    mu = np.where(np.abs(mu) < 5e-5, 0.0, mu)  # print 0.0000, not -0.0000, for zero moments
    names = family.flat_names
    print(f"Exact moments of {family.name} along the configured eta slice (float64):")
    print("  " + " ".join(f"{'eta_' + n:>9s}" for n in names) + " | "
          + " ".join(f"{'E[' + n + ']':>9s}" for n in names) + " | " + f"{'sd[x]':>9s}")
    for e, m, c in zip(np.asarray(eta), np.asarray(mu), np.asarray(cov), strict=True):
        print("  " + " ".join(f"{v:9.3f}" for v in e) + " | " + " ".join(f"{v:9.4f}" for v in m)
              + " | " + f"{np.sqrt(c[0, 0]):9.4f}")
    print("\nPipeline stages:")
    for name, what, built in PIPELINE:
        print(f"  [{'built' if built else 'not built yet'}] {name}: {what}")
    return 0
