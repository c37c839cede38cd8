"""The one run-folder layer: atomic files, whole folders, output checks before any work.

- A file is written to a temporary name created exclusively (O_EXCL, so no planted file
  or symlink is followed) in its own folder, then renamed over the target.
- A folder (a training run, a CAVI answer, a pipeline report) is built in a staging folder
  beside it, ``.NAME.partial``, and renamed into place whole when done; with `force`, the
  old folder is moved aside first and removed after, so a reader sees the old folder, no
  folder, or the new one, never a mix. A killed run leaves only its staging folder, which
  the next run reuses (resumable generation inside it continues).
- Output paths are checked (file vs folder, writable, exists without `force`) before any
  computation starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bayes_et._versions import package_versions


def _writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of `path` must be a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: {parent} is a file, so {path} cannot be written there")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {parent} is not writable")


def check_output_file(path: str | os.PathLike, *, force: bool, what: str = "--out") -> Path:
    """`path` is free to write (or `force`), is not a folder, and its folder is writable."""
    path = Path(path)
    if path.is_symlink() or path.is_dir():
        raise ValueError(f"{what}: {path} is a folder or a link; allowed: a file path")
    if path.exists() and not force:
        raise ValueError(f"{what}: {path} exists; pass --force to replace it")
    _writable_parent(path, what)
    return path


def check_output_folder(path: str | os.PathLike, *, force: bool, what: str = "--out") -> Path:
    """`path` is a folder that does not exist yet (or `force`), in a writable place."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{what}: {path} is a file or a link; allowed: a folder path")
    if path.exists() and any(path.iterdir()) and not force:
        raise ValueError(f"{what}: {path} exists and is not empty; pass --force to replace it")
    _writable_parent(path / "x", what)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (exclusive temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, record: dict) -> Path:
    """A JSON record with the stack's versions added under 'versions'."""
    return write_text(path, json.dumps({**record, "versions": package_versions()}, indent=2,
                                       default=float))


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def save_figure(fig, path: str | os.PathLike) -> Path:
    """A matplotlib figure as PNG, atomically, with the versions in its text chunks."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight",
                metadata={"Software": versions})
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())


def staging_folder(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


@contextlib.contextmanager
def run_folder(final: str | os.PathLike, *, force: bool) -> Iterator[Path]:
    """Build a folder whole: yields the staging folder to write into; on success it
    replaces `final` (which must be absent or empty unless `force`). On an error the
    staging folder stays for the next run to reuse; it never blocks that run."""
    final = check_output_folder(final, force=force)
    staging = staging_folder(final)
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise ValueError(f"--out: {staging} is in the way (a file or a link); remove it")
    staging.mkdir(parents=True, exist_ok=True)
    yield staging
    if final.exists():  # force (or empty): move the old one aside, then drop it
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / "x")
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


__all__ = ["check_output_file", "check_output_folder", "run_folder", "save_figure",
           "write_bytes", "write_json", "write_npz", "write_text"]
