"""Chunked, resumable dataset generation: `bayes-et generate CONFIG.yaml`."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from bayes_et._versions import package_versions
from bayes_et.expfam import ExponentialFamily, build_family, exact_moments, family_spec

from ._config import box_arrays, load_data_config
from ._dataset import Dataset, load_dataset, save_dataset
from ._design import design_eta
from ._mcmc import FLAG_ESS, FLAG_NONFINITE, FLAG_RHAT, mcmc_moments

FORMAT = "bayes_et.dataset/1"


def resolve_method(family: ExponentialFamily, method: str) -> str:
    """auto = closed form, else quadrature for one-dimensional x, else MCMC."""
    one_d = int(np.prod(family.x_shape)) == 1
    if method == "auto":
        return "closed_form" if family.has_closed_form else "quadrature" if one_d else "mcmc"
    if method == "closed_form" and not family.has_closed_form:
        raise ValueError(f"config key 'method': {family.name} has no closed form; "
                         "use quadrature (1-D x) or mcmc")
    if method == "quadrature" and not one_d:
        raise ValueError(f"config key 'method': quadrature needs 1-D x; {family.name} has "
                         f"x_shape {family.x_shape}")
    return method


def _moments(family, method, eta, ids, cfg) -> Dataset:
    if method == "mcmc":
        est = mcmc_moments(family, eta, jax.random.key(cfg["seed"]), eta_ids=ids, **cfg["sampler"])
        return Dataset(eta, est.mu_T, est.cov_TT, est.ess, est.rhat, est.flags)
    mu, cov = exact_moments(family, eta)
    k = family.eta_dim
    return Dataset(eta, mu, cov, np.full((len(eta), k), np.inf), np.full((len(eta), k), np.nan),
                   np.zeros(len(eta), np.int32))


def _counts(flags: np.ndarray) -> dict[str, Any]:
    return {
        "n": int(flags.size),
        "flagged": int(np.count_nonzero(flags)),
        "flagged_fraction": float(np.count_nonzero(flags) / max(flags.size, 1)),
        "flagged_rhat": int(np.count_nonzero(flags & FLAG_RHAT)),
        "flagged_ess": int(np.count_nonzero(flags & FLAG_ESS)),
        "flagged_nonfinite": int(np.count_nonzero(flags & FLAG_NONFINITE)),
    }


def generate(
    config: str | Path | dict,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Generate the dataset that `config` describes and write it to `out` (.npz).

    Work proceeds in chunks saved under ``OUT.parts/``; after an interrupt, `resume=True`
    continues from the finished chunks and yields the same arrays as an uninterrupted run
    (every eta's sampler keys depend only on the seed and the eta's index). With several
    hosts (`jax.distributed`), all compute and process 0 writes.
    """
    cfg = load_data_config(config)
    family = build_family(cfg["family"])
    method = resolve_method(family, cfg["method"])
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    fingerprint = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    if out.exists() and not (force or resume):
        raise ValueError(f"--out: {out} exists; pass --force to overwrite it")
    if parts.exists() and not resume:
        raise ValueError(f"--out: unfinished run found in {parts}; pass --resume to continue it "
                         "or delete that folder")
    manifest = parts / "manifest.json"
    if resume and parts.exists():
        previous = json.loads(manifest.read_text()) if manifest.exists() else {}
        previous = previous.get("fingerprint")
        if previous != fingerprint:
            raise ValueError(f"--resume: {parts} was started with a different config")
    writer = jax.process_index() == 0  # with several hosts, one writes (a shared folder)
    if writer:
        parts.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint}))
        tmp.replace(manifest)

    eta = design_eta(family, cfg["eta"]["num"], design=cfg["eta"]["design"],
                     box=box_arrays(family, cfg["eta"]["box"]), seed=cfg["seed"])
    starts = range(0, len(eta), cfg["chunk_size"])
    chunks, seconds = [], []
    bar = tqdm(starts, desc=f"generate {family.name} ({method})", unit="chunk",
               disable=not progress)
    for i, start in enumerate(bar):
        path = parts / f"chunk_{i:05d}.npz"
        if path.exists():
            chunk = load_dataset(path)
        else:
            ids = np.arange(start, min(start + cfg["chunk_size"], len(eta)))
            t0 = time.perf_counter()
            chunk = _moments(family, method, eta[ids], ids, cfg)
            chunk = replace(chunk, metadata={"seconds": time.perf_counter() - t0})
            if writer:
                save_dataset(path, chunk)
        chunks.append(chunk)
        seconds.append(chunk.metadata["seconds"])
        bar.set_postfix(flagged=int(sum(np.count_nonzero(c.flags) for c in chunks)))
    metadata = {
        "format": FORMAT,
        "family": family_spec(family),
        "stat_names": list(family.flat_names),
        "method": method,
        "config": cfg,
        "versions": package_versions(),
        "devices": [str(d) for d in jax.devices()],
        "counts": _counts(np.concatenate([c.flags for c in chunks])),
        "timings": {"compute_seconds": float(sum(seconds)), "chunk_seconds": seconds},
    }
    if writer:
        save_dataset(out, Dataset.concatenate(chunks, metadata))
        shutil.rmtree(parts)
    return out


__all__ = ["generate", "resolve_method"]
