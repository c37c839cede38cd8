"""The one run-folder layer: atomic files, whole folders, output checks before any work.

- A file is written to a temporary name created exclusively (O_EXCL, so no planted file
  or symlink is followed) in its own folder, then renamed over the target; it gets the
  permissions the umask allows, as any file the user makes.
- A folder (a training run, a CAVI answer, a pipeline report) is built in a staging folder
  beside it, ``.NAME.partial``, and renamed into place whole when done; with `force`, the
  old folder is moved aside first and removed after, so a reader sees the old folder, no
  folder, or the new one, never a mix. One process at a time writes a given folder: it
  holds a lock on ``.NAME.lock`` (flock: released by the kernel however the process
  ends); a second run into it stops at once. A killed run leaves its staging folder,
  marked with its config's fingerprint: the next run of the same config reuses it
  (resumable generation inside it continues); a run of another config refuses it, or
  with `force` discards it.
- `force` replaces only a regular file, an empty folder or a folder bayes_et wrote (it
  carries the marker file ``.bayes_et.json``); never a special file, a link, or a folder
  holding an input of the same command.
- User strings that become file names (factor names) follow one rule, `check_name`.
- Output paths are checked before any computation starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
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


NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
NAME_RULE = ("1 to 64 letters, digits, '_', '.' or '-', not starting with '.' or '-'")
MARKER = ".bayes_et.json"  # in every folder bayes_et writes: what made it, from which config


def check_name(what: str, name: object) -> str:
    """A user string that becomes part of a file name: `NAME_RULE`, else a ValueError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = json.dumps(name) if isinstance(name, str) else type(name).__name__
        raise ValueError(f"{what}: {shown[:80]} cannot name a file; allowed: {NAME_RULE}")
    return name


def _same_or_inside(path: Path, inputs) -> Path | None:
    """The first input that is `path` or lies inside it (resolved), else None."""
    target = path.resolve()
    for item in inputs or ():
        item = Path(item).resolve()
        if item == target or target in item.parents:
            return item
    return None


def check_output_file(path: str | os.PathLike, *, force: bool, what: str = "--out",
                      inputs=()) -> Path:
    """`path` is free to write, or with `force` a regular file that is none of `inputs`;
    its folder is writable."""
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{what}: {str(path)!r} is not a file path")
    if path.is_symlink() or path.is_dir():
        raise ValueError(f"{what}: {path} is a folder or a link; allowed: a file path")
    if path.exists():
        if not force:
            raise ValueError(f"{what}: {path} exists; pass --force to replace it")
        if not stat.S_ISREG(path.stat().st_mode):
            raise ValueError(f"{what}: {path} is a special file (not a regular file); "
                             "--force replaces regular files only")
        if _same_or_inside(path, inputs):
            raise ValueError(f"{what}: {path} is an input of this command; choose another")
    _writable_parent(path, what)
    return path


def check_output_folder(path: str | os.PathLike, *, force: bool, what: str = "--out",
                        inputs=()) -> Path:
    """`path` is a folder that does not exist yet or is empty, or with `force` a folder
    bayes_et wrote that holds none of `inputs`; in a writable place."""
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{what}: {str(path)!r} is not a folder to write whole; name a "
                         "new folder")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{what}: {path} is a file or a link; allowed: a folder path")
    clash = _same_or_inside(path, inputs)
    if clash is not None:
        raise ValueError(f"{what}: {path} holds {clash}, an input of this command; choose "
                         "another folder")
    if path.exists() and any(path.iterdir()):
        if not force:
            raise ValueError(f"{what}: {path} exists and is not empty; pass --force to "
                             "replace it")
        if not (path / MARKER).is_file():
            raise ValueError(f"{what}: {path} was not written by bayes_et; --force replaces "
                             "only folders bayes_et wrote; remove it yourself")
    _writable_parent(path / "x", what)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (exclusive temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def carry(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """A copy of `source` at `target`, atomically (a run folder keeps the rows it read: a
    copy, not a link, so a later change to the source in place never reaches the run)."""
    source, target = Path(source), Path(target)
    if target.exists() and os.path.samefile(source, target):
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def staging_folder(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def fingerprint(record: object) -> str:
    """A config's fingerprint: the hash of its canonical JSON."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def exclusive(final: Path) -> Iterator[None]:
    """Hold the lock of output `final` (.NAME.lock beside it) for the block, or a
    ValueError at once: one bayes_et process at a time writes a given output."""
    path = final.parent / f".{final.name}.lock"
    _writable_parent(final, "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"--out: {final} is being written by another bayes-et run; wait "
                             "for it or choose another --out") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed that file as we opened it: take the new one
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # removed while held: a later opener sees a new file
        os.close(fd)


def drop_half_written(path: Path) -> None:
    """Where `path` is absent, the temporary files of its atomic write that a kill left
    (their exclusive names are ours: `write_bytes`)."""
    if path.parent.is_dir() and not path.exists():
        for half in path.parent.glob(f".{path.name}.*.tmp"):
            half.unlink()


def _prepare_staging(staging: Path, print_: str, force: bool) -> None:
    """A staging folder of the run whose config has fingerprint `print_`: a killed run's of
    the same config is reused, another config's refused (discarded with `force`)."""
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise ValueError(f"--out: {staging} is in the way (a file or a link); remove it")
    drop_half_written(staging / MARKER)
    if staging.is_dir() and any(staging.iterdir()):
        try:
            previous = json.loads((staging / MARKER).read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            raise ValueError(f"--out: {staging} is in the way and was not made by bayes_et; "
                             "remove it") from None
        if previous != print_:
            if not force:
                raise ValueError(f"--out: {staging} holds a killed run of another config; "
                                 "pass --force to discard it")
            shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    write_text(staging / MARKER, json.dumps({"fingerprint": print_}))


@contextlib.contextmanager
def run_folder(final: str | os.PathLike, *, force: bool, config: object = None,
               inputs=()) -> Iterator[Path]:
    """Build a folder whole: yields the staging folder to write into; on success it
    replaces `final` (which must be absent or empty unless `force`). `config`: what the
    run was asked (its fingerprint marks the staging folder); `inputs`: the paths the
    command reads, which `final` may not hold. On an error the staging folder stays for
    the next run of the same config to reuse."""
    final = check_output_folder(final, force=force, inputs=inputs)
    with exclusive(final):
        staging = staging_folder(final)
        _prepare_staging(staging, fingerprint(config), force)
        yield staging
        for stale in staging.glob(".*.lock"):  # a killed run's inner locks: nobody holds them
            stale.unlink()
        # the lock keeps bayes_et out; anything else that made `final` meanwhile is checked
        check_output_folder(final, force=force, inputs=inputs)
        if final.exists():  # force (or empty): move the old one aside, then drop it
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.",
                                        suffix=".old"))
            os.replace(final, old / "x")
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)


__all__ = ["carry", "check_name", "check_output_file", "check_output_folder",
           "drop_half_written", "exclusive",
           "fingerprint", "run_folder", "save_figure", "write_bytes", "write_json", "write_npz",
           "write_text"]
