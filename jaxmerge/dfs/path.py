"""The path forward: a token's stream through the T + 1 steps of a DFS layout, as one static-shape `lax.scan`.

DFS params are a plain pytree: A's globals ("embed", "norm", "lm_head"), the pool of every source layer stacked
[M, ...] under "pool" (canonical layer leaves), and the decoded path over its T + 1 steps: "included", "scales"
and "layer" (the pool row of each step). Step t gathers its layer from the pool (a dynamic index, never a copy
of the pool per repetition) and computes `where(included, layer(scale * h), h)`. Every step is computed, so
shapes never depend on the genes: one compile serves the whole search, and `jax.vmap` over decoded paths
scores a population.

The functions keep jaxmerge.model's signatures with `spec` = `path_spec(A's spec, layout)` (A's architecture with
one layer per step), so `jaxmerge.model.init_cache` already allocates the right [T, ...] KV cache and generic
greedy decoding / scoring code can take these functions in place of the plain model's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmerge.arch import ArchSpec
from jaxmerge.dfs.layout import DecodedPath, DFSLayout
from jaxmerge.errors import expect
from jaxmerge.model import (KVCache, attention_inputs, attention_mask, check_length, decoder_layer,
                            embed, head, rope_tables)
from jaxmerge.params import Params


def path_spec(spec_a: ArchSpec, layout: DFSLayout) -> ArchSpec:
    """A's architecture with one layer per step: the spec the path functions (and their KV cache) take."""
    return spec_a.replace(num_layers=layout.num_steps)


def with_path(pool: Params, path: DecodedPath) -> Params:
    """The path functions' params: the pool plus a decoded path, in the weights' dtype (so a KV cache sized by
    the widest param dtype stays in the model's precision; the scale multiplies h in that dtype anyway)."""
    dtype = pool["embed"].dtype
    return {**pool, "included": jnp.asarray(path.included, dtype), "scales": jnp.asarray(path.scales, dtype),
            "layer": jnp.asarray(path.layer, jnp.int32)}


def _step(spec: ArchSpec, params: Params, h, layer, used, scale, rope, mask, kv=None, start=None):
    """One step: gather its layer from the pool, run it on the scaled stream if used, else pass h through."""
    lp = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, layer, keepdims=False), params["pool"])
    out, kv = decoder_layer(spec, lp, h * scale.astype(h.dtype), rope, mask, kv, start)
    return jnp.where(used > 0, out, h), kv


def _stream(params: Params, tokens: jax.Array) -> jax.Array:
    """A's embeddings as the scan's initial carry, typed like the path. When a population is split with shard_map,
    the path arrays vary per shard while the pool does not, and a scan carry must keep one type: a select on a
    path value gives the embeddings the path's type (XLA folds `where(p, h, h)` away)."""
    h = embed(params, tokens)
    return jnp.where(params["included"][0] >= 0, h, h)


def _steps(params: Params):
    return params["layer"], params["included"], params["scales"]


def hidden_states(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array | None = None,
                  positions: jax.Array | None = None) -> jax.Array:
    """Residual stream after the last step (before A's final norm), [B, S, D]."""
    rope, attn_mask = attention_inputs(spec, tokens, mask, positions)

    def body(h, xs):
        return _step(spec, params, h, *xs, rope, attn_mask)[0], None

    h, _ = jax.lax.scan(body, _stream(params, tokens), _steps(params))
    return h


def forward(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array | None = None,
            positions: jax.Array | None = None) -> jax.Array:
    """Logits [B, S, V] float32 of the path, as jaxmerge.model.forward."""
    return head(spec, params, hidden_states(spec, params, tokens, mask, positions))


def forward_cached(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array, positions: jax.Array,
                   cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """As jaxmerge.model.forward_cached; the cache has one entry per step (unused steps' entries are never read)."""
    steps = params["included"].shape[0]
    expect(cache.k.shape[0] == steps, f"expected a KV cache with one entry per DFS step ({steps}), found "
                                      f"{cache.k.shape[0]}: build it with init_cache(path_spec(...), ...)")
    check_length(spec, cache.valid.shape[-1])
    valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, mask.astype(jnp.int32), start, axis=1)
    rope = rope_tables(spec, positions)
    attn_mask = attention_mask(start + jnp.arange(tokens.shape[-1]), valid)

    def body(h, xs):
        layer, used, scale, k, v = xs
        h, (k, v) = _step(spec, params, h, layer, used, scale, rope, attn_mask, (k, v), start)
        return h, (k, v)

    h, (k, v) = jax.lax.scan(body, _stream(params, tokens), (*_steps(params), cache.k, cache.v))
    return head(spec, params, h), KVCache(k, v, valid)
