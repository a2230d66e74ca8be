"""The language model of a VLM, fed image features at its image-token positions.

The features enter through the Stack's `stream` hook of jaxmerge.model.run: the token embeddings are made as
for any text model, then the rows at image-token positions are replaced by the image features in order (row-major
over the batch, as transformers' masked_scatter fills them). So plain, DFS-path and fused stacks all take images
with no change to the decoder. Only a call that carries the prompt splices (tokens wider than one slot, a static
shape); decode steps feed one generated token, as transformers' generate passes pixels at the first step only.

`VLM_DECODER` (a plain or merged language model) and `DFS_VLM_DECODER` (a DFS layer path) plug this into jaxmerge.fitness.generate.greedy: its spec is a `LanguageSpec` (the ArchSpec and
the image token id), its params {"lm": canonical params, "features": [B, tokens per image, D]}, one image per
prompt row; in a fitness, `bind` makes them from the candidate and the chunk's cached features.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge import model
from jaxmerge.arch import ArchSpec
from jaxmerge.dfs.decoder import DFS_DECODER
from jaxmerge.dfs.path import path_stack
from jaxmerge.fitness.generate import Decoder


class LanguageSpec(NamedTuple):
    arch: ArchSpec
    image_token: int


def splice(h: jax.Array, tokens: jax.Array, features: jax.Array, image_token: int) -> jax.Array:
    """h [B, S, D] with row b's image-token slots replaced, in order, by that row's image features [B, N, D]
    (one image per prompt; a row without image tokens, e.g. an unused choice row, is left alone). The host checks
    that every prompt with an image holds exactly N image tokens; transformers' masked_scatter then fills the
    same slots with the same rows."""
    is_image = tokens == image_token
    index = jnp.clip(jnp.cumsum(is_image, axis=-1) - 1, 0, features.shape[1] - 1)
    rows = jnp.take_along_axis(features.astype(h.dtype), index[..., None], axis=1)
    return jnp.where(is_image[..., None], rows, h)


def with_images(stack: model.Stack, tokens: jax.Array, features: jax.Array, image_token: int) -> model.Stack:
    """`stack` whose first carry has the image features spliced into the embeddings, before its own stream."""
    return stack._replace(stream=lambda h: stack.stream(splice(h, tokens, features, image_token)))


def vlm_decoder(stack_of) -> Decoder:
    """The image-splicing decoder over the language model stack `stack_of(params)` makes: model.plain for a
    plain or merged model, jaxmerge.dfs.path.path_stack for a DFS layer path (A's embeddings, the path's layers)."""
    def forward(spec: LanguageSpec, params, tokens: jax.Array, mask: jax.Array | None = None,
                positions: jax.Array | None = None) -> jax.Array:
        """Logits [B, S, V] float32 of prompts holding image tokens; params {"lm", "features"}."""
        lm = params["lm"]
        stack = with_images(stack_of(lm), tokens, params["features"], spec.image_token)
        return model.run(spec.arch, lm, stack, tokens, mask, positions)[0]

    def forward_cached(spec: LanguageSpec, params, tokens, mask, positions, cache, start):
        lm = params["lm"]
        stack = stack_of(lm)
        if tokens.shape[1] > 1:  # static: the prompt (prefill); a decode step carries one generated token
            stack = with_images(stack, tokens, params["features"], spec.image_token)
        return model.run(spec.arch, lm, stack, tokens, mask, positions, cache, start)

    return Decoder(init_cache=_init_cache, forward_cached=forward_cached, forward=forward,
                   arch=lambda spec: spec.arch, cache_dtype=lambda spec, params: params["lm"]["embed"].dtype,
                   bind=bind)


def bind(params, chunk):
    """The decoder's params for a chunk of fitness items: the candidate's language model and the chunk's cached
    image features (repeated per choice row where the chunk is teacher-forced [items, choices, S])."""
    features = chunk["features"]
    if chunk["tokens"].ndim == 3:
        features = jnp.repeat(features, chunk["tokens"].shape[1], axis=0)
    return {"lm": params, "features": features}


def _init_cache(spec: LanguageSpec, batch: int, max_len: int, dtype):
    return model.init_cache(spec.arch, batch, max_len, dtype)


VLM_DECODER = vlm_decoder(model.plain)
forward = VLM_DECODER.forward  # logits [B, S, V] of a plain or merged VLM language model, params {"lm", "features"}


DFS_VLM_DECODER = vlm_decoder(path_stack)


def image_decoder(decoder: Decoder) -> Decoder | None:
    """The image-splicing twin of a text fitness decoder (plain, DFS path); None: none (the fused PS decoder)."""
    return {Decoder(): VLM_DECODER, DFS_DECODER: DFS_VLM_DECODER}.get(decoder)
