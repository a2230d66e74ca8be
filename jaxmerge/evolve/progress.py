"""Watching a run: a rich progress bar on a terminal, else one plain line per generation on stderr.

The plain line (generation, best, mean, best so far, evaluations per second, ETA) is what a log file, a job
scheduler or `--no-progress` gets: a bar redrawn with carriage returns would be unreadable there.
"""
from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def line(row: dict, total: int) -> str:
    """`gen 3/20  best 0.5625  mean 0.51  best-so-far 0.58  12.3 evals/s  ETA 1m12s`"""
    left = max(0, total - row["generation"]) * row["seconds"]
    return (f"gen {row['generation']}/{total}  best {row['best']:.6g}  mean {row['mean']:.6g}  "
            f"best-so-far {row['best_so_far']:.6g}  {row['evals_per_s']:.3g} evals/s  ETA {_eta(left)}")


class Progress:
    """`bar=True` draws a bar when stderr is a terminal; otherwise (or with bar=False) each generation is a line."""

    def __init__(self, total: int, bar: bool = True, label: str = "evolving", stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.bar_on = bar and self.stream.isatty()
        self.total = total
        self.label = label

    def __enter__(self) -> "Progress":
        if self.bar_on:
            self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, info="compiling...")
        return self

    def start(self, generation: int) -> None:
        """Where the run begins: 0, or the generation a resumed run continues after."""
        if self.bar_on:
            self.bar.update(self.task, completed=generation)
        elif generation:
            print(f"resuming after generation {generation}/{self.total}", file=self.stream, flush=True)

    def update(self, row: dict) -> None:
        """A generation is done: its history row."""
        if not self.bar_on:
            print(line(row, self.total), file=self.stream, flush=True)
            return
        info = f"best {row['best_so_far']:.4f}  mean {row['mean']:.4f}  {row['evals_per_s']:.1f} evals/s"
        self.bar.update(self.task, completed=row["generation"], info=info)

    def __exit__(self, *exc) -> None:
        if self.bar_on:
            self.bar.__exit__(*exc)
