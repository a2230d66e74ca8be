"""Teacher-forced scoring: log-probabilities of known continuations, in one forward pass per batch.

Rows are left-padded `context + continuation` token sequences; `target` marks the continuation tokens (1), and
optionally one end slot (2) where greedy decoding may emit any of several end tokens (a stop token or an EOS).
The log-probability of the token in slot s is read from the logits at slot s-1, so the context is scored
exactly as the model would have generated it. Everything is device math (no host round trip).

`Scored.greedy` is the teacher-forced verdict on greedy decoding: by induction over the continuation, greedy
decoding emits exactly the continuation iff, fed the gold prefix, the argmax at every continuation slot is the
gold token (at an end slot: one of `ends`). One forward pass instead of a prefill plus one step per token.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge import model
from jaxmerge.fitness.generate import Decoder


class Scored(NamedTuple):
    """Per row: summed log-prob of the target tokens, their count, and whether greedy would emit them all."""
    logprob: jax.Array
    count: jax.Array
    greedy: jax.Array


def token_logprobs(spec, params, tokens: jax.Array, mask: jax.Array, decoder: Decoder = Decoder()):
    """log p(tokens[:, s] | tokens[:, :s]) for s >= 1, [B, S-1] float32, and the argmax token at s-1."""
    logits = decoder.forward(spec, params, tokens, mask, model.default_positions(mask))[:, :-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return picked, jnp.argmax(logits, axis=-1).astype(tokens.dtype)


def score(spec, params, tokens: jax.Array, mask: jax.Array, target: jax.Array,
          decoder: Decoder = Decoder(), ends: jax.Array | None = None) -> Scored:
    """Scores of the continuation slots `target` [B, S] (1 = a continuation token, 2 = an end slot whose
    argmax may be any token of `ends`; without `ends` an end slot is an ordinary token) of each row."""
    logp, pred = token_logprobs(spec, params, tokens, mask, decoder)
    slot = target[:, 1:]
    weight = (slot > 0).astype(jnp.float32)
    ok = pred == tokens[:, 1:]
    if ends is not None:
        ok = jnp.where(slot == 2, jnp.isin(pred, ends), ok)
    greedy = jnp.all(ok | (slot == 0), axis=-1)
    return Scored(jnp.sum(logp * weight, axis=-1), jnp.sum(weight, axis=-1), greedy)


score_jit = jax.jit(score, static_argnames=("spec", "decoder"))
