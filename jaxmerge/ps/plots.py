"""The PS winner's genes as pictures: a heatmap of each evolved gene per model x layer group."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmerge.evolve.plots import pyplot


def plot_genes(directory: Path, genome, genes: dict, names) -> None:
    """A heatmap of each evolved gene per model x layer group (the PS winner)."""
    directory.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    for gene in genome.genes:
        _heatmap(plt, directory / f"genes_{gene.name}.png", gene, np.asarray(genes[gene.name]), names)


def _heatmap(plt, path: Path, gene, values: np.ndarray, names) -> None:
    """Rows: models (or one row for a shared gene); columns: layer group x parameter group."""
    table = values.reshape(values.shape[0], -1) if gene.per_model else values.reshape(1, -1)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * table.shape[1] + 2), 0.6 * table.shape[0] + 1.5))
    image = ax.imshow(table, aspect="auto", cmap="viridis", vmin=gene.lo, vmax=gene.hi)
    ax.set_yticks(range(table.shape[0]), [Path(n).name for n in names] if gene.per_model else ["shared"])
    ax.set_xlabel("layer group x parameter group")
    ax.set_title(f"evolved {gene.name}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
