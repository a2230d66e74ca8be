"""Atomic outputs: write into a hidden temporary sibling, rename into place only when complete.

A crash or a kill mid-write then leaves at most a `.NAME.tmp-*` directory, never something that looks like a
finished model or run. Every writer of a user-visible directory or file goes through here.
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
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
