"""Jitted greedy decoding with a KV cache, for one model or a population, generic over a `Decoder`.

A `Decoder` bundles the model functions decoding needs. The defaults are jaxmerge.model's
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


def _embed_dtype(spec, params):
    """The dtype the layers compute in: the embeddings' (a plain model, a DFS pool)."""
    return params["embed"].dtype


class Decoder(NamedTuple):
    init_cache: Callable = model.init_cache
    forward_cached: Callable = model.forward_cached
    forward: Callable = model.forward
    arch: Callable = _same  # spec -> the ArchSpec it runs (vocab, positions, sizes) for the host-side checks
    cache_dtype: Callable = _embed_dtype  # (spec, params) -> the dtype keys and values are made and cached in


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
           pad: int = 0, decoder: Decoder = Decoder()) -> Generated:
    """Greedy completion of left-padded prompts tokens/mask [B, P]; `eos` is an int array of stop ids."""
    batch, prompt_len = tokens.shape
    positions = model.default_positions(mask)
    cache = decoder.init_cache(spec, batch, prompt_len + max_new_tokens, decoder.cache_dtype(spec, params))
    logits, cache = decoder.forward_cached(spec, params, tokens, mask, positions, cache, 0)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    ones = jnp.ones((batch, 1), jnp.int32)

    def advance(carry, logits, cache, done):
        """The carry after a step, and what it reports (EOS kept, pad after it; the token it fed)."""
        _, token, position, done_before = carry
        following = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return (cache, following, position + 1, done), (jnp.where(done_before, pad, token), done, token)

    def step(carry, t):
        cache, token, position, done_before = carry
        logits, cache = decoder.forward_cached(spec, params, token[:, None], ones, position[:, None], cache,
                                               prompt_len + t)
        return advance(carry, logits, cache, done_before | jnp.isin(token, eos))

    def redo(carry, t, fed):
        """Step t as one forward over the whole sequence so far (prompt, tokens fed before, this token)."""
        cache, token, _, done_before = carry
        seq = jnp.concatenate([tokens, fed.T.astype(tokens.dtype), token[:, None].astype(tokens.dtype)], axis=1)
        full = jnp.concatenate([mask, jnp.ones((batch, t + 1), mask.dtype)], axis=1)
        logits, cache = decoder.forward_cached(spec, params, seq, full, model.default_positions(full), cache, 0)
        return advance(carry, logits, cache, done_before | jnp.isin(token, eos))

    # zeros_like(first): the done mask varies with the params like `first` does, which a scan under shard_map
    # (population split over devices) requires of a carry that the step makes param-dependent.
    carry = (cache, first, positions[:, -1] + 1, jnp.zeros_like(first, bool))
    out, done = _decode(step, redo, carry, recompute_step(decoder.arch(spec), prompt_len, max_new_tokens),
                        max_new_tokens)
    # The last scan step runs one forward whose token is never used; that keeps the loop a plain scan.
    return Generated(out.T, jnp.sum(~done, axis=0).astype(jnp.int32))


def _decode(step, redo, carry, at: int | None, steps: int):
    """(tokens, done) of the decode scan over `steps` steps, where step `at` (None: none) is `redo`'s."""
    if at is None:
        return jax.lax.scan(step, carry, jnp.arange(steps))[1][:2]
    carry, before = jax.lax.scan(step, carry, jnp.arange(at))
    carry, here = redo(carry, at, before[2])
    _, after = jax.lax.scan(step, carry, jnp.arange(at + 1, steps))
    return tuple(jnp.concatenate([b, h[None], a]) for b, h, a in zip(before[:2], here[:2], after[:2]))


greedy_jit = jax.jit(greedy, static_argnames=("spec", "max_new_tokens", "pad", "decoder"))
