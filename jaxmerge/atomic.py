"""Atomic outputs: written into a hidden temporary sibling, moved into place whole, never over a user's data.

- Whole or not at all: a writer works in `.NAME.tmp-HOST.PID-*` (jaxmerge.leftovers) and commits in one
  rename; an overwrite swaps old and new in one system call (jaxmerge.renames.exchange), so a kill at any
  instant leaves the old output or the new one, never neither. A commit is skipped if a signal arrived
  (jaxmerge.interrupt), and the next writer of a target removes what dead writers left.
- Ours only: every directory committed here carries MARKER. `overwrite` replaces a directory only if it
  carries it (or is empty): a directory jaxmerge did not write is refused by name, never deleted.
- Symlinks: a target that is a symlink to a directory is written where it points (the link stays).
- The machine: a full disk, a read-only file system or an unwritable location is an `EnvironmentFault`
  (exit 1, one line), with nothing left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from jaxmerge import interrupt, leftovers
from jaxmerge.errors import EnvironmentFault, JaxmergeError
from jaxmerge.files import describe, is_environment
from jaxmerge.renames import exchange, rename_new

MARKER = ".jaxmerge-output"


def real_target(target: str | os.PathLike) -> Path:
    """The absolute target; a symlink is followed to the directory or file it names (a dangling one refused)."""
    path = Path(target).absolute()
    if not path.is_symlink():
        return path
    real = Path(os.path.realpath(path))
    if not real.exists():
        raise JaxmergeError(f"expected {path} to be a new path or to link to an existing one, found a dangling "
                            f"symlink to {real}")
    return real


def is_output(directory: Path) -> bool:
    """Whether jaxmerge wrote this directory (it carries MARKER as a regular file)."""
    return (directory / MARKER).is_file() and not (directory / MARKER).is_symlink()


def mark(directory: Path, kind: str = "output") -> None:
    """Put jaxmerge's marker into a directory it writes (the last file written before the commit)."""
    (directory / MARKER).write_text(json.dumps({"written_by": "jaxmerge", "kind": kind}) + "\n")


