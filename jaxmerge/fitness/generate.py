"""Jitted greedy decoding with a KV cache, for one model or a population, generic over a `Decoder`.

A `Decoder` bundles the three model functions decoding needs. The defaults are jaxmerge.model's Llama-family
functions; a data-flow-space (layer path) decoder plugs in its own with the same signatures:

    init_cache(spec, batch, max_len, dtype) -> cache
    forward_cached(spec, params, tokens, mask, positions, cache, start) -> (logits [B, s, V], cache)
    forward(spec, params, tokens, mask, positions) -> logits [B, S, V]

`spec` is whatever static, hashable description the decoder needs (an ArchSpec for the defaults) and
`params` whatever pytree it reads. Decoding is one prefill at cache slot 0, then a fixed-length `lax.scan` of
single-token steps: the shapes never depend on when rows finish, so one compilation serves every candidate.
A per-row done mask freezes finished rows (their later tokens are reported as `pad`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge import model


def _same(spec):
    return spec


class Decoder(NamedTuple):
    init_cache: Callable = model.init_cache
    forward_cached: Callable = model.forward_cached
    forward: Callable = model.forward
    arch: Callable = _same  # spec -> the ArchSpec it runs (vocab, positions, sizes) for the host-side checks


class Generated(NamedTuple):
    """tokens [B, T] as HF returns them (EOS kept, pad after it), lengths [B] (tokens before EOS)."""
    tokens: jax.Array
    lengths: jax.Array


def cache_dtype(params) -> jnp.dtype:
    """The widest float dtype among the params: the cache holds keys/values in the precision they are made."""
    floats = [x.dtype for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.result_type(*floats)


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
    cache = decoder.init_cache(spec, batch, prompt_len + max_new_tokens, cache_dtype(params))
    logits, cache = decoder.forward_cached(spec, params, tokens, mask, positions, cache, 0)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    ones = jnp.ones((batch, 1), jnp.int32)
    width = 1 if stops is None else stops.shape[1]

    def body(carry):
        t, cache, token, position, done_before, out, count, recent = carry
        is_eos = jnp.isin(token, eos)
        out = jax.lax.dynamic_update_slice(out, jnp.where(done_before, pad, token)[:, None], (0, t))
        count = count + (~done_before & ~is_eos).astype(jnp.int32)
        recent = jnp.concatenate([recent[:, 1:], jnp.where(done_before, -2, token)[:, None]], axis=1)
        done = done_before | is_eos | _spelled(recent, stops)
        logits, cache = decoder.forward_cached(spec, params, token[:, None], ones, position[:, None], cache,
                                               prompt_len + t)
        following = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return t + 1, cache, following, position + 1, done, out, count, recent

    def more(carry):
        return (carry[0] < max_new_tokens) & ~jnp.all(carry[4])

    # *_like(first): the carries vary with the params like `first` does, which a loop under shard_map
    # (population split over devices) requires of a carry that the body makes param-dependent.
    zeros = jnp.zeros_like(first)
    start = (jnp.int32(0), cache, first, positions[:, -1] + 1, zeros.astype(bool),
             jnp.full((batch, max_new_tokens), pad, jnp.int32) + zeros[:, None], zeros,
             jnp.full((batch, width), -2, jnp.int32) + zeros[:, None])
    # Each pass runs the forward of the following token, the last one unused: the loop stays one plain body.
    _, _, _, _, _, out, count, _ = jax.lax.while_loop(more, body, start)
    return Generated(out, count)


def _spelled(recent: jax.Array, stops: jax.Array | None) -> jax.Array:
    """[B] whether a row's last tokens `recent` [B, L] end with one of `stops` [K, L] (-1: any token)."""
    if stops is None:
        return jnp.zeros(recent.shape[:1], bool)
    hit = (stops[None] == -1) | (recent[:, None, :] == stops[None])
    return jnp.any(jnp.all(hit, axis=-1), axis=-1)


greedy_jit = jax.jit(greedy, static_argnames=("spec", "max_new_tokens", "pad", "decoder"))
