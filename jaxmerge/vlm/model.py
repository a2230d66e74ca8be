"""The language model of a VLM, fed image features at its image-token positions.

The features enter through the Stack's `stream` hook of jaxmerge.model.run: the token embeddings are made as
for any text model, then the rows at image-token positions are replaced by the image features in order (row-major
over the batch, as transformers' masked_scatter fills them). So plain, DFS-path and fused stacks all take images
with no change to the decoder. Only a call that carries the prompt splices (tokens wider than one slot, a static
shape); decode steps feed one generated token, as transformers' generate passes pixels at the first step only.

`VLM_DECODER` plugs this into jaxmerge.fitness.generate.greedy: its spec is a `LanguageSpec` (the ArchSpec and
the image token id), its params {"lm": canonical params, "features": [images, tokens, D]}.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge import model
from jaxmerge.arch import ArchSpec
from jaxmerge.fitness.generate import Decoder


class LanguageSpec(NamedTuple):
    arch: ArchSpec
    image_token: int


def splice(h: jax.Array, tokens: jax.Array, features: jax.Array, image_token: int) -> jax.Array:
    """h [B, S, D] with its image-token rows replaced by `features` [I, N, D] (flattened, in order). The host
    checks beforehand that the prompt holds exactly I * N image tokens."""
    is_image = tokens == image_token
    flat = features.reshape(-1, features.shape[-1]).astype(h.dtype)
    index = jnp.clip(jnp.cumsum(is_image.reshape(-1)) - 1, 0, flat.shape[0] - 1)
    return jnp.where(is_image[..., None], jnp.take(flat, index, axis=0).reshape(h.shape), h)


def with_images(stack: model.Stack, tokens: jax.Array, features: jax.Array, image_token: int) -> model.Stack:
    """`stack` whose first carry has the image features spliced into the embeddings, before its own stream."""
    return stack._replace(stream=lambda h: stack.stream(splice(h, tokens, features, image_token)))


def forward(spec: LanguageSpec, params, tokens: jax.Array, mask: jax.Array | None = None,
            positions: jax.Array | None = None) -> jax.Array:
    """Logits [B, S, V] float32 of prompts holding image tokens; params {"lm", "features"}."""
    lm = params["lm"]
    stack = with_images(model.plain(lm), tokens, params["features"], spec.image_token)
    return model.run(spec.arch, lm, stack, tokens, mask, positions)[0]


def forward_cached(spec: LanguageSpec, params, tokens, mask, positions, cache, start):
    lm = params["lm"]
    stack = model.plain(lm)
    if tokens.shape[1] > 1:  # static: the prompt (prefill); a decode step carries one generated token
        stack = with_images(stack, tokens, params["features"], spec.image_token)
    return model.run(spec.arch, lm, stack, tokens, mask, positions, cache, start)


def _init_cache(spec: LanguageSpec, batch: int, max_len: int, dtype):
    return model.init_cache(spec.arch, batch, max_len, dtype)


VLM_DECODER = Decoder(init_cache=_init_cache, forward_cached=forward_cached, forward=forward,
                      arch=lambda spec: spec.arch, cache_dtype=lambda spec, params: params["lm"]["embed"].dtype)
