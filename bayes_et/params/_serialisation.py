"""Model files: one JSON header line, then Equinox-serialised leaves. No pickle.

The header carries a SHA-256 of the header's other fields and the leaf bytes, checked on
load: a truncated, relabelled or altered file is refused with a clear error."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
from jaxtyping import PyTree

FORMAT = "bayes_et.model/1"
HEADER_KEYS = {"format", "bayes_et_version", "hyperparams", "versions", "sha256"}


def _versions() -> dict[str, str]:
    from bayes_et._versions import package_versions  # bayes_et's utilities, not a package

    return package_versions()


def _digest(header: dict[str, Any], leaves: bytes) -> str:
    fields = {k: v for k, v in header.items() if k != "sha256"}
    text = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(text + b"\n" + leaves).hexdigest()


def save_model(path: str | os.PathLike, model: PyTree, **hyperparams: Any) -> Path:
    """Write `model` to `path` atomically; `hyperparams` (JSON-able) go in the header."""
    path = Path(path)
    versions = _versions()
    header = {"format": FORMAT, "bayes_et_version": versions["bayes-et"],
              "versions": versions, "hyperparams": hyperparams}
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    leaves = buffer.getvalue()
    try:
        header["sha256"] = _digest(header, leaves)
        header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    except TypeError as err:
        raise ValueError(f"save_model: hyperparams must be JSON-serialisable ({err})") from None
    from bayes_et._files import write_bytes

    write_bytes(path, header_line + leaves)
    return path


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file: no such file {str(path)!r}")
    data = path.read_bytes()
    line, _, leaves = data.partition(b"\n")
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bayes_et model file (expected a {FORMAT} header)")
    unknown = set(header) - HEADER_KEYS
    if unknown or "sha256" not in header or not isinstance(header.get("hyperparams"), dict):
        raise ValueError(f"{path}: model header garbled (keys {sorted(header)}; expected "
                         f"{sorted(HEADER_KEYS)} with a hyperparams mapping)")
    if _digest(header, leaves) != header["sha256"]:
        raise ValueError(f"{path}: content hash mismatch: the file is truncated or was altered "
                         "after it was written")
    return header, leaves


def load_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a model file (its content hash checked)."""
    return _read(path)[0]


def load_model(
    path: str | os.PathLike,
    like: PyTree | None = None,
    *,
    build: Callable[..., PyTree] | None = None,
) -> PyTree:
    """Read a model written by `save_model` (its content hash checked).

    Give a template `like` with the same structure, or `build`, called with the header's
    hyperparameters to make that template.
    """
    header, leaves = _read(path)
    if like is None:
        if build is None:
            raise ValueError("load_model needs a template: pass like=... or build=...")
        like = build(**header["hyperparams"])
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(leaves), like)
    except Exception as err:  # a shape or structure the template does not have
        raise ValueError(f"{path}: the weights do not fit the model its header describes "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
