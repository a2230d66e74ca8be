"""The run directory: who may use it, and whether `--resume` continues the same run.

run.json records the run's identity (a hash of the config without its generation counts, and of its inputs,
see jaxmerge.modes) and the config as read. A new run needs an empty or new DIR; `--resume` needs DIR to hold
a run with the same identity (a changed config, task file or source is refused unless `allow_changed`), and a
different generation count is allowed: that is how a finished run is extended.
"""
from __future__ import annotations

import json
from pathlib import Path

from jaxmerge.atomic import atomic_write_text
from jaxmerge.errors import JaxmergeError, expect

def read_run(out: Path) -> dict:
    """run.json of DIR, refused with one line when it is missing or damaged (e.g. truncated by a kill)."""
    from jaxmerge.jsonfile import read_json_object
    expect((out / "run.json").is_file(), f"expected a run to resume in {out}, found no run.json")
    try:
        record = read_json_object(out / "run.json", "a run record (run.json)")
    except JaxmergeError as e:
        raise JaxmergeError(f"{e} (the run's record is damaged: start it again in a new directory)") from None
    expect(isinstance(record.get("identity"), dict),
           f"expected run.json in {out} to hold a run identity, found none (a run of an older jaxmerge?)")
    return record


def check(out: Path, identity: dict, resume: bool, allow_changed: bool = False) -> None:
    """Refuse an unusable DIR before anything is loaded. Writes nothing."""
    if out.exists() and not out.is_dir():
        raise JaxmergeError(f"expected an output directory at {out}, found a file")
    if resume:
        found = read_run(out)["identity"]
        changed = [k for k in sorted(set(identity) | set(found)) if identity.get(k) != found.get(k)]
        if changed and not allow_changed:
            what = ("another run (its config differs)" if changed[0] == "config"
                    else f"a run whose {changed[0]} changed since it started")
            raise JaxmergeError(f"expected {out} to hold a run of this config and inputs, found {what} "
                                "(--allow-changed-inputs continues anyway)")
        return
    held = [p.name for p in out.iterdir()] if out.is_dir() else []
    expect(not held, f"expected an empty or new --out directory, found {out} holding "
                     + ("another run (use --resume to continue it)" if "run.json" in held else "other files"))


def start(out: Path, identity: dict, config: dict, info: dict | None = None) -> None:
    """Create DIR with its run.json, only once the sources, tasks and search are known good: a refused start
    leaves nothing behind that a second try would need --resume for."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"identity": identity, "config": config, **(info or {})}
    atomic_write_text(out / "run.json", json.dumps(record, indent=2, default=str))
