"""The dataset file: .npz arrays plus a JSON metadata string. No pickle; atomic writes;
checked on load (shapes, types, metadata), bad rows flagged and counted, never trained on."""

from __future__ import annotations

import enum
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bayes_et._files import write_npz

ARRAYS = ("eta", "mu_T", "cov_TT", "ess", "rhat", "flags")


class DataFlag(enum.IntFlag):
    """Why a row of a dataset is left out of training (0: it passed)."""

    RHAT = 1  # R-hat above the gate after the re-runs
    ESS = 2  # effective sample size below the gate after the re-runs
    NONFINITE = 4  # the sampler produced NaN or inf
    INVALID = 8  # found on load: NaN/inf values, ess <= 0, or eta outside the family's space


@dataclass(frozen=True)
class Dataset:
    """Moments at n eta: eta (n, k), mu_T (n, k), cov_TT (n, k, k), ess (n, k) (inf for
    exact data), rhat (n, k) (NaN for exact data), flags (n,) (0 = passed the gate)."""

    eta: np.ndarray
    mu_T: np.ndarray
    cov_TT: np.ndarray
    ess: np.ndarray
    rhat: np.ndarray
    flags: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.eta)

    def take(self, index) -> Dataset:
        """The rows `index` (an index array, slice or boolean mask over n) of every array."""
        return Dataset(*(getattr(self, name)[index] for name in ARRAYS), metadata=self.metadata)

    @staticmethod
    def concatenate(parts: list[Dataset], metadata: dict | None = None) -> Dataset:
        """Rows of `parts` stacked in order (n = sum of theirs); metadata of the first."""
        arrays = [np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS]
        return Dataset(*arrays, metadata=metadata if metadata is not None else parts[0].metadata)


def save_dataset(path: str | os.PathLike, dataset: Dataset) -> Path:
    """Write `dataset` atomically as .npz: its arrays plus metadata as a JSON string."""
    arrays = {name: np.asarray(getattr(dataset, name)) for name in ARRAYS}
    return write_npz(path, **arrays, metadata=np.array(json.dumps(dataset.metadata)))


def load_dataset(path: str | os.PathLike, *, check: bool = True) -> Dataset:
    """Read a dataset file (no pickle is ever loaded). A truncated or foreign file, garbled
    metadata or arrays of inconsistent shapes are refused with a ValueError; with `check`,
    rows with NaN/inf values or ess <= 0 are flagged INVALID (and counted in
    metadata['invalid_rows']), so no split ever trains on them."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_dataset: no such file {str(path)!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"load_dataset: {path} is truncated or not an .npz file (a "
                         "bayes_et dataset is written by bayes-et generate)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in (*ARRAYS, "metadata") if n not in data.files]
            if missing:
                raise ValueError(f"load_dataset: {path} lacks arrays {missing} (not a "
                                 "bayes_et dataset)")
            arrays = {n: data[n] for n in ARRAYS}
            text = str(data["metadata"])
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"load_dataset: {path} is truncated or not an .npz file "
                         f"({type(err).__name__}: {err})") from None
    try:
        metadata = json.loads(text)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise ValueError(f"load_dataset: {path} has garbled metadata (not a JSON mapping)")
    dataset = Dataset(**_checked_shapes(path, arrays), metadata=metadata)
    return flag_invalid_rows(dataset) if check else dataset


def _checked_shapes(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    eta = arrays["eta"]
    if eta.ndim != 2 or eta.dtype.kind != "f" or eta.shape[1] == 0:
        raise ValueError(f"load_dataset: {path}: eta has shape {eta.shape} and dtype "
                         f"{eta.dtype}; allowed: floats of shape (n, k)")
    n, k = eta.shape
    expected = {"mu_T": (n, k), "cov_TT": (n, k, k), "ess": (n, k), "rhat": (n, k),
                "flags": (n,)}
    for name, shape in expected.items():
        array = arrays[name]
        kind = "iu" if name == "flags" else "f"
        if array.shape != shape or array.dtype.kind not in kind:
            raise ValueError(f"load_dataset: {path}: {name} has shape {array.shape} and dtype "
                             f"{array.dtype}; allowed: shape {shape} of "
                             f"{'integers' if name == 'flags' else 'floats'} (n = {n} eta)")
    arrays["flags"] = arrays["flags"].astype(np.int32)
    return arrays


def flag_invalid_rows(dataset: Dataset, family=None) -> Dataset:
    """Flag rows with NaN/inf in eta, mu_T or cov_TT, NaN or ess <= 0, or (given
    `family`) eta outside its natural-parameter space; counts go to
    metadata['invalid_rows']."""
    finite = (np.isfinite(dataset.eta).all(1) & np.isfinite(dataset.mu_T).all(1)
              & np.isfinite(dataset.cov_TT).all((1, 2)))
    ess_ok = ~np.isnan(dataset.ess).any(1) & (dataset.ess > 0).all(1)
    counts = {"non_finite": int(np.count_nonzero(~finite)),
              "ess_not_positive": int(np.count_nonzero(~ess_ok))}
    bad = ~finite | ~ess_ok
    if family is not None:
        eta = np.where(finite[:, None], dataset.eta, 0.0)
        valid = np.asarray(family.is_valid_eta(eta)) & finite
        counts["eta_outside_space"] = int(np.count_nonzero(finite & ~valid))
        bad |= ~valid
    flags = np.where(bad, dataset.flags | DataFlag.INVALID, dataset.flags).astype(np.int32)
    metadata = {**dataset.metadata, "invalid_rows": {**counts, "total": int(bad.sum())}}
    return Dataset(dataset.eta, dataset.mu_T, dataset.cov_TT, dataset.ess, dataset.rhat,
                   flags, metadata=metadata)


def split_dataset(
    dataset: Dataset,
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    *,
    include_flagged: bool = False,
) -> tuple[Dataset, ...]:
    """Random disjoint splits (train, validation, test by default) with a fixed seed.
    Flagged rows (failed the MCMC quality gate) are left out unless `include_flagged`."""
    fractions = tuple(float(f) for f in fractions)
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_dataset: fractions must be >= 0 and sum to 1; got {fractions}")
    rows = np.arange(len(dataset)) if include_flagged else np.flatnonzero(dataset.flags == 0)
    rows = np.random.default_rng(seed).permutation(rows)
    bounds = np.round(np.cumsum((0.0, *fractions)) * len(rows)).astype(int)
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    return tuple(dataset.take(np.sort(rows[a:b])) for a, b in pairs)


__all__ = ["DataFlag", "Dataset", "flag_invalid_rows", "load_dataset", "save_dataset",
           "split_dataset"]
