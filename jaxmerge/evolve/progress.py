"""A rich progress bar for generations: best, mean and evaluations per second as it goes."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn


class Progress:
    def __init__(self, total: int, enabled: bool = True, label: str = "evolving"):
        self.enabled = enabled
        self.total = total
        self.label = label

    def __enter__(self) -> "Progress":
        if self.enabled:
            self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, info="compiling...")
        return self

    def advance_to(self, generation: int, row: dict | None) -> None:
        if not self.enabled:
            return
        info = "" if row is None else (f"best {row['best_so_far']:.4f}  mean {row['mean']:.4f}  "
                                       f"{row['evals_per_s']:.1f} evals/s")
        self.bar.update(self.task, completed=generation, info=info)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
