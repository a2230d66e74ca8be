"""The decoder: one scanned driver for every family and every way of getting layers (plain, DFS path, fused).

Pure functions over the canonical pytree rather than a Flax module: merging, population vmaps, layer-path
(DFS) gathers and fused merge-then-apply all need to hand the forward pass params that were computed a moment
ago, and a plain function of a dict is the simplest thing that composes with jit/vmap/scan/grad. Weights keep
the HF [out, in] layout: `x @ W.T` is one dot_general with no copy, so load and save need no transposes.

`run` is the one driver: embeddings, a `lax.scan` over the steps of a `Stack`, the final norm and head. A Stack
says where each step's layer comes from (`plain`: the stacked layers; jaxmerge.dfs.path: a gather from a pool
of source layers with a scaled, maybe skipped stream; jaxmerge.ps.fused: a layer merged just before it runs).
Each layer attends with its attention type's mask and RoPE (full / sliding window; Gemma 3's local base), picked
per step from tables built once per call.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge.arch import FULL, SLIDING, ArchSpec
from jaxmerge.layers import CacheView, attend, decoder_layer, linear, norm, rms_norm, at_slots  # noqa: F401  (API)
from jaxmerge.params import Params
from jaxmerge.rope import apply_rope, inv_frequencies, rope_tables  # noqa: F401  (part of model's API)
from jaxmerge.window import Band


class KVCache(NamedTuple):
    """Keys/values of every layer, [L, B, S_max, K, hd], and which slots hold real tokens, [B, S_max]."""
    k: jax.Array
    v: jax.Array
    valid: jax.Array


def _same(h):
    return h


class Stack(NamedTuple):
    """Where a forward's layers come from. `xs`: scan inputs, leading axis one entry per step;
    `apply(x, h, layer) -> (h, kv)`: one step on the stream h, given `layer(lp, h_in) -> (h_out, kv)` (the
    decoder layer with this step's attention and cache); `stream(h)`: the scan's first carry from the embeddings;
    `runs`: None (every step runs) or per step a traced bool: a step that does not run costs nothing (a DFS path
    pays for its used steps only; `run` says how)."""
    xs: Any
    apply: Callable
    stream: Callable = _same
    runs: jax.Array | None = None


def _passed(h, kv):
    return h, kv


_IN_FLIGHT = contextvars.ContextVar("jaxmerge_candidates_in_flight", default=1)


@contextlib.contextmanager
def candidates_in_flight(n: int):
    """While tracing inside: the traced forward is vmapped over `n` candidates (jaxmerge.evolve.mesh's
    map_candidates says so). With more than one, a DFS path decoding keeps a scan of its steps (`_stepped`)
    rather than a loop over its used steps that carries the whole cache (`_compacted`), which the vmap would
    select whole at every step. Only that choice reads it, when the forward is traced (a jitted function keeps
    the trace it first made); the default, 1, is a forward not vmapped."""
    token = _IN_FLIGHT.set(n)
    try:
        yield
    finally:
        _IN_FLIGHT.reset(token)


def typed_like(like, kv):
    """The cache entries typed like the array `like` under shard_map (varying per shard where it varies): a scan
    carry, and both branches of a `lax.cond`, must keep one type, and a layer's new keys vary with what it is
    given (the params of a population split over devices, a DFS path). A select on a value of `like` gives the
    entries its type; outside shard_map it changes nothing, and XLA folds `where(c, a, a)` away. `like` None:
    the entries as they are."""
    if like is None:
        return kv
    first = like.reshape(-1)[0]
    return jax.tree.map(lambda a: jnp.where(first == first, a, a), kv)


def _plain_step(lp, h, layer):
    return layer(lp, h)


def plain(params: Params) -> Stack:
    """A model's own layers, in order."""
    return Stack(params["layers"], _plain_step)


class Attention(NamedTuple):
    """Per attention type present (static `kinds`): RoPE tables and the mask, stacked on a leading kind axis
    (or one `Band`, when every layer slides its window over a whole sequence longer than two windows)."""
    kinds: tuple[str, ...]
    cos: jax.Array
    sin: jax.Array
    mask: jax.Array | Band

    def pick(self, kind):
        """(rope, mask) of a step's type (a traced index into `kinds`; static when there is one kind)."""
        if isinstance(self.mask, Band):
            return (self.cos[0], self.sin[0]), self.mask
        if len(self.kinds) == 1:
            return (self.cos[0], self.sin[0]), self.mask[0]
        take = lambda a: jax.lax.dynamic_index_in_dim(a, kind, keepdims=False)  # noqa: E731
        return (take(self.cos), take(self.sin)), take(self.mask)


def kinds_of(spec: ArchSpec) -> tuple[str, ...]:
    return tuple(k for k in (FULL, SLIDING) if k in spec.attention_types)


def attention_mask(query_slots: jax.Array, key_valid: jax.Array, window: int | None = None) -> jax.Array:
    """[B, Sq, Sk] bool: causal in slot order, only keys that hold real tokens, and within `window` slots
    (transformers' sliding rule: key slot > query slot - window)."""
    key_slots = jnp.arange(key_valid.shape[-1])
    causal = key_slots[None, None, :] <= query_slots[..., :, None]
    if window is not None:
        causal = causal & (key_slots[None, None, :] > query_slots[..., :, None] - window)
    return causal & key_valid[:, None, :].astype(bool)


def attention(spec: ArchSpec, positions: jax.Array, query_slots: jax.Array, key_valid: jax.Array,
              whole: bool = False) -> Attention:
    """RoPE tables and masks of a call; `whole`: the queries are the whole sequence (no cache), which lets a
    model whose every layer slides attend in bands (jaxmerge.window)."""
    kinds = kinds_of(spec)
    tables = [rope_tables(spec, positions, kind) for kind in kinds]
    if whole and kinds == (SLIDING,) and key_valid.shape[-1] > 2 * spec.sliding_window:
        return Attention(kinds, tables[0][0][None], tables[0][1][None], Band(key_valid, spec.sliding_window))
    masks = [attention_mask(query_slots, key_valid, spec.sliding_window if kind == SLIDING else None)
             for kind in kinds]
    return Attention(kinds, jnp.stack([c for c, _ in tables]), jnp.stack([s for _, s in tables]), jnp.stack(masks))


def embed(params: Params, tokens: jax.Array, spec: ArchSpec | None = None) -> jax.Array:
    """Token embeddings; Gemma scales them by sqrt(hidden_size) in their own dtype, as transformers does."""
    h = jnp.take(params["embed"], tokens, axis=0)
    if spec is not None and spec.embed_scale:
        h = h * jnp.asarray(spec.hidden_size ** 0.5, jnp.float32).astype(h.dtype)
    return h


def head(spec: ArchSpec, params: Params, h: jax.Array) -> jax.Array:
    """Final norm and LM head -> float32 logits (soft-capped where the family caps them)."""
    h = norm(spec, h, params["norm"])
    w = params["embed"] if spec.tie_word_embeddings else params["lm_head"]
    logits = linear(h, w).astype(jnp.float32)
    if spec.final_softcap is not None:
        logits = jnp.tanh(logits / spec.final_softcap) * spec.final_softcap
    return logits


def default_positions(mask: jax.Array) -> jax.Array:
    """Position ids for a left-padded batch: count of real tokens before each slot (HF generate's rule)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def layer_kinds(spec: ArchSpec) -> jax.Array | None:
    """Per step, the index of its attention type in `kinds_of(spec)` (None when every layer has one type)."""
    kinds = kinds_of(spec)
    return None if len(kinds) == 1 else jnp.asarray([kinds.index(t) for t in spec.attention_types], jnp.int32)


def run(spec: ArchSpec, globals_: Params, stack: Stack, tokens: jax.Array, mask: jax.Array | None = None,
        positions: jax.Array | None = None, cache: KVCache | None = None, start=0):
    """(logits [B, s, V] float32, new cache or None) of tokens [B, s]. Without a cache the tokens are the whole
    sequence (mask None: no padding); with one they occupy slots start..start+s-1 of it (`start` a scalar, or
    one per row [B]: rows that decode at different slots)."""
    mask = jnp.ones(tokens.shape, jnp.int32) if mask is None else mask
    positions = default_positions(mask) if positions is None else positions
    start = jnp.asarray(start, jnp.int32)
    slots = start[..., None] + jnp.arange(tokens.shape[-1])  # [s], or [B, s] per row
    valid = mask if cache is None else at_slots(cache.valid, mask.astype(jnp.int32), start)
    att = attention(spec, positions, slots, valid, whole=cache is None)

    def layer(x, kind, h, kv):
        rope, attn_mask = att.pick(kind)
        return stack.apply(x, h, lambda lp, h_in: decoder_layer(spec, lp, h_in, rope, attn_mask, kv, start))

    if stack.runs is None:
        through = _stepped if cache is None else _carried
    else:
        through = _compacted if cache is None or _IN_FLIGHT.get() == 1 else _stepped
    h, kv = through(spec, stack, layer, stack.stream(embed(globals_, tokens, spec)), cache)
    return head(spec, globals_, h), None if cache is None else KVCache(kv[0], kv[1], valid)


def _carried(spec: ArchSpec, stack: Stack, layer, h, cache: KVCache):
    """The layers with the whole cache as the scan's carry: each writes only its new keys, in place
    (layers.CacheView). With each layer's entry as scan input and output instead, a decode step's time grew
    with the cache length far faster than its attention: 4.82 ms against 2.89 ms a step at 1,152 slots (batch 4,
    the decode benchmark's 4-layer model), the logits bit-identical (benchmarks/RESULTS.md, decode)."""
    def body(carry, xs):
        x, kind, index = xs
        h, kv = layer(x, kind, carry[0], CacheView(*carry[1], index))
        return (h, (kv.k, kv.v)), None

    index = jnp.arange(cache.k.shape[0], dtype=jnp.int32)
    (h, kv), _ = jax.lax.scan(body, (h, typed_like(h, (cache.k, cache.v))),
                              (stack.xs, layer_kinds(spec), index))
    return h, kv


def _compacted(spec: ArchSpec, stack: Stack, layer, h, cache: KVCache | None):
    """Only the steps that run, in order: a `while_loop` over the used steps' indices (a stable argsort puts
    them first), each fetching its scan input by index, with the whole cache (if any) as the loop's carry, each
    step writing its new keys at its own entry (layers.CacheView). Without a cache, one candidate at a time this
    costs what a scan of `lax.cond`s costs; under a vmap (candidates in flight together) the loop runs the
    population's longest path and selects its carry (h) at each step, where the conds became selects that
    computed every step of the layout (benchmarks/RESULTS.md, dfs). With a cache, the scan handed every entry
    through at every decode step, used or not: DFS decoding was 4.1-4.4x slower (8 of 49 steps used). Under a
    vmap, though, the loop would select the whole cache at every step: `run` takes this form with a cache only
    when one candidate is in flight (`candidates_in_flight`)."""
    order = jnp.argsort(jnp.logical_not(stack.runs).astype(jnp.int32), stable=True)
    kinds = layer_kinds(spec)

    def body(i, carry):
        h, kv = carry
        t = order[i]
        x = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), stack.xs)
        h, view = layer(x, None if kinds is None else kinds[t], h, None if kv is None else CacheView(*kv, t))
        return h, None if kv is None else (view.k, view.v)

    kv = None if cache is None else typed_like(h, (cache.k, cache.v))
    return jax.lax.fori_loop(0, jnp.sum(stack.runs, dtype=jnp.int32), body, (h, kv))


