"""Atomic outputs: write into a hidden temporary sibling, rename into place only when complete.

A crash or a kill mid-write then leaves at most a hidden `.NAME.tmp-*` (or, between the two renames of an
overwrite, `.NAME.old-*`) entry, never something that looks like a finished model or run; `--resume` sweeps
them. Every writer of a user-visible directory or file goes through here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from jaxmerge.errors import JaxmergeError


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, or a non-empty directory unless `overwrite`."""
    if target.exists() and not target.is_dir():
        raise JaxmergeError(f"expected an output directory at {target}, found a file")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise JaxmergeError(f"expected an empty or new output directory, found non-empty {target} (use --overwrite)")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it replaces `target` in one rename."""
    target = Path(target).absolute()
    check_target(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())
    except OSError as e:
        raise JaxmergeError(f"expected a writable output location for {target}, found: {e.strerror}") from None
    try:
        yield tmp
        old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
        if target.exists():  # moved aside, not deleted, until the new one is in place: no moment without either
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sweep_leftovers(directory: Path, skip: str = "checkpoints") -> list[str]:
    """Remove the hidden `.NAME.tmp-*` / `.NAME.old-*` entries a killed writer left anywhere under `directory`
    but in `skip` (orbax keeps its own temporaries there); run on --resume before anything is written again.
    Returns their paths relative to `directory`."""
    found = sorted(p for p in Path(directory).rglob(".*") if (".tmp-" in p.name or ".old-" in p.name)
                   and skip not in p.relative_to(directory).parts)
    found = [p for p in found if not any(q in p.parents for q in found)]  # a leftover dir's contents go with it
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return [str(p.relative_to(directory)) for p in found]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary sibling and `os.replace` (atomic on POSIX)."""
    path = Path(path)
    if path.is_dir():
        raise JaxmergeError(f"expected a file path for {path}, found a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as e:
        raise JaxmergeError(f"expected a writable location for {path}, found: {e.strerror}") from None
    try:
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    """The process umask (read by setting and restoring it): temp files are made private (0700/0600), but a
    finished output should carry the permissions a plain mkdir/open would have given it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
