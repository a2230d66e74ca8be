"""Jitted greedy decoding with a KV cache, for one model or a population, generic over a `Decoder`.

A `Decoder` bundles the model functions decoding needs. The defaults are jaxmerge.model's
functions; a data-flow-space (layer path) decoder plugs in its own with the same signatures:

    init_cache(spec, batch, max_len, dtype) -> cache
    forward_cached(spec, params, tokens, mask, positions, cache, start) -> (logits [B, s, V], cache)
    forward(spec, params, tokens, mask, positions) -> logits [B, S, V]

`spec` is whatever static, hashable description the decoder needs (an ArchSpec for the defaults) and
`params` whatever pytree it reads. Decoding is one prefill at cache slot 0, then a `lax.while_loop` of
single-token steps that ends when every row has finished: its shapes never depend on when rows finish, so one
compilation serves every candidate. A per-row done mask freezes finished rows (their later tokens are reported
as `pad`). `greedy` decodes one chunk of prompts; `greedy_queue`, what the fitness runs, decodes any number of
items a few rows at a time, a row taking the next item when its own ends (`start` then is one slot per row).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge import model
from jaxmerge.errors import expect


def _same(spec):
    return spec


def _embed_dtype(spec, params):
    """The dtype the layers compute in: the embeddings' (a plain model, a DFS pool)."""
    return params["embed"].dtype


def _params(params, chunk):
    return params


class Decoder(NamedTuple):
    init_cache: Callable = model.init_cache
    forward_cached: Callable = model.forward_cached
    forward: Callable = model.forward
    arch: Callable = _same  # spec -> the ArchSpec it runs (vocab, positions, sizes) for the host-side checks
    cache_dtype: Callable = _embed_dtype  # (spec, params) -> the dtype keys and values are made and cached in
    bind: Callable = _params  # (params, chunk of items) -> what the functions above read (a VLM: + its features)


class Generated(NamedTuple):
    """tokens [B, T] as HF returns them (EOS kept, pad after it), lengths [B] (tokens before EOS)."""
    tokens: jax.Array
    lengths: jax.Array


def recompute_step(arch, prompt_len: int, max_new_tokens: int) -> int | None:
    """The decode step at which transformers' generate drops its cache and runs the whole sequence again, or
    None. Phi-3's longrope does (its prepare_inputs_for_generation) when the sequence reaches
    original_max_position_embeddings + 1 slots, so that every key is rotated with the long factors."""
    if arch.rope_type != "longrope":
        return None
    step = arch.rope_original_max_position - prompt_len
    return step if 0 <= step < max_new_tokens else None


