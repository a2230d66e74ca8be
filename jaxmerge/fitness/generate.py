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
as `pad`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge import model


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
        is_eos = jnp.isin(token, eos)
        out = jax.lax.dynamic_update_slice(out, jnp.where(done_before, pad, token)[:, None], (0, t))
        count = count + (~done_before & ~is_eos).astype(jnp.int32)
        recent = jnp.concatenate([recent[:, 1:], jnp.where(done_before, -2, token)[:, None]], axis=1)
        return out, count, recent, done_before | is_eos | _spelled(recent, stops)

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


def _spelled(recent: jax.Array, stops: jax.Array | None) -> jax.Array:
    """[B] whether a row's last tokens `recent` [B, L] end with one of `stops` [K, L] (-1: any token)."""
    if stops is None:
        return jnp.zeros(recent.shape[:1], bool)
    hit = (stops[None] == -1) | (recent[:, None, :] == stops[None])
    return jnp.any(jnp.all(hit, axis=-1), axis=-1)


greedy_jit = jax.jit(greedy, static_argnames=("spec", "max_new_tokens", "pad", "decoder"))
