"""The dataset file: .npz arrays plus a JSON metadata string. No pickle; atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ARRAYS = ("eta", "mu_T", "cov_TT", "ess", "rhat", "flags")


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


def atomic_write_npz(path: str | os.PathLike, **arrays) -> Path:
    """np.savez to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_dataset(path: str | os.PathLike, dataset: Dataset) -> Path:
    """Write `dataset` atomically as .npz: its arrays plus metadata as a JSON string."""
    arrays = {name: np.asarray(getattr(dataset, name)) for name in ARRAYS}
    return atomic_write_npz(path, **arrays, metadata=np.array(json.dumps(dataset.metadata)))


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset file (no pickle is ever loaded)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_dataset: no such file {str(path)!r}")
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in (*ARRAYS, "metadata") if n not in data.files]
        if missing:
            raise ValueError(f"load_dataset: {path} lacks arrays {missing}")
        return Dataset(*(data[n] for n in ARRAYS), metadata=json.loads(str(data["metadata"])))


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


__all__ = ["Dataset", "load_dataset", "save_dataset", "split_dataset"]
