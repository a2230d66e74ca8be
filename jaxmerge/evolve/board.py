"""Optional TensorBoard event files of a run (`jaxmerge evolve --tensorboard`), written by tensorboardX.

Off by default, and an optional dependency (`pip install -e ".[tensorboard]"`): history.jsonl already holds
every number; this is for those who watch runs in TensorBoard. Scalars per generation under `fitness/` and
`speed/`, the baselines once under `baseline/` at step 0. Written to DIR/tensorboard by process 0.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from jaxmerge.errors import expect

SCALARS = {"best": "fitness/generation_best", "mean": "fitness/generation_mean", "std": "fitness/generation_std",
           "best_so_far": "fitness/best_so_far", "nonfinite": "fitness/nonfinite", "evals_per_s": "speed/evals_per_s"}


def require() -> None:
    """Refuse --tensorboard up front, before any loading, when tensorboardX is not installed."""
    expect(importlib.util.find_spec("tensorboardX") is not None,
           "expected tensorboardX for --tensorboard (pip install 'jaxmerge[tensorboard]'), found it not installed")


class Board:
    """A tensorboardX writer of a run's history rows and baselines; a no-op when `directory` is None."""

    def __init__(self, directory: Path | None):
        self.writer = None
        if directory is not None:
            require()
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(str(directory))

    def baselines(self, baselines: dict) -> None:
        named = {"start": baselines["start"], **baselines["sources"]}
        for i, (name, value) in enumerate(named.items()):
            if self.writer is not None and value is not None:
                tag = "baseline/start" if name == "start" else f"baseline/source_{i - 1}_{Path(name).name}"
                self.writer.add_scalar(tag, value, 0)

    def row(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, tag in SCALARS.items():
            self.writer.add_scalar(tag, row[key], row["generation"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
