"""Chunked, resumable dataset generation: `bayes-et generate CONFIG.yaml`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from bayes_et._files import (
    check_output_file,
    drop_half_written,
    exclusive,
    fingerprint,
    write_text,
)
from bayes_et._versions import package_versions
from bayes_et.expfam import (
    ExponentialFamily,
    build_family,
    exact_moments,
    family_spec,
    pick_route,
    quadrature_moments,
)
from bayes_et.settings import as_dict

from ._config import DataSettings, box_arrays, load_data_config
from ._dataset import DataFlag, Dataset, load_dataset, save_dataset
from ._design import design_eta
from ._mcmc import mcmc_moments

FORMAT = "bayes_et.dataset/1"


def resolve_method(family: ExponentialFamily, method: str) -> str:
    """auto = the family's robust exact route (`pick_route`), else MCMC; a named exact
    route is checked against the family."""
    if method == "auto":
        route = pick_route(family, robust=True)
        return "mcmc" if route is None else route.name
    if method != "mcmc":
        try:
            pick_route(family, method)
        except ValueError as err:
            raise ValueError(f"config key 'method': {err}; or mcmc") from None
    return method


def moments_dataset(family: ExponentialFamily, method: str, eta: np.ndarray, ids: np.ndarray,
                    cfg: DataSettings) -> Dataset:
    """Rows of data at `eta` by `method` (closed_form, quadrature or mcmc with the
    config's sampler); `ids` (one int per eta) choose the sampler keys with the seed."""
    if method == "mcmc":
        est = mcmc_moments(family, eta, jax.random.key(cfg.seed), cfg.sampler, eta_ids=ids)
        return Dataset(eta, est.mu_T, est.cov_TT, est.ess, est.rhat, est.flags)
    mu, cov = (quadrature_moments if method == "quadrature" else exact_moments)(family, eta)
    k = family.eta_dim
    return Dataset(eta, mu, cov, np.full((len(eta), k), np.inf), np.full((len(eta), k), np.nan),
                   np.zeros(len(eta), np.int32))


def _counts(flags: np.ndarray) -> dict[str, Any]:
    return {
        "n": int(flags.size),
        "flagged": int(np.count_nonzero(flags)),
        "flagged_fraction": float(np.count_nonzero(flags) / max(flags.size, 1)),
        "flagged_rhat": int(np.count_nonzero(flags & DataFlag.RHAT)),
        "flagged_ess": int(np.count_nonzero(flags & DataFlag.ESS)),
        "flagged_nonfinite": int(np.count_nonzero(flags & DataFlag.NONFINITE)),
    }


def generate(
    config: str | Path | dict | DataSettings,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Generate the dataset that `config` describes and write it to `out` (.npz).

    Work proceeds in chunks saved under ``OUT.parts/``; after an interrupt, `resume=True`
    continues from the finished chunks and yields the same arrays as an uninterrupted run
    (every eta's sampler keys depend only on the seed and the eta's index). A finished
    `out` is never replaced without `force`; with `resume`, a finished `out` from the same
    config is returned as it is. The config and the output path are checked before any
    work, and nothing is written for a config that fails. With several hosts
    (`jax.distributed`), all compute and process 0 writes.
    """
    cfg = load_data_config(config)
    writer = jax.process_index() == 0  # with several hosts, one writes (a shared folder)
    with exclusive(Path(out)) if writer else contextlib.nullcontext():
        return _generate(cfg, config, Path(out), resume, force, progress, writer)


def _generate(cfg: DataSettings, config, out: Path, resume: bool, force: bool,
              progress: bool, writer: bool) -> Path:
    family = build_family(cfg.family)
    method = resolve_method(family, cfg.method)
    record = as_dict(cfg)
    fingerprint = _config_fingerprint(cfg)
    if resume and not force and out.is_file():
        finished = load_dataset(out)
        if finished.metadata.get("config") != record:
            raise ValueError(f"--resume: {out} is finished and was made from another config; "
                             "pass --force to replace it, or choose another --out")
        return out
    check_output_file(out, force=force,
                      inputs=[config] if isinstance(config, (str, os.PathLike)) else ())
    parts = out.with_name(out.name + ".parts")
    manifest = parts / "manifest.json"
    if parts.is_symlink() or (parts.exists() and not parts.is_dir()):
        raise ValueError(f"--out: {parts} is in the way (a file or a link); remove it")
    if parts.exists():
        drop_half_written(manifest)  # a kill between the folder and its manifest
        previous = _fingerprint(manifest)
        if previous is None and any(parts.iterdir()):
            raise ValueError(f"--out: {parts} is in the way and was not made by bayes_et "
                             "(no manifest); remove it")
        if force or previous is None:
            shutil.rmtree(parts)  # an unwanted earlier start: begin afresh
        elif not resume:
            raise ValueError(f"--out: unfinished run found in {parts}; pass --resume to "
                             "continue it or --force to start afresh")
        elif previous != fingerprint:
            raise ValueError(f"--resume: {parts} was started with a different config; pass "
                             "--force to start afresh")
    eta = design_eta(family, cfg.eta.num, design=cfg.eta.design,
                     box=box_arrays(family, cfg.eta.box), seed=cfg.seed)
    if writer and not parts.exists():
        parts.mkdir(parents=True)
        write_text(manifest, json.dumps({"fingerprint": fingerprint,
                                         "versions": package_versions()}))
    starts = range(0, len(eta), cfg.chunk_size)
    chunks, seconds = [], []
    bar = tqdm(starts, desc=f"generate {family.name} ({method})", unit="chunk",
               disable=not progress)
    for i, start in enumerate(bar):
        path = parts / f"chunk_{i:05d}.npz"
        ids = np.arange(start, min(start + cfg.chunk_size, len(eta)))
        chunk = _finished_chunk(path, eta[ids])
        if chunk is None:
            t0 = time.perf_counter()
            chunk = moments_dataset(family, method, eta[ids], ids, cfg)
            chunk = replace(chunk, metadata={"seconds": time.perf_counter() - t0,
                                             "versions": package_versions()})
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
        "config": record,
        "versions": package_versions(),
        "devices": [str(d) for d in jax.devices()],
        "counts": _counts(np.concatenate([c.flags for c in chunks])),
        "timings": {"compute_seconds": float(sum(seconds)), "chunk_seconds": seconds},
    }
    if writer:
        save_dataset(out, Dataset.concatenate(chunks, metadata))
        shutil.rmtree(parts)
    return out


def generate_into(config: str | Path | dict | DataSettings, target: Path, *,
                  progress: bool = True) -> Path:
    """The dataset of `config` at `target`, a path bayes_et owns (inside a staging
    folder): kept if finished from the same config, resumed if started, replaced if
    another config left it."""
    cfg = load_data_config(config)
    parts = target.with_name(target.name + ".parts")
    if target.is_file():
        try:
            same = load_dataset(target, check=False).metadata.get("config") == as_dict(cfg)
        except ValueError:
            same = False
        if same:
            if parts.is_dir():  # killed after the dataset was written, before this went
                shutil.rmtree(parts)
            return target
        target.unlink()
    stale = parts.is_dir() and _fingerprint(parts / "manifest.json") != _config_fingerprint(cfg)
    return generate(cfg, target, resume=True, force=stale, progress=progress)


def _config_fingerprint(cfg: DataSettings) -> str:
    return fingerprint(as_dict(cfg))


def _fingerprint(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _finished_chunk(path: Path, eta: np.ndarray) -> Dataset | None:
    """A chunk saved by an earlier run, if it is whole and for these eta (else None)."""
    if not path.is_file():
        return None
    try:
        chunk = load_dataset(path, check=False)
    except ValueError:
        return None
    same = chunk.eta.shape == eta.shape and np.array_equal(chunk.eta, eta)
    return chunk if same and "seconds" in chunk.metadata else None


__all__ = ["generate", "generate_into", "moments_dataset", "resolve_method"]