def greedy(spec, params, tokens: jax.Array, mask: jax.Array, eos: jax.Array, *, max_new_tokens: int,
           pad: int = 0, decoder: Decoder = Decoder(), stops: jax.Array | None = None) -> Generated:
    """Greedy completion of left-padded prompts tokens/mask [B, P]; `eos` is an int array of stop ids.

    `stops` [K, L] (optional) are stop strings as token ids, right-aligned, -1 where a shorter one has nothing:
    a row also finishes once its last generated tokens spell one of them (the stop's tokens are kept and counted;
    the host cuts the text at the stop string, so an early finish changes no completion). Decoding ends as soon
    as every row has finished, so up to max_new_tokens (1024 for the paper's CoT answers) costs only what the
    longest answer needs. The loop's shapes never depend on when rows finish: one compilation serves all."""
    batch, prompt_len = tokens.shape
    positions = model.default_positions(mask)
    cache = decoder.init_cache(spec, batch, prompt_len + max_new_tokens, decoder.cache_dtype(spec, params))
    logits, cache = decoder.forward_cached(spec, params, tokens, mask, positions, cache, 0)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    ones = jnp.ones((batch, 1), jnp.int32)
    width = 1 if stops is None else stops.shape[1]

    def noted(carry):
        """The outputs after reporting this step's token (EOS kept, pad after it), and which rows are done."""
        t, _, token, _, done_before, out, count, recent = carry
        is_eos, recent, ends = _reported(jnp.where(done_before, -2, token), recent, eos, stops)
        out = jax.lax.dynamic_update_slice(out, jnp.where(done_before, pad, token)[:, None], (0, t))
        count = count + (~done_before & ~is_eos).astype(jnp.int32)
        return out, count, recent, done_before | ends

    def advanced(carry, logits, cache):
        t, _, _, position, _, _, _, _ = carry
        following = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        out, count, recent, done = noted(carry)
        return t + 1, cache, following, position + 1, done, out, count, recent

    def step(carry):
        t, cache, token, position = carry[:4]
        logits, cache = decoder.forward_cached(spec, params, token[:, None], ones, position[:, None], cache,
                                               prompt_len + t)
        return advanced(carry, logits, cache)

    def redo(carry):
        """Step `at` as one forward over the whole sequence so far (prompt, the tokens fed before, this one):
        a live row's reported tokens are the tokens it was fed; a finished row's outputs are pad either way."""
        cache = carry[1]
        seq = jnp.concatenate([tokens, noted(carry)[0][:, :at + 1].astype(tokens.dtype)], axis=1)
        full = jnp.concatenate([mask, jnp.ones((batch, at + 1), mask.dtype)], axis=1)
        logits, cache = decoder.forward_cached(spec, params, seq, full, model.default_positions(full), cache, 0)
        return advanced(carry, logits, cache)

    def until(limit):
        return lambda carry: (carry[0] < limit) & ~jnp.all(carry[4])

    # *_like(first): the carries vary with the params like `first` does, which a loop under shard_map
    # (population split over devices) requires of a carry that the body makes param-dependent.
    zeros = jnp.zeros_like(first)
    carry = (jnp.int32(0), cache, first, positions[:, -1] + 1, zeros.astype(bool),
             jnp.full((batch, max_new_tokens), pad, jnp.int32) + zeros[:, None], zeros,
             jnp.full((batch, width), -2, jnp.int32) + zeros[:, None])
    at = recompute_step(decoder.arch(spec), prompt_len, max_new_tokens)
    if at is not None:  # static: Phi-3 longrope crossing its original positions (transformers recomputes there)
        carry = jax.lax.while_loop(until(at), step, carry)
        carry = jax.lax.cond(jnp.all(carry[4]), lambda c: c, redo, carry)
    # Each pass runs the forward of the following token, the last one unused: the loop stays one plain body.
    _, _, _, _, _, out, count, _ = jax.lax.while_loop(until(max_new_tokens), step, carry)
    return Generated(out, count)


class _Rows(NamedTuple):
    """The queue's rows in flight: the item each decodes (n: none), tokens reported so far `t`, the token fed next,
    its position, whether the row still decodes, its last tokens (for stops)."""
    item: jax.Array
    t: jax.Array
    token: jax.Array
    position: jax.Array
    live: jax.Array
    recent: jax.Array


