"""Model files: one JSON header line, then Equinox-serialised leaves. No pickle."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
from jaxtyping import PyTree

FORMAT = "bayes_et.model/1"


def _version() -> str:
    from bayes_et import __version__

    return __version__


def save_model(path: str | os.PathLike, model: PyTree, **hyperparams: Any) -> Path:
    """Write `model` to `path` atomically; `hyperparams` (JSON-able) go in the header."""
    path = Path(path)
    header = {"format": FORMAT, "bayes_et_version": _version(), "hyperparams": hyperparams}
    try:
        header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    except TypeError as err:
        raise ValueError(f"save_model: hyperparams must be JSON-serialisable ({err})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header_line)
            eqx.tree_serialise_leaves(f, model)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a model file."""
    with open(path, "rb") as f:
        line = f.readline()
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bayes_et model file (expected a {FORMAT} header)")
    return header


def load_model(
    path: str | os.PathLike,
    like: PyTree | None = None,
    *,
    build: Callable[..., PyTree] | None = None,
) -> PyTree:
    """Read a model written by `save_model`.

    Give a template `like` with the same structure, or `build`, called with the header's
    hyperparameters to make that template.
    """
    header = load_header(path)
    if like is None:
        if build is None:
            raise ValueError("load_model needs a template: pass like=... or build=...")
        like = build(**header["hyperparams"])
    with open(path, "rb") as f:
        f.readline()
        return eqx.tree_deserialise_leaves(f, like)
