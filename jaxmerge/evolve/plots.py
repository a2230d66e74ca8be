"""The fitness curve of a run (every search space), with its baselines."""
from __future__ import annotations

from pathlib import Path



def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_fitness(directory: Path, history: list[dict], baselines: dict) -> None:
    """The fitness curve, with the starting point and the sources as dotted horizontal lines."""
    directory.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    gens = [row["generation"] for row in history]
    ax.plot(gens, [row["best"] for row in history], label="generation best")
    ax.plot(gens, [row["mean"] for row in history], label="generation mean")
    ax.plot(gens, [row["best_so_far"] for row in history], "--", label="best so far")
    named = {"start": baselines.get("start"), **baselines.get("sources", {})}
    for i, (name, value) in enumerate((n, v) for n, v in named.items() if v is not None):
        ax.axhline(value, ls=":", lw=1, color=f"C{3 + i % 7}", label=Path(name).name)
    ax.set(xlabel="generation", ylabel="fitness (higher is better)", title="fitness")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(directory / "fitness.png", dpi=110)
    plt.close(fig)
