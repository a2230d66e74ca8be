"""Renames that never leave a moment without an output: Linux renameat2 through ctypes, with safe fallbacks.

Replacing a directory with two renames (old aside, new in) leaves no output at all if the process dies between
them. `exchange` swaps the two directories in one system call (RENAME_EXCHANGE), so at every instant the
target is either the old output or the new one; `rename_new` moves a directory into place only if nothing is
there (RENAME_NOREPLACE), so a concurrent writer's output is never silently replaced. Where the kernel or the
file system lacks them (not Linux, NFS, FUSE, vfat), `exchange` reports False and the caller falls back to two
renames, which jaxmerge.leftovers can undo after a crash.
"""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)


def _libc_renameat2():
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc symbol (musl before 1.2, macOS): the fallbacks are used
        return None


_RENAMEAT2 = _libc_renameat2()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags); False if this kernel/file system does not support `flags`."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the entries at `a` and `b` (both must exist); False where unsupported (nothing moved)."""
    return _renameat2(a, b, RENAME_EXCHANGE)


def rename_new(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, which must not exist (FileExistsError if it does, even if created a moment ago)."""
    if _renameat2(src, dst, RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):  # fallback: a check and a rename, racy only against a concurrent writer
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)
