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
           pad: int = 0, decoder: Decoder = Decoder()) -> Generated:
    """Greedy completion of left-padded prompts tokens/mask [B, P]; `eos` is an int array of stop ids."""
    batch, prompt_len = tokens.shape
    positions = model.default_positions(mask)
    cache = decoder.init_cache(spec, batch, prompt_len + max_new_tokens, cache_dtype(params))
    logits, cache = decoder.forward_cached(spec, params, tokens, mask, positions, cache, 0)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    ones = jnp.ones((batch, 1), jnp.int32)

    def step(carry, t):
        cache, token, position, done_before = carry
        done = done_before | jnp.isin(token, eos)
        logits, cache = decoder.forward_cached(spec, params, token[:, None], ones, position[:, None], cache,
                                               prompt_len + t)
        following = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return (cache, following, position + 1, done), (jnp.where(done_before, pad, token), done)

    # zeros_like(first): the done mask varies with the params like `first` does, which a scan under shard_map
    # (population split over devices) requires of a carry that the step makes param-dependent.
    start = (cache, first, positions[:, -1] + 1, jnp.zeros_like(first, bool))
    _, (out, done) = jax.lax.scan(step, start, jnp.arange(max_new_tokens))
    # The last scan step runs one forward whose token is never used; that keeps the loop a plain scan.
    return Generated(out.T, jnp.sum(~done, axis=0).astype(jnp.int32))


greedy_jit = jax.jit(greedy, static_argnames=("spec", "max_new_tokens", "pad", "decoder"))
