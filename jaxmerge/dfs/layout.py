"""The DFS layout: which slots of the repeated layer layout a token passes through, and at what scale.

After Akiba et al. (arXiv 2403.13187, sec. 3.2): the layers of models A, B, ... are laid out in order (M layers in
all) and the layout is repeated r times, giving T = M*r slots; slot t holds source layer t % M. Genes are an
indicator array I [T] (slot used iff I_t > 0) and scales: either the paper's matrix W [M, M] (W[i, j] scales the
input of layer j when the previous used layer was i) or one scale per step [T + 1] ("per_slot").

The path must start with A's first layer and end with A's last, so embeddings, final norm and head (all from A)
see the stream they were trained with. Slot 0 (A's first layer) is forced on, and after the T slots comes one
fixed step, the tail: A's last layer, always used. So every r >= 1 can mix models (with r = 1 the path is
A0, any of A1.. and B.. in layout order, A_last). The initial genes switch on A's first-repetition layers except
its last (the tail supplies it), so the search starts at exactly model A. A path therefore has up to T + 1
steps; `layers()` maps each step to its row of the layer pool.

`decode` turns raw genes into per-step (included, scale) arrays with no Python branching on values: the matrix
mode's "previous used layer" is a cumulative max over used step indices, so one compile serves every candidate.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect

W_MODES = ("matrix", "per_slot")
# Initial indicator genes sit this far from the threshold 0. The engine's search scale (sigma) is ~0.1-0.3 for
# every gene: at sigma 0.2 a first-generation sample flips each slot with probability ~0.1 (0.05 at sigma 0.15);
# a margin of 1 would flip ~3e-7 and the search would only ever tune the scales. Layouts with hundreds of slots
# (two 7B models, r = 3: T = 192) flip ~20 slots per candidate at sigma 0.2 and may want a smaller dfs.sigma.
INIT_MARGIN = 0.25


class DecodedPath(NamedTuple):
    """Per step [T + 1]: used (0/1 float), scale of the stream entering it, and its row of the layer pool."""
    included: jax.Array
    scales: jax.Array
    layer: jax.Array


@dataclasses.dataclass(frozen=True)
class DFSLayout:
    """Static layout: layer counts of the models (A first), repeats r, and the scale mode. Hashable for jit."""

    layer_counts: tuple[int, ...]
    repeats: int = 3
    w_mode: str = "matrix"

    def __post_init__(self):
        counts = self.layer_counts
        expect(isinstance(counts, tuple) and len(counts) >= 1,
               f"expected a tuple of one or more model layer counts for DFS, found {counts!r}")
        expect(all(isinstance(c, int) and c >= 1 for c in counts),
               f"expected every DFS model to have at least one layer, found layer counts {counts}")
        expect(counts[0] >= 2, f"expected model A to have at least 2 layers (a DFS path starts with its first "
                               f"and ends with its last), found {counts[0]}")
        expect(isinstance(self.repeats, int) and not isinstance(self.repeats, bool) and self.repeats >= 1,
               f"expected DFS repeats r >= 1 (an integer), found {self.repeats!r}")
        expect(self.w_mode in W_MODES, f"expected DFS w_mode in {W_MODES}, found {self.w_mode!r}")

    @property
    def num_layers(self) -> int:
        """M: all source layers laid out once."""
        return sum(self.layer_counts)

    @property
    def num_slots(self) -> int:
        """T = M * r."""
        return self.num_layers * self.repeats

    @property
    def num_steps(self) -> int:
        """T slots plus the tail (A's last layer)."""
        return self.num_slots + 1

    def layers(self) -> np.ndarray:
        """Host constant [T + 1]: the pool row (layer in layout order) each step runs."""
        return np.append(np.arange(self.num_slots) % self.num_layers, self.layer_counts[0] - 1).astype(np.int32)

    def step_source(self, step: int) -> tuple[int, int]:
        """(model index, layer index within that model) of a step (host-side, for export and plots)."""
        layer = int(self.layers()[step])
        bounds = np.cumsum((0,) + self.layer_counts)
        model = int(np.searchsorted(bounds, layer, side="right") - 1)
        return model, layer - int(bounds[model])

    def gene_template(self) -> dict[str, jax.Array]:
        """Shapes (zeros) of the raw genes, the pytree evosax ravels."""
        scales = (self.num_layers, self.num_layers) if self.w_mode == "matrix" else (self.num_steps,)
        return {"indicator": jnp.zeros(self.num_slots, jnp.float32), "scales": jnp.zeros(scales, jnp.float32)}

    def initial_genes(self) -> dict[str, jax.Array]:
        """Model A: its first-repetition layers on but the last (the tail supplies it), all scales 1."""
        on = np.zeros(self.num_slots, bool)
        on[: self.layer_counts[0] - 1] = True
        template = self.gene_template()
        return {"indicator": jnp.asarray(np.where(on, INIT_MARGIN, -INIT_MARGIN), jnp.float32),
                "scales": jnp.ones_like(template["scales"])}

    def decode(self, raw: dict[str, jax.Array]) -> DecodedPath:
        """Raw genes -> the path over the T + 1 steps (slot 0 and the tail always used)."""
        used = jnp.concatenate([(raw["indicator"] > 0).at[0].set(True), jnp.ones((1,), bool)])
        layer = jnp.asarray(self.layers())
        if self.w_mode == "per_slot":
            return DecodedPath(used.astype(jnp.float32), raw["scales"].astype(jnp.float32), layer)
        steps = jnp.arange(self.num_steps)
        marks = jnp.where(used, steps, -1)
        before = jnp.concatenate([jnp.full((1,), -1), jax.lax.cummax(marks)[:-1]])  # previous used step
        scale = raw["scales"][layer[jnp.maximum(before, 0)], layer]
        return DecodedPath(used.astype(jnp.float32), jnp.where(before >= 0, scale, 1.0).astype(jnp.float32), layer)
