"""Teacher-forced scoring: log-probabilities of known continuations, in one forward pass per batch.

Rows are left-padded `context + continuation` token sequences; `target` marks the continuation tokens.
The log-probability of the token in slot s is read from the logits at slot s-1, so the context is scored
exactly as the model would have generated it. Everything is device math (no host round trip).
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
    """log p(tokens[:, s] | tokens[:, :s]) for s >= 1, [B, S-1] float32, and whether it was the argmax."""
    logits = decoder.forward(spec, params, tokens, mask, model.default_positions(mask))[:, :-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    following = tokens[:, 1:, None]
    picked = jnp.take_along_axis(logp, following, axis=-1)[..., 0]
    is_max = jnp.argmax(logits, axis=-1) == following[..., 0]
    return picked, is_max


def score(spec, params, tokens: jax.Array, mask: jax.Array, target: jax.Array,
          decoder: Decoder = Decoder()) -> Scored:
    """Scores of the continuation slots `target` [B, S] (1 = a continuation token) of each row."""
    logp, is_max = token_logprobs(spec, params, tokens, mask, decoder)
    weight = target[:, 1:].astype(jnp.float32)
    count = jnp.sum(weight, axis=-1)
    greedy = jnp.all(is_max | (weight == 0), axis=-1)
    return Scored(jnp.sum(logp * weight, axis=-1), count, greedy)


score_jit = jax.jit(score, static_argnames=("spec", "decoder"))
