"""The DFS search space: which slots of the repeated layer layout a token passes through, and at what scale.

After Akiba et al. (arXiv 2403.13187, sec. 3.2): the layers of models A, B, ... are laid out in order (M layers in
all) and the layout is repeated r times, giving T = M*r slots; slot t holds source layer t % M. Genes are an
indicator array I [T] (slot used iff I_t > 0) and scales: either the paper's matrix W [M, M] (W[i, j] scales the
input of layer j when the previous used layer was i) or one scale per slot [T].

The path must start with A's first layer and end with A's last, so embeddings, final norm and head (all from A)
see the stream they were trained with. We force slot 0 (A's first layer, first repetition) on and slot
`last_slot` (A's last layer, last repetition) on, and every slot after it off. The initial genes switch on A's
first-repetition layers except its last one, which the forced final slot supplies, so the search starts at
exactly model A. With r = 1 the forced end leaves no slot for B's layers: use r >= 2 to mix models.

`decode` turns raw genes into per-slot (included, scale) arrays with no Python branching on values: the matrix
mode's "previous used layer" is a cumulative max over used slot indices, so one compile serves every candidate.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect

W_MODES = ("matrix", "slot")
INIT_ON, INIT_OFF = 1.0, -1.0  # initial indicator genes: on/off with a margin of 1 from the threshold 0


@dataclasses.dataclass(frozen=True)
class DFSSpace:
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
        expect(isinstance(self.repeats, int) and self.repeats >= 1,
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
    def last_slot(self) -> int:
        """A's last layer in the last repetition: the forced end of every path."""
        return (self.repeats - 1) * self.num_layers + self.layer_counts[0] - 1

    def slot_source(self, slot: int) -> tuple[int, int]:
        """(model index, layer index within that model) of a slot (host-side, for export and plots)."""
        layer = slot % self.num_layers
        bounds = np.cumsum((0,) + self.layer_counts)
        model = int(np.searchsorted(bounds, layer, side="right") - 1)
        return model, layer - int(bounds[model])

    def gene_template(self) -> dict[str, jax.Array]:
        """Shapes (zeros) of the raw genes, the pytree evosax ravels."""
        scales = (self.num_layers, self.num_layers) if self.w_mode == "matrix" else (self.num_slots,)
        return {"indicator": jnp.zeros(self.num_slots, jnp.float32), "scales": jnp.zeros(scales, jnp.float32)}

    def initial_genes(self) -> dict[str, jax.Array]:
        """Model A: its first-repetition layers on (its last comes from the forced end), all scales 1."""
        on = np.zeros(self.num_slots, bool)
        on[: self.layer_counts[0] - 1] = True
        template = self.gene_template()
        return {"indicator": jnp.asarray(np.where(on, INIT_ON, INIT_OFF), jnp.float32),
                "scales": jnp.ones_like(template["scales"])}

    def forced(self) -> tuple[np.ndarray, np.ndarray]:
        """Host constants: slots forced on (first and last), slots forced off (after the last)."""
        slots = np.arange(self.num_slots)
        return (slots == 0) | (slots == self.last_slot), slots > self.last_slot

    def decode(self, raw: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Raw genes -> (included [T] float 0/1, scale applied to the stream entering each slot [T])."""
        force_on, force_off = self.forced()
        used = (raw["indicator"] > 0) & ~force_off | force_on
        if self.w_mode == "slot":
            return used.astype(jnp.float32), raw["scales"].astype(jnp.float32)
        slots = jnp.arange(self.num_slots)
        marks = jnp.where(used, slots, -1)
        before = jnp.concatenate([jnp.full((1,), -1), jax.lax.cummax(marks)[:-1]])  # previous used slot
        layer = slots % self.num_layers
        scale = raw["scales"][jnp.maximum(before, 0) % self.num_layers, layer]
        return used.astype(jnp.float32), jnp.where(before >= 0, scale, 1.0).astype(jnp.float32)
