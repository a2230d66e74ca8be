"""A picture of a DFS path: which source layer each position of the exported model runs, and at what scale.

Uses matplotlib's object API (`Figure` + the Agg canvas) rather than pyplot, so drawing touches no global
backend or figure state.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def draw_path(steps: list[dict], layer_counts: tuple[int, ...], file: Path) -> None:
    """steps: path.json's "path" entries (position, model, layer, scale, cumulative_scale)."""
    fig = Figure(figsize=(max(6.0, 0.25 * len(steps) + 2), 6.0))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    offsets = [sum(layer_counts[:m]) for m in range(len(layer_counts))]
    xs = [s["position"] for s in steps]
    ys = [offsets[s["model"]] + s["layer"] for s in steps]
    top.plot(xs, ys, color="0.6", linewidth=1, zorder=1)
    for m in range(len(layer_counts)):
        mine = [(x, y) for x, y, s in zip(xs, ys, steps) if s["model"] == m]
        if mine:
            top.scatter(*zip(*mine), s=25, zorder=2, label=f"model {'ABCDEFGH'[m] if m < 8 else m}")
        top.axhline(offsets[m] - 0.5, color="0.85", linewidth=0.8)
    top.set_ylabel("source layer (models laid out in order)")
    top.set_title(f"DFS path: {len(steps)} layers")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(xs, [s["scale"] for s in steps], color="tab:blue", label="scale")
    bottom.plot(xs, [s["cumulative_scale"] for s in steps], color="tab:red", label="cumulative")
    bottom.axhline(1.0, color="0.5", linewidth=0.8)
    bottom.set_xlabel("position in the exported model")
    bottom.legend(loc="upper left", fontsize="small")
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=100, bbox_inches="tight")