def check_writable(target: Path) -> None:
    """The nearest existing ancestor of `target` must be a directory this process may create entries in."""
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise JaxmergeError(f"expected a directory to hold {target}, found a file at {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        readonly = os.statvfs(parent).f_flag & os.ST_RDONLY
        raise EnvironmentFault(f"expected a writable location for {target}, found {parent} "
                               + ("on a read-only file system" if readonly else "not writable (permission denied)"))


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, a non-empty directory unless `overwrite`, a non-empty directory
    jaxmerge did not write even with `overwrite`, and a location that cannot be written."""
    target = real_target(target)
    if target.exists() and not target.is_dir():
        raise JaxmergeError(f"expected an output directory at {target}, found a file")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise JaxmergeError(f"expected an empty or new output directory, found non-empty {target} "
                                "(use --overwrite)")
        if not is_output(target):
            raise JaxmergeError(f"expected {target} to be an output of jaxmerge (it would hold {MARKER}) to "
                                "replace it, found a directory jaxmerge did not write: not touching it")
    check_writable(target)


def check_file_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """For a file output (eval --out): refuse a directory, an existing file unless `overwrite`, an unwritable
    location. Returns the path to write (a symlink's target)."""
    path = real_target(path)
    if path.is_dir():
        raise JaxmergeError(f"expected a file path for {path}, found a directory")
    if path.exists() and not overwrite:
        raise JaxmergeError(f"expected a new output file, found existing {path} (use --overwrite to replace it)")
    check_writable(path)
    return path


@contextlib.contextmanager
def environment_faults(target: Path, *outputs: Path) -> Iterator[None]:
    """Turn a full disk / read-only file system / I/O error while writing `target`, or a permission error on
    `target`, its parents or `outputs` (the temporary), into an EnvironmentFault; errors about inputs pass."""
    try:
        yield
    except OSError as e:
        if not (is_environment(e) or _denied_on(e, target, outputs)):
            raise
        raise EnvironmentFault(f"{describe(e)} while writing {target}: nothing was written (the previous "
                               "output, if any, is unchanged)") from None


def _denied_on(error: OSError, target: Path, outputs: tuple[Path, ...]) -> bool:
    """A permission error about the output side: `target`, one of its parents, or inside `outputs`."""
    if not isinstance(error, PermissionError) or error.filename is None:
        return False
    path = Path(os.fsdecode(error.filename)).absolute()
    return path == target or path in target.parents or any(path == o or o in path.parents for o in outputs)


def _recover(target: Path) -> None:
    """Undo what dead writers of `target` left: an old output parked aside is put back, temporaries removed."""
    with environment_faults(target):
        leftovers.restore(target)
        leftovers.clean(target)


def _tmp_dir(target: Path) -> Path:
    with environment_faults(target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=leftovers.prefix(target.name), dir=target.parent))
        except PermissionError as e:  # mkdtemp names no file: say where
            raise EnvironmentFault(f"expected a writable location for {target}, found: {describe(e)}") from None
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _commit_dir(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` to `target`: swapped with an existing output in one step where possible."""
    interrupt.check()  # a Ctrl-C that something swallowed still stops the commit
    with interrupt.deferred():
        if not target.exists():
            rename_new(tmp, target)
            return
        if exchange(tmp, target):  # tmp now holds the old output
            leftovers.remove(tmp)
            return
        parked = Path(tempfile.mkdtemp(prefix=leftovers.prefix(target.name, "old"), dir=target.parent))
        os.replace(target, parked)  # onto the empty dir just made: a crash after this is undone by restore()
        os.rename(tmp, target)
        leftovers.remove(parked)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False, kind: str = "output") -> Iterator[Path]:
    """Yield a temporary directory beside `target`; when the block ends without error it is marked as
    jaxmerge's and replaces `target` at once. On any error or signal nothing changes at `target`."""
    target = real_target(target)
    _recover(target)
    check_target(target, overwrite)
    tmp = _tmp_dir(target)
    try:
        with environment_faults(target, tmp):
            yield tmp
            mark(tmp, kind)
            check_target(target, overwrite)  # the target may have changed while we wrote
            _commit_dir(tmp, target)
    finally:
        leftovers.remove(tmp)


def claim_dir(directory: str | os.PathLike, kind: str) -> Path:
    """Make `directory` a jaxmerge output to fill in place (the demo's DIR): created, or empty, or already
    jaxmerge's; a directory holding anything else is refused by name."""
    directory = real_target(directory)
    if directory.exists() and not directory.is_dir():
        raise JaxmergeError(f"expected an output directory at {directory}, found a file")
    if directory.is_dir() and any(directory.iterdir()) and not is_output(directory):
        raise JaxmergeError(f"expected {directory} to be new, empty or an earlier jaxmerge {kind} (holding "
                            f"{MARKER}), found other files: not touching it (choose another --out)")
    check_writable(directory)
    with environment_faults(directory):
        directory.mkdir(parents=True, exist_ok=True)
        if not is_output(directory):
            mark(directory, kind)
    return directory


@contextlib.contextmanager
def claimed_dir(directory: str | os.PathLike, kind: str) -> Iterator[Path]:
    """`claim_dir` for a block; if the block fails and this call created the directory, it is removed again
    (everything in it was written by the block)."""
    created = not os.path.lexists(directory)
    path = claim_dir(directory, kind)
    try:
        yield path
    except BaseException:
        if created:
            leftovers.remove(path)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary sibling and `os.replace` (atomic on POSIX); replaces a file."""
    path = real_target(path)
    if path.is_dir():
        raise JaxmergeError(f"expected a file path for {path}, found a directory")
    with environment_faults(path):
        fd, tmp = _tmp_file(path)
        try:
            os.chmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            interrupt.check()
            os.replace(tmp, path)
        finally:
            leftovers.remove(Path(tmp))


def _tmp_file(path: Path) -> tuple[int, str]:
    """A private temporary file beside `path` (a dead writer's old ones removed first)."""
    try:
        leftovers.clean(path)
        return tempfile.mkstemp(prefix=leftovers.prefix(path.name), dir=path.parent)
    except FileNotFoundError:
        raise JaxmergeError(f"expected an existing directory to hold {path}, found none at {path.parent}") from None
    except PermissionError as e:
        raise EnvironmentFault(f"expected a writable location for {path}, found: {describe(e)}") from None


def _umask() -> int:
    """The process umask (read by setting and restoring it): temp files are made private (0700/0600), but a
    finished output should carry the permissions a plain mkdir/open would have given it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
