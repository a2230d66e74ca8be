"""Scaling curves of the generation step: time vs population size, vs model size, vs number of sources.

Every point is a fresh world and a fresh compiled step (the engine's `setup`, dare_ties, per-model weight and
density, CMA_ES), timed over warm generations after the first; points shared by two curves are measured once.
The largest model on the size curve is what a shared 2-core CPU affords in minutes (~90M parameters); the
curve's slope is what to extrapolate from. Plots go next to the table as PNG.

Run: python -m benchmarks.scaling [--quick] [--out DIR]
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.common import Timing, module_main, result

# (hidden, layers, vocab) of each model size; population and sources of each curve
SIZES = {"tiny": (64, 2, 256), "4M": (256, 4, 2048), "30M": (512, 8, 8192), "90M": (768, 12, 8192)}
CURVES = {
    False: {"population": ("4M", 3, [4, 8, 16, 32, 64]), "model size": (4, 3, ["tiny", "4M", "30M", "90M"]),
            "sources": ("4M", 8, [2, 3, 4, 6])},
    True: {"population": ("tiny", 3, [4]), "model size": (4, 3, ["tiny"]), "sources": ("tiny", 4, [3])},  # 1 compile
}
ITEMS, GENERATIONS = 16, 3


def point(population: int, size: str, sources: int, generations: int) -> tuple[Timing, int]:
    """Step timing and parameter count of one (population, model size, sources) point."""
    import jax

    from benchmarks.evolve_throughput import problem_for, run_generations
    from benchmarks.world import build_world
    hidden, layers, vocab = SIZES[size]
    world = build_world(hidden, layers, vocab, sources=sources, items=ITEMS)
    n_params = sum(x.size for x in jax.tree.leaves(world.base))
    _, timing, _ = run_generations(problem_for(world, "dare_ties", population), generations)
    return timing, n_params


def curve_points(name: str, spec: tuple, measured: dict) -> list[tuple]:
    """[(x, population, size, sources)] of a curve; `measured` caches points by (population, size, sources)."""
    if name == "population":
        size, sources, xs = spec
        keys = [(x, size, sources) for x in xs]
    elif name == "model size":
        population, sources, xs = spec
        keys = [(population, x, sources) for x in xs]
    else:
        size, population, xs = spec
        keys = [(population, size, x) for x in xs]
    out = []
    for key in keys:
        if key not in measured:
            measured[key] = point(*key, GENERATIONS)
        x = {"population": key[0], "model size": measured[key][1], "sources": key[2]}[name]
        out.append((x, key, *measured[key]))
    return out


def plot(name: str, rows: list[tuple], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(xs, [r[2].median for r in rows], "o-", label="step (median)")
    ax.plot(xs, [r[2].median / r[1][0] for r in rows], "s--", label="per candidate")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel({"model size": "parameters"}.get(name, name))
    ax.set_ylabel("seconds")
    ax.set_title(f"generation step vs {name}")
    ax.legend()
    fig.tight_layout()
    path = out / f"scaling_{name.replace(' ', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def measure(quick: bool = False, out: Path | None = None) -> tuple[list[dict], str]:
    out = Path(out or ".")
    measured: dict = {}
    results, lines, reported = [], [], set()
    for name, spec in CURVES[quick].items():
        rows = curve_points(name, spec, measured)
        image = plot(name, rows, out)
        lines.append(f"\n**vs {name}** (![{name}]({image.name}))\n\n| {name} | population | params | sources | "
                     "step time | per candidate |\n|---|---|---|---|---|---|")
        for x, (population, size, sources), timing, n_params in rows:
            lines.append(f"| {x:,} | {population} | {n_params / 1e6:.1f}M | {sources} | {timing.text()} | "
                         f"{timing.median / population * 1e3:.1f} ms |")
            if (population, size, sources) in reported:  # a point shared by two curves is one row
                continue
            reported.add((population, size, sources))
            results.append(result(f"scaling: step time, population {population}, {n_params / 1e6:.1f}M params, "
                                  f"{sources} sources", timing.median, "s", noise=timing.noise,
                                  note=f"curve: {name}"))
        if len(rows) > 1:
            growth = rows[-1][2].median / rows[0][2].median
            lines.append(f"\nFrom the first to the last point the {name} grows {rows[-1][0] / rows[0][0]:.0f}x "
                         f"and the step time {growth:.1f}x.")
    head = (f"dare_ties, CMA_ES, {ITEMS} loglik items per candidate, medians of {GENERATIONS} warm generations; "
            "each point its own compiled step.")
    return results, head + "\n" + "\n".join(lines)


if __name__ == "__main__":
    module_main(measure, __doc__)
