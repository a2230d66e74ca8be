"""The path forward: a token's stream through the T + 1 steps of a DFS layout, as one static-shape `lax.scan`.

DFS params are a plain pytree: A's globals ("embed", "norm", "lm_head"), the pool of every source layer stacked
[M, ...] under "pool" (canonical layer leaves), and the decoded path over its T + 1 steps: "included", "scales"
and "layer" (the pool row of each step). Step t gathers its layer from the pool (a dynamic index, never a copy
of the pool per repetition) and computes `layer(scale * h)` if included; an unused step costs nothing
(jaxmerge.model.run loops over the used steps only, or skips a decoding step's layer under `lax.cond`), and
shapes never depend on the genes, so one compile serves the whole search. `jax.vmap` over decoded paths scores
a population (there a forward runs the population's longest path; a decoding step's cond becomes a select).
The scan itself is jaxmerge.model's one driver; this module only says how a step gets its layer (a `Stack`).

The functions keep jaxmerge.model's signatures with `spec` = `path_spec(A's spec, layout, types)` (A's
architecture with one layer per step, each step with its pool row's attention type), so
`jaxmerge.model.init_cache` already allocates the right [T, ...] KV cache and generic greedy decoding / scoring
code can take these functions in place of the plain model's.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.dfs.layout import DecodedPath, DFSLayout
from jaxmerge.errors import expect
from jaxmerge.model import KVCache, Stack, run
from jaxmerge.params import Params


def pool_types(specs: Sequence[ArchSpec]) -> tuple[str, ...]:
    """The attention type of every pool row: each source's layers in layout order."""
    return tuple(t for spec in specs for t in spec.attention_types)


def path_spec(spec_a: ArchSpec, layout: DFSLayout, types: Sequence[str] | None = None) -> ArchSpec:
    """A's architecture with one layer per step, step t with the attention type of its pool row (`types`: per
    pool row, pool_types of the sources; None: A's one type, when all its layers have the same)."""
    rows = layout.layers()
    if types is None:
        expect(len(set(spec_a.attention_types)) == 1, "expected the attention type of every pool row for a model "
                                                      "A whose layers mix types, found none: pass pool_types(specs)")
        types = (spec_a.attention_types[0],) * layout.num_layers
    expect(len(types) == layout.num_layers, f"expected one attention type per pool row ({layout.num_layers}), "
                                            f"found {len(types)}")
    return spec_a.with_layers(tuple(types[int(r)] for r in np.asarray(rows)))


def with_path(pool: Params, path: DecodedPath) -> Params:
    """The path functions' params: the pool plus a decoded path, in the weights' dtype (the scale multiplies h
    in that dtype anyway)."""
    dtype = pool["embed"].dtype
    return {**pool, "included": jnp.asarray(path.included, dtype), "scales": jnp.asarray(path.scales, dtype),
            "layer": jnp.asarray(path.layer, jnp.int32)}


def path_stack(params: Params) -> Stack:
    """Step t gathers its layer from the pool and runs it on the scaled stream if used; an unused step computes
    nothing (`Stack.runs`), so a candidate costs its used steps, with static shapes and one compile. The first
    carry is typed like the path: when a population is split with shard_map, the path arrays vary per shard
    while the pool does not, and a loop carry must keep one type; a select on a path value gives the embeddings
    the path's type (XLA folds `where(p, h, h)` away)."""
    def apply(x, h, layer):
        row, scale = x
        lp = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, row, keepdims=False), params["pool"])
        return layer(lp, h * scale.astype(h.dtype))

    def stream(h):
        return jnp.where(params["included"][0] >= 0, h, h)

    return Stack((params["layer"], params["scales"]), apply, stream, params["included"] > 0)


def forward(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array | None = None,
            positions: jax.Array | None = None) -> jax.Array:
    """Logits [B, S, V] float32 of the path, as jaxmerge.model.forward."""
    return run(spec, params, path_stack(params), tokens, mask, positions)[0]


def forward_cached(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array, positions: jax.Array,
                   cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """As jaxmerge.model.forward_cached; the cache has one entry per step (unused steps' entries are never read)."""
    steps = params["included"].shape[0]
    expect(cache.k.shape[0] == steps, f"expected a KV cache with one entry per DFS step ({steps}), found "
                                      f"{cache.k.shape[0]}: build it with init_cache(path_spec(...), ...)")
    return run(spec, params, path_stack(params), tokens, mask, positions, cache, start)
