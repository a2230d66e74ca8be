"""Reading the files users hand us, bounded: regular files only, a size cap checked before reading, strict UTF-8.

A FIFO named model.safetensors or config.json blocks `open` forever, a device file never ends, and a 10 GB
"config" is read whole by `Path.read_text`. Every input file is therefore opened here: without blocking
(O_NONBLOCK, so a FIFO cannot hang the open), checked to be a regular file on the open descriptor (no race
between a check and the open), its size compared with the cap of what it claims to be, and only then read.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from pathlib import Path

from jaxmerge.errors import JaxmergeError

MB = 2**20
KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, what: str) -> int:
    """A read-only descriptor of `path` (symlinks followed), refused unless it is a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise JaxmergeError(f"expected {what} at {path}, found none") from None
    except OSError as e:
        raise JaxmergeError(f"expected {what} at {path} to be readable, found: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise JaxmergeError(f"expected {what} at {path} to be a regular file, found {kind_of(mode)}")
    return fd


def check_regular(path: str | os.PathLike, what: str) -> int:
    """The size of a regular file at `path`; anything else (missing, a FIFO, a directory) is refused."""
    fd = open_regular(path, what)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_bytes(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """The whole file, refused from its size alone when it is larger than `max_bytes`."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise JaxmergeError(f"expected {what} of at most {_size(max_bytes)} at {path}, found {_size(size)}")
        try:
            data = f.read(max_bytes + 1)  # a file that grows while read is still bounded
        except OSError as e:
            raise JaxmergeError(f"expected {what} at {path} to be readable, found: {e.strerror}") from None
    if len(data) > max_bytes:
        raise JaxmergeError(f"expected {what} of at most {_size(max_bytes)} at {path}, found more")
    return data


def read_text(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    """`read_bytes` decoded as strict UTF-8 (a byte that is not UTF-8 is named with its offset)."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JaxmergeError(f"{Path(path).name}: expected UTF-8 text, found byte {data[e.start]:#04x} at offset "
                            f"{e.start}") from None


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n} bytes"


def error_code(error: OSError) -> int | None:
    """The errno of an OS error; shutil.copytree's Error (a list of (src, dst, message)) carries it only in
    its messages ("[Errno 28] No space left on device")."""
    if error.errno is not None or not isinstance(error, shutil.Error):
        return error.errno
    found = re.search(r"\[Errno (\d+)\]", str(error.args[0] if error.args else ""))
    return int(found[1]) if found else None


def is_environment(error: OSError) -> bool:
    """A fault of the machine rather than of the input: full disk, quota, read-only file system, I/O error."""
    return error_code(error) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


PHRASES = {errno.ENOSPC: "disk full (no space left on device)", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EIO: "I/O error", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted"}


def describe(error: OSError) -> str:
    """The OS error in plain words: 'disk full (no space left on device)', 'read-only file system', ..."""
    code = error_code(error)
    return PHRASES.get(code, error.strerror or (os.strerror(code) if code else type(error).__name__))
