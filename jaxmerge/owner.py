"""Who is writing: this process's (host, pid), and whether a recorded writer is still alive.

Temporary outputs carry their writer in their name and run locks carry it in their file, so that a later
process can tell a dead writer's leftovers (safe to clean) from a live writer's work in progress (never
touched). A pid can only be checked on its own host: a writer on another host is taken to be alive.
"""
from __future__ import annotations

import os
import re
import socket


def host() -> str:
    """This machine's name, reduced to [A-Za-z0-9-] (at most 40 characters) so it can sit inside a file name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def identity() -> dict:
    return {"host": host(), "pid": os.getpid()}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def writer_alive(writer_host: str, pid: int) -> bool:
    """True unless the writer is known to be dead: on this host with no such process."""
    return writer_host != host() or pid_alive(pid)
