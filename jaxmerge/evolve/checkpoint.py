"""Orbax checkpoints of a run: the whole `EvolveState` pytree plus a JSON record (generation, history).

Saved after every generation, synchronously and atomically (orbax writes into a temporary directory and
renames on commit), keeping the last few. A checkpoint that fails to restore (e.g. corrupted by a kill during
the write on a filesystem without atomic rename) is skipped with a warning and the previous one is used.
"""
from __future__ import annotations

import errno
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmerge.errors import EnvironmentFault

log = logging.getLogger("jaxmerge")


def manager(directory: Path, max_to_keep: int = 3):
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                           create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=("state", "record"))


def save(mgr, step: int, state: Any, record: dict) -> None:
    """Save generation `step`. A full disk or a read-only file system (which tensorstore reports as a ValueError
    carrying the OS error code) becomes an EnvironmentFault: the previous checkpoints stay, and the half-written
    one is an orbax temporary that the next manager removes, so `--resume` works once the disk is fixed."""
    import orbax.checkpoint as ocp
    try:
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               record=ocp.args.JsonSave(record)))
        mgr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - classified below, re-raised unless the machine is at fault
        fault = machine_fault(e)
        if fault is None:
            raise
        raise EnvironmentFault(f"{fault} while saving checkpoint {step} in {mgr.directory}: the earlier "
                               "checkpoints are kept; free the disk, then --resume") from None


def machine_fault(error: BaseException) -> str | None:
    """'disk full (...)' / 'read-only file system' when `error` (an OSError, or tensorstore's ValueError with
    `[os_error_code='28']`) is a fault of the machine, else None."""
    from jaxmerge.files import PHRASES, is_environment
    if isinstance(error, OSError):
        return PHRASES.get(error.errno) if is_environment(error) else None
    found = re.search(r"os_error_code='(\d+)'", str(error))
    code = int(found[1]) if found else None
    return PHRASES.get(code) if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO) else None


def restore_latest(mgr, template: Any) -> tuple[Any, dict] | None:
    """(state, record) of the newest checkpoint that restores cleanly, or None if there is none."""
    import orbax.checkpoint as ocp
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), template)
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 record=ocp.args.JsonRestore()))
            return restored.state, restored.record
        except Exception as e:  # a damaged checkpoint: fall back to the previous one, loudly
            warnings.warn(f"checkpoint {step} could not be restored ({type(e).__name__}: {e}); "
                          "falling back to the previous one", stacklevel=2)
    return None
