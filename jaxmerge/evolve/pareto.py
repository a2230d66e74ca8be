"""The host side of a several-objective run: the front as front.json, its hypervolume, the front plot.

front.json (rewritten with best.json every generation) lists the parents on the front (rank 0), each with its
index N (what `jaxmerge export DIR --member N` takes), its objectives as named in `search.objectives` (higher
is better; a `length:TASK` objective is the negated mean answer length in tokens, also given positive as
`tokens`), the run's weighted fitness, its unit-cube genes, genes in real units and merge key. The
hypervolume is the exact volume the front dominates above the run's fixed reference point (the worst value of
each objective in the scored initial population), computed by slicing one objective at a time: exact for any
number of objectives, fast for the fronts of a population.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxmerge.atomic import atomic_write_text


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by `points` [M, K] (maximisation) and bounded below by `ref` [K]."""
    points = np.asarray(points, np.float64)
    points = points[np.all(points > ref, axis=1)] if len(points) else points
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(points[:, 0].max() - ref[0])
    order = np.argsort(-points[:, -1], kind="stable")
    points, total = points[order], 0.0
    for i in range(len(points)):
        below = points[i + 1, -1] if i + 1 < len(points) else ref[-1]
        total += hypervolume(points[:i + 1, :-1], ref[:-1]) * (points[i, -1] - below)
    return total


def members(front: dict, names: list[str], describe) -> list[dict]:
    """front.json's members: the parents of rank 0, in parent order (their index is their position here)."""
    out = []
    for i in np.flatnonzero(np.asarray(front["front"])):
        scores = {name: float(v) for name, v in zip(names, np.asarray(front["f"])[i])}
        tokens = {n.split(":", 1)[1]: -v for n, v in scores.items() if n.startswith("length:")}
        score = float(np.asarray(front["score"])[i])
        out.append({"member": len(out), "objectives": scores, **({"tokens": tokens} if tokens else {}),
                    "fitness": score if np.isfinite(score) else None,
                    "raw": np.asarray(front["x"])[i].tolist(), "merge_key": np.asarray(front["keys"])[i].tolist(),
                    "genes": describe(np.asarray(front["x"])[i])})
    return out


def front_record(front: dict, names: list[str], describe, generation: int) -> dict:
    f = np.asarray(front["f"])[np.asarray(front["front"])]
    return {"generation": generation, "objectives": names, "reference": np.asarray(front["ref"]).tolist(),
            "hypervolume": hypervolume(f, np.asarray(front["ref"])),
            "members": members(front, names, describe)}


def write_front(out: Path, record: dict) -> None:
    atomic_write_text(out / "front.json", json.dumps(record, indent=2))


def plot_front(directory: Path, record: dict, baselines: dict) -> None:
    """The front over its first two objectives, with the start point and the sources where they were scored."""
    if len(record["objectives"]) < 2:
        return
    from jaxmerge.evolve.plots import pyplot
    directory.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    a, b = record["objectives"][:2]
    xs = [m["objectives"][a] for m in record["members"]]
    ys = [m["objectives"][b] for m in record["members"]]
    ax.scatter(xs, ys, label="front")
    for i, (name, point) in enumerate((baselines.get("objectives") or {}).items()):
        if point is not None:
            ax.scatter([point[0]], [point[1]], marker="x", color=f"C{1 + i % 9}", label=Path(name).name)
    ax.set(xlabel=a, ylabel=b, title=f"front (generation {record['generation']})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(directory / "front.png", dpi=110)
    plt.close(fig)
