"""Genomes: a flat vector evosax can search, decoded into the hyper-parameter pytree a merge method takes.

Each evolved hyper-parameter (weight, density, t, ...) is one gene array. A per-model hyper-parameter has shape
[M, G, C]; a global one (shared by the models, e.g. slerp's t) has shape [G, C], where
  G = number of layer groups (1 = one value for all layers; else ceil(L / k) groups of k consecutive layers),
  C = number of parameter groups (1, or one per group of the family: embed / attn / mlp / norm, and experts
      for a mixture of experts: the router and the routed experts get their own values).
The search runs in the unit cube: raw gene x in [0, 1] (clipped) maps to lo + (hi - lo) * x. So one sigma means
the same thing for every gene whatever its bounds, and a candidate outside the bounds is the bound (the usual
practice for box-constrained CMA-ES).

`GeneSpec.hparams(raw)` broadcasts the genes onto every tensor of the model with static index arrays (gathers,
no Python branching on values): layer tensors get [M, L] (or [L]); embeddings, final norm and lm_head get the
first layer group, which is how mergekit evaluates a gradient list for them (depth t = 0), so the winner can be
written as a mergekit recipe that means exactly the same merge.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.params import leaf_group, param_shapes, spec_groups


@dataclasses.dataclass(frozen=True)
class Gene:
    """One evolved hyper-parameter: its bounds and initial value (in real units)."""
    name: str
    per_model: bool
    init: float
    lo: float
    hi: float


@dataclasses.dataclass(frozen=True)
class GeneSpec:
    """Static description of a genome over `num_models` models of one `spec` (hashable: a jit static arg)."""
    spec: ArchSpec
    num_models: int
    genes: tuple[Gene, ...]
    layers_per_group: int = 0  # 0: one layer group spanning all layers
    param_groups: bool = False
    fixed: tuple[tuple[str, float, bool], ...] = ()  # (name, value, per_model): non-evolved, broadcast like genes

    @property
    def num_layer_groups(self) -> int:
        k = self.layers_per_group
        return 1 if k <= 0 else math.ceil(self.spec.num_layers / k)

    @property
    def num_param_groups(self) -> int:
        return len(spec_groups(self.spec)) if self.param_groups else 1

    def shape(self, gene: Gene) -> tuple[int, ...]:
        cells = (self.num_layer_groups, self.num_param_groups)
        return (self.num_models, *cells) if gene.per_model else cells

    @property
    def size(self) -> int:
        return sum(int(np.prod(self.shape(g))) for g in self.genes)

    def initial_raw(self) -> jax.Array:
        """The unit-cube vector of every gene's initial value."""
        parts = [np.full(self.shape(g), (g.init - g.lo) / (g.hi - g.lo), np.float32).ravel() for g in self.genes]
        return jnp.asarray(np.concatenate(parts) if parts else np.zeros(0, np.float32))

    def decode(self, raw: jax.Array) -> dict[str, jax.Array]:
        """Flat raw vector -> {name: gene array in real units}. Pure, jittable, and the same bits eagerly and
        under jit: `lo + (hi - lo) * u` would be one fused multiply-add in a compiled step (XLA:CPU contracts
        it) but two roundings when decoded eagerly for best.json and recipe.yml, 1 ulp apart for ~1/4 of
        values; add-then-multiply cannot be contracted, so the recipe holds exactly the values that were scored."""
        out, offset = {}, 0
        for g in self.genes:
            n = int(np.prod(self.shape(g)))
            unit = jnp.clip(raw[offset:offset + n], 0.0, 1.0).reshape(self.shape(g))
            span = g.hi - g.lo
            out[g.name] = jnp.clip((unit + g.lo / span) * span, g.lo, g.hi)
            offset += n
        return out

    def hparams(self, raw: jax.Array) -> dict[str, dict]:
        """Flat raw vector -> {hparam: canonical-structured pytree of per-tensor values} for merge_params."""
        genes = self.decode(raw)
        cells = (self.num_layer_groups, self.num_param_groups)
        for name, value, per_model in self.fixed:
            genes[name] = jnp.full((self.num_models, *cells) if per_model else cells, value, jnp.float32)
        return {name: self._broadcast(cells) for name, cells in genes.items()}

    def _broadcast(self, cells: jax.Array) -> dict:
        """[..., G, C] cells -> pytree: layer leaves [..., L], global leaves [...]."""
        layer_group, group_col = self._index_maps()
        out = {}
        for leaf, shape in param_shapes(self.spec).items():
            if leaf == "layers":
                out["layers"] = {name: cells[..., layer_group, group_col[name]] for name in shape}
            else:
                out[leaf] = cells[..., 0, group_col[leaf]]
        return out

    def _index_maps(self) -> tuple[np.ndarray, dict[str, int]]:
        k = self.layers_per_group if self.layers_per_group > 0 else self.spec.num_layers
        layer_group = np.arange(self.spec.num_layers) // k
        shapes = param_shapes(self.spec)
        leaves = [*shapes["layers"], *(leaf for leaf in shapes if leaf != "layers")]
        groups = spec_groups(self.spec)
        group_col = {leaf: groups.index(leaf_group(leaf)) if self.param_groups else 0 for leaf in leaves}
        return layer_group, group_col

    def describe(self, raw) -> dict[str, list]:
        """Genes in real units as nested lists (for best.json, plots and recipes)."""
        return {name: np.asarray(value).tolist() for name, value in self.decode(jnp.asarray(raw)).items()}
