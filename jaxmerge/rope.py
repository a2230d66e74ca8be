"""Rotary position embeddings as transformers computes them: rotate-half, default / linear / llama3 / longrope
inverse frequencies, a partial rotary dimension, and one table per attention type (Gemma 3's sliding layers
have their own base). Tables are float32 [B, S, rotary_dim]; everything here is a static function of the spec,
except longrope's choice of factors, which follows the positions (traced, as transformers' dynamic update)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmerge.arch import SLIDING, ArchSpec


def inv_frequencies(spec: ArchSpec, long: bool = False) -> jax.Array:
    """RoPE inverse frequencies with linear, llama3 or longrope (short, or `long`) scaling (host constants)."""
    dim = spec.rotary_dim
    exponent = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
    if spec.rope_type == "longrope":
        factors = jnp.asarray(spec.rope_long_factor if long else spec.rope_short_factor, jnp.float32)
        return 1.0 / (factors * spec.rope_theta ** exponent)
    inv = 1.0 / (spec.rope_theta ** exponent)
    if spec.rope_type == "linear":
        return inv / spec.rope_factor
    if spec.rope_type == "llama3":
        return _llama3(spec, inv)
    return inv


def _llama3(spec: ArchSpec, inv: jax.Array) -> jax.Array:
    low_wl = spec.rope_original_max_position / spec.rope_low_freq_factor
    high_wl = spec.rope_original_max_position / spec.rope_high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > low_wl, inv / spec.rope_factor, inv)
    smooth = (spec.rope_original_max_position / wavelen - spec.rope_low_freq_factor) / (
        spec.rope_high_freq_factor - spec.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / spec.rope_factor + smooth * scaled
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return jnp.where(medium, smoothed, scaled)


def kind_spec(spec: ArchSpec, kind: str) -> ArchSpec:
    """The spec whose rope a layer of attention type `kind` uses: Gemma 3's sliding layers use plain RoPE with
    their local base; everyone else's layers share one rope."""
    if kind == SLIDING and spec.local_rope_theta is not None:
        return spec.replace(rope_type="default", rope_theta=spec.local_rope_theta, partial_rotary=1.0)
    return spec


def rope_tables(spec: ArchSpec, positions: jax.Array, kind: str = "full_attention") -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [B, S, rotary_dim] (float32) for integer positions [B, S]. Longrope takes its long
    factors when the call's largest position is past the original length (transformers' rule, per call)."""
    spec = kind_spec(spec, kind)
    inv = inv_frequencies(spec)
    if spec.rope_type == "longrope":
        longer = jnp.max(positions) + 1 > spec.rope_original_max_position
        inv = jnp.where(longer, inv_frequencies(spec, long=True), inv)
    freqs = positions.astype(jnp.float32)[..., None] * inv
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    if spec.rope_attention_factor != 1.0:
        cos, sin = cos * spec.rope_attention_factor, sin * spec.rope_attention_factor
    return cos, sin


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, S, heads, hd]. HF's rotate-half convention on the first rotary_dim features, in x's dtype."""
    dim = cos.shape[-1]
    if dim < x.shape[-1]:
        return jnp.concatenate([apply_rope(x[..., :dim], cos, sin), x[..., dim:]], axis=-1)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin
