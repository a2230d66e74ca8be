"""The temporaries of atomic writers: their names, who wrote them, and cleaning up after dead writers.

A writer of TARGET works in `.TARGET.tmp-HOST.PID-RANDOM` beside it (and, where two renames replace a
directory, parks the old output at `.TARGET.old-HOST.PID-RANDOM` for an instant). A killed writer leaves them
behind. They are never taken for outputs (`is_leftover`: `jaxmerge.io` refuses to load one), and the next
writer of the same target removes those of dead writers (`clean`), after first putting back an old output that
a crash between two renames left aside (`restore`). A live writer's temporaries (this host, pid running; or
another host) are never touched. Names without a writer (older jaxmerge) count as dead.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from jaxmerge.owner import host, writer_alive

NAME = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)-)?[^/]*$")


def prefix(target_name: str, kind: str = "tmp") -> str:
    """The name prefix of this process's temporary for `target_name` (tempfile adds a random suffix)."""
    return f".{target_name}.{kind}-{host()}.{os.getpid()}-"


def is_leftover(name: str) -> bool:
    """Whether a file or directory name is an atomic writer's temporary (never an output)."""
    return NAME.match(name) is not None


def dead(path: Path) -> bool:
    """A temporary whose writer is gone: recorded on this host with no such process, or unrecorded (old)."""
    match = NAME.match(path.name)
    if match is None:
        return False
    return match["pid"] is None or not writer_alive(match["host"], int(match["pid"]))


def siblings(target: Path, kind: str) -> list[Path]:
    """The `kind` ("tmp" / "old") temporaries of exactly `target` in its directory, oldest first."""
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    found = [p for p in entries if (m := NAME.match(p.name)) and m["target"] == target.name and m["kind"] == kind]
    return sorted(found, key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def remove(path: Path) -> None:
    """Delete a temporary (a directory tree or a file); a symlink itself, never what it points at."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def restore(target: Path) -> Path | None:
    """If a dead writer moved `target` aside and died before the new one was in place, move it back."""
    if os.path.lexists(target):
        return None
    parked = [p for p in siblings(target, "old") if dead(p)]
    if not parked:
        return None
    os.rename(parked[-1], target)
    return parked[-1]


def clean(target: Path) -> list[Path]:
    """Remove the temporaries that dead writers of `target` left; returns what was removed."""
    gone = [p for kind in ("tmp", "old") for p in siblings(target, kind) if dead(p)]
    for path in gone:
        remove(path)
    return gone


def parked_output(target: Path) -> Path | None:
    """An old output a crashed overwrite left aside while `target` is missing (for error messages)."""
    if os.path.lexists(target):
        return None
    parked = siblings(target, "old")
    return parked[-1] if parked else None


def sweep_leftovers(directory: Path, skip: str = "checkpoints") -> list[str]:
    """Remove the `.NAME.tmp-*` / `.NAME.old-*` entries dead writers left anywhere under `directory` but in
    `skip` (orbax keeps its own temporaries there); run on --resume before anything is written again.
    Returns their paths relative to `directory`."""
    found = sorted(p for p in Path(directory).rglob(".*") if is_leftover(p.name) and dead(p)
                   and skip not in p.relative_to(directory).parts)
    found = [p for p in found if not any(q in p.parents for q in found)]  # a leftover dir's contents go with it
    for path in found:
        remove(path)
    return [str(p.relative_to(directory)) for p in found]