def greedy_queue(spec, params, items: dict, eos: jax.Array, *, rows: int, max_new_tokens: int, pad: int = 0,
                 decoder: Decoder = Decoder(), stops: jax.Array | None = None) -> Generated:
    """Greedy completion of every item of `items` ({"tokens", "mask"}: [N, P] left-padded prompts, and what
    `decoder.bind` reads), `rows` at a time, each row taking the next item as soon as its own has finished.

    Why: decoding chunk by chunk (`greedy` under lax.map), a chunk runs until its longest answer ends, and its
    other rows idle: with answers of 8 to 256 tokens, four rows of a chunk spent ~40 % of their steps idle
    (benchmarks/RESULTS.md, decode). Here a row whose item has ended is refilled at once: the next item's
    prompt is prefilled into that row's cache (a batch of one), and every row then decodes at its own cache slot
    (jaxmerge.model.run's per-row `start`). Each item sees the same slots, positions and mask as in its own
    chunk, so its tokens are those `greedy` gives it (tests/test_fitness_queue.py). One compile: the loop's
    shapes never depend on the items' lengths. A model that recomputes at a fixed step (Phi-3 longrope,
    `recompute_step`), which rows would reach at different steps, is decoded chunk by chunk instead (N a
    multiple of `rows`)."""
    n, prompt_len = items["tokens"].shape
    rows = min(rows, n)
    if recompute_step(decoder.arch(spec), prompt_len, max_new_tokens) is not None:
        expect(n % rows == 0, f"expected a multiple of {rows} items to decode in chunks, found {n}")
        chunked = jax.tree.map(lambda a: a.reshape(n // rows, rows, *a.shape[1:]), items)
        out = jax.lax.map(lambda c: greedy(spec, decoder.bind(params, c), c["tokens"], c["mask"], eos,
                                           max_new_tokens=max_new_tokens, pad=pad, decoder=decoder, stops=stops),
                          chunked)
        return Generated(out.tokens.reshape(n, max_new_tokens), out.lengths.reshape(n))
    slots = prompt_len + max_new_tokens
    width = 1 if stops is None else stops.shape[1]
    ones = jnp.ones((rows, 1), jnp.int32)
    first_items = jax.tree.map(lambda a: a[:rows], items)
    bound = decoder.bind(params, first_items)  # decode steps read no item data (a VLM splices at prefill only)
    dtype = decoder.cache_dtype(spec, bound)
    positions = model.default_positions(first_items["mask"])
    cache = decoder.init_cache(spec, rows, slots, dtype)
    logits, cache = decoder.forward_cached(spec, bound, first_items["tokens"], first_items["mask"], positions,
                                           cache, 0)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    zeros = jnp.zeros_like(first)  # carries vary with the params like `first` (a loop under shard_map)
    cache = model.typed_like(first, cache)
    state = _Rows(jnp.arange(rows, dtype=jnp.int32) + zeros, zeros, first, positions[:, -1] + 1 + zeros,
                  zeros == 0, jnp.full((rows, width), -2, jnp.int32) + zeros[:, None])
    out = jnp.full((n, max_new_tokens), pad, jnp.int32) + zeros[0]
    count = jnp.zeros((n,), jnp.int32) + zeros[0]
    queued = jnp.int32(rows) + zeros[0]

    def step(carry):
        state, cache, out, count, queued = carry
        logits, cache = decoder.forward_cached(spec, bound, state.token[:, None], ones, state.position[:, None],
                                               cache, prompt_len + state.t)
        item = jnp.where(state.live, state.item, n)  # rows that decode nothing report nowhere (dropped)
        is_eos, recent, ends = _reported(state.token, state.recent, eos, stops)
        out = out.at[item, state.t].set(state.token, mode="drop")
        count = count.at[item].add((~is_eos).astype(jnp.int32), mode="drop")
        ended = ends | (state.t + 1 >= max_new_tokens)
        going = state.live & ~ended
        state = _Rows(state.item, jnp.where(going, state.t + 1, state.t),
                      jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), state.position + 1, going, recent)
        return jax.lax.while_loop(waiting, refill, (state, cache, out, count, queued))

    def waiting(carry):
        """A row is free and an item waits. A loop, not a cond: vmapped (candidates in flight together) a cond
        becomes a select that would prefill at every step; the loop runs only when some candidate refills."""
        return jnp.any(~carry[0].live) & (carry[4] < n)

    def refill(carry):
        """The first free row takes the next queued item: its prompt prefilled into a fresh row of the cache."""
        state, cache, out, count, queued = carry
        row = jnp.argmax(~state.live).astype(jnp.int32)
        one = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, queued, 1), items)
        position = model.default_positions(one["mask"])
        logits, fresh = decoder.forward_cached(spec, decoder.bind(params, one), one["tokens"], one["mask"], position,
                                               decoder.init_cache(spec, 1, slots, dtype), 0)
        cache = jax.tree.map(lambda whole, part: jax.lax.dynamic_update_slice_in_dim(
            whole, part, row, axis=1 if whole.ndim > 2 else 0), cache, fresh)
        put = lambda a, v: a.at[row].set(v)  # noqa: E731
        state = _Rows(put(state.item, queued), put(state.t, 0),
                      put(state.token, jnp.argmax(logits[0, -1]).astype(jnp.int32)),
                      put(state.position, position[0, -1] + 1), put(state.live, True), put(state.recent, -2))
        return state, cache, out, count, queued + 1

    def going(carry):
        return jnp.any(carry[0].live) | (carry[4] < n)

    _, _, out, count, _ = jax.lax.while_loop(going, step, (state, cache, out, count, queued))
    return Generated(out, count)


def _reported(token: jax.Array, recent: jax.Array, eos: jax.Array, stops: jax.Array | None):
    """A step's reported tokens [B] (-2: a row that reports nothing; never an end token): whether each is an end
    token, the rows' last tokens with it, and whether it ends its row (an end token, or a stop spelled)."""
    is_eos = jnp.isin(token, eos)
    recent = jnp.concatenate([recent[:, 1:], token[:, None]], axis=1)
    return is_eos, recent, is_eos | _spelled(recent, stops)


def _spelled(recent: jax.Array, stops: jax.Array | None) -> jax.Array:
    """[B] whether a row's last tokens `recent` [B, L] end with one of `stops` [K, L] (-1: any token)."""
    if stops is None:
        return jnp.zeros(recent.shape[:1], bool)
    hit = (stops[None] == -1) | (recent[:, None, :] == stops[None])
    return jnp.any(jnp.all(hit, axis=-1), axis=-1)


greedy_jit = jax.jit(greedy, static_argnames=("spec", "max_new_tokens", "pad", "decoder"))