def _stepped(spec: ArchSpec, stack: Stack, layer, h, cache: KVCache | None):
    """The layers as a scan with each one's cache entry (if any) as scan input and output. With a cache, steps
    that may not run (a DFS path decoding) take this form when several candidates are in flight (vmapped): a
    skipped step passes its own entry through `lax.cond` (a select under the vmap, both branches computed),
    where a carried cache would be selected whole at every step."""
    def body(h, xs):
        x, kind, kv, runs = xs

        def step(h, kv):
            h, view = layer(x, kind, h, None if kv is None else CacheView(kv[0][None], kv[1][None], jnp.int32(0)))
            return h, None if view is None else (view.k[0], view.v[0])
        return step(h, kv) if runs is None else jax.lax.cond(runs, step, _passed, h, kv)

    kv_in = None if cache is None else typed_like(stack.runs, (cache.k, cache.v))
    return jax.lax.scan(body, h, (stack.xs, layer_kinds(spec), kv_in, stack.runs))


def forward(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array | None = None,
            positions: jax.Array | None = None) -> jax.Array:
    """Logits [B, S, V] float32 for tokens [B, S]; `mask` marks real tokens (left padding = 0)."""
    return run(spec, params, plain(params), tokens, mask, positions)[0]


def init_cache(spec: ArchSpec, batch: int, max_len: int, dtype) -> KVCache:
    shape = (spec.num_layers, batch, max_len, spec.num_kv_heads, spec.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, max_len), jnp.int32))


def forward_cached(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array, positions: jax.Array,
                   cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """Run tokens [B, s] that occupy cache slots start..start+s-1; returns logits [B, s, V] and the new cache.

    Prefill is one call with s = prompt length and start = 0; each decode step is a call with s = 1.
    """
    return run(spec, params, plain(params), tokens, mask, positions, cache, start)


forward_jit = jax.jit(forward, static_argnums=0)
