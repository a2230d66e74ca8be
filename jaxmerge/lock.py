"""`dir_lock(path)`: one jaxmerge process at a time per output directory, with stale locks detected.

The lock is a file beside the directory, `.NAME.lock` (so it can be taken before the directory exists and never
makes it non-empty), holding its holder's host, pid, purpose and start time. It is held with `flock`, which the
kernel drops when the holder dies however it dies (SIGKILL, a lost machine on a local disk): a lock file left by
a dead process is simply taken over, and reported as `LockInfo.stale`. Where the file system has no flock
(some NFS set-ups), the recorded pid decides: a holder on this host that no longer runs is stale; one on
another host is taken to be alive. A second process is refused with one line naming the holder.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Iterator, NamedTuple

from jaxmerge.errors import JaxmergeError
from jaxmerge.owner import identity, writer_alive

ATTEMPTS = 5


class LockInfo(NamedTuple):
    path: Path          # the lock file
    stale: dict | None  # the record of a dead holder whose lock was taken over, if any


def lock_path(directory: str | os.PathLike) -> Path:
    directory = Path(directory).absolute()
    return directory.parent / f".{directory.name}.lock"


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, purpose: str = "run") -> Iterator[LockInfo]:
    """Hold `directory`'s lock for the block; JaxmergeError naming the holder if another process holds it."""
    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, stale = _acquire(path, Path(directory), purpose)
    try:
        yield LockInfo(path, stale)
    finally:
        _release(path, fd)


def _acquire(path: Path, directory: Path, purpose: str) -> tuple[int, dict | None]:
    for _ in range(ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        previous = _read(fd)
        if not _lock(fd, previous):
            os.close(fd)
            raise JaxmergeError(f"expected no other jaxmerge process using {directory}, found {_holder(previous)} "
                                f"(lock {path})")
        if _same_file(fd, path):  # not unlinked by a holder releasing it just now
            try:
                _write(fd, {**identity(), "purpose": purpose, "since": time.strftime("%Y-%m-%d %H:%M:%S")})
            except OSError:  # e.g. a full disk: the flock holds regardless; the command meets the fault itself
                pass
            return fd, previous or None
        os.close(fd)
    raise JaxmergeError(f"expected to take the lock {path}, found it changing hands {ATTEMPTS} times in a row")


def _lock(fd: int, previous: dict) -> bool:
    """flock(LOCK_EX | LOCK_NB); where flock is unsupported, the recorded holder must be dead (or absent)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    return not previous or not writer_alive(str(previous.get("host")), int(previous.get("pid", 0)))


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read(fd: int) -> dict:
    """The holder record in the lock file ({} if empty or unreadable: a holder that died while writing it)."""
    raw = os.pread(fd, 4096, 0)
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write(fd: int, record: dict) -> None:
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _holder(record: dict) -> str:
    if not record:
        return "another process holding it"
    return (f"a jaxmerge {record.get('purpose', 'process')} (pid {record.get('pid')} on {record.get('host')}, "
            f"since {record.get('since')}) holding it")


def _release(path: Path, fd: int) -> None:
    """Unlink while still holding the lock, then close (a waiter that opened the old file sees it is gone)."""
    try:
        if _same_file(fd, path):
            path.unlink()
    finally:
        os.close(fd)
