"""The Llama-family decoder as pure functions of (spec, params): Llama, Mistral, Qwen2, Qwen3.

Pure functions over the canonical pytree rather than a Flax module: merging, population vmaps, layer-path
(DFS) gathers and fused merge-then-apply all need to hand the forward pass params that were computed a moment
ago, and a plain function of a dict is the simplest thing that composes with jit/vmap/scan/grad. Layers run
under `lax.scan` over the stacked layer axis. Weights keep the HF [out, in] layout: `x @ W.T` is one
dot_general with no copy, so load and save need no transposes at all.

Numerics follow transformers: RMSNorm in float32 then cast back before the gain, softmax in float32,
rotate-half RoPE (default, linear, llama3), GQA by repeating kv heads.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge.arch import ArchSpec
from jaxmerge.errors import expect
from jaxmerge.params import Params


class KVCache(NamedTuple):
    """Keys/values of every layer, [L, B, S_max, K, hd], and which slots hold real tokens, [B, S_max]."""
    k: jax.Array
    v: jax.Array
    valid: jax.Array


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight * xf.astype(x.dtype)


def inv_frequencies(spec: ArchSpec) -> jax.Array:
    """RoPE inverse frequencies, with linear or llama3 scaling as the config says (host constants)."""
    hd = spec.head_dim
    inv = 1.0 / (spec.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    if spec.rope_type == "linear":
        return inv / spec.rope_factor
    if spec.rope_type == "llama3":
        low_wl = spec.rope_original_max_position / spec.rope_low_freq_factor
        high_wl = spec.rope_original_max_position / spec.rope_high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > low_wl, inv / spec.rope_factor, inv)
        smooth = (spec.rope_original_max_position / wavelen - spec.rope_low_freq_factor) / (
            spec.rope_high_freq_factor - spec.rope_low_freq_factor)
        smoothed = (1 - smooth) * scaled / spec.rope_factor + smooth * scaled
        medium = (wavelen >= high_wl) & (wavelen <= low_wl)
        return jnp.where(medium, smoothed, scaled)
    return inv


def rope_tables(spec: ArchSpec, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [B, S, hd] (float32) for integer positions [B, S]."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_frequencies(spec)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, S, heads, hd]. HF's rotate-half convention, computed in x's dtype like HF."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """x @ w.T (+ b) with w in HF [out, in] layout."""
    y = jnp.einsum("...i,oi->...o", x, w)
    return y if b is None else y + b


def attention_mask(query_slots: jax.Array, key_valid: jax.Array) -> jax.Array:
    """[B, Sq, Sk] bool: causal in slot order, and only keys that hold real tokens."""
    key_slots = jnp.arange(key_valid.shape[-1])
    causal = key_slots[None, None, :] <= query_slots[..., :, None]
    return causal & key_valid[:, None, :].astype(bool)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention. q [B,Sq,H,hd], k/v [B,Sk,K,hd], mask [B,Sq,Sk] -> [B,Sq,H,hd]."""
    b, sq, h, hd = q.shape
    groups = h // k.shape[2]
    q = q.reshape(b, sq, k.shape[2], groups, hd)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) / math.sqrt(hd)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
    return out.reshape(b, sq, h, hd)


def attention_block(spec: ArchSpec, lp: Params, x: jax.Array, rope, mask, kv=None, start=None):
    """Self-attention of one layer. With `kv` = (k, v) cache of this layer, writes the new keys at `start`."""
    b, s, _ = x.shape
    q = linear(x, lp["q_proj"], lp.get("q_bias")).reshape(b, s, spec.num_heads, spec.head_dim)
    k = linear(x, lp["k_proj"], lp.get("k_bias")).reshape(b, s, spec.num_kv_heads, spec.head_dim)
    v = linear(x, lp["v_proj"], lp.get("v_bias")).reshape(b, s, spec.num_kv_heads, spec.head_dim)
    if spec.qk_norm:
        q, k = rms_norm(q, lp["q_norm"], spec.rms_norm_eps), rms_norm(k, lp["k_norm"], spec.rms_norm_eps)
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if kv is not None:
        k = jax.lax.dynamic_update_slice_in_dim(kv[0], k.astype(kv[0].dtype), start, axis=1)
        v = jax.lax.dynamic_update_slice_in_dim(kv[1], v.astype(kv[1].dtype), start, axis=1)
        kv = (k, v)
    out = attend(q, k, v, mask).reshape(b, s, spec.q_size)
    return linear(out, lp["o_proj"], lp.get("o_bias")), kv


def mlp_block(lp: Params, x: jax.Array) -> jax.Array:
    return linear(jax.nn.silu(linear(x, lp["gate_proj"])) * linear(x, lp["up_proj"]), lp["down_proj"])


def decoder_layer(spec: ArchSpec, lp: Params, h: jax.Array, rope, mask, kv=None, start=None):
    """One pre-norm decoder layer on the residual stream h [B, S, D]; lp holds this layer's tensors."""
    attn, kv = attention_block(spec, lp, rms_norm(h, lp["input_layernorm"], spec.rms_norm_eps), rope, mask,
                               kv, start)
    h = h + attn
    h = h + mlp_block(lp, rms_norm(h, lp["post_attention_layernorm"], spec.rms_norm_eps))
    return h, kv


def embed(params: Params, tokens: jax.Array) -> jax.Array:
    return jnp.take(params["embed"], tokens, axis=0)


def head(spec: ArchSpec, params: Params, h: jax.Array) -> jax.Array:
    """Final norm and LM head -> float32 logits."""
    h = rms_norm(h, params["norm"], spec.rms_norm_eps)
    w = params["embed"] if spec.tie_word_embeddings else params["lm_head"]
    return linear(h, w).astype(jnp.float32)


def default_positions(mask: jax.Array) -> jax.Array:
    """Position ids for a left-padded batch: count of real tokens before each slot (HF generate's rule)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def check_length(spec: ArchSpec, seq_len: int) -> None:
    """Host-side: refuse sequences a sliding window would change (shapes are static, so this is not traced)."""
    if spec.sliding_window is not None:
        expect(seq_len <= spec.sliding_window, f"sliding_window is {spec.sliding_window} but the sequence has "
                                               f"{seq_len} tokens: windowed attention is not supported")


def attention_inputs(spec: ArchSpec, tokens: jax.Array, mask: jax.Array | None, positions: jax.Array | None):
    """(rope tables, attention mask) of an uncached forward over tokens [B, S] (mask None: no padding)."""
    check_length(spec, tokens.shape[-1])
    mask = jnp.ones(tokens.shape, jnp.int32) if mask is None else mask
    positions = default_positions(mask) if positions is None else positions
    return rope_tables(spec, positions), attention_mask(jnp.arange(tokens.shape[-1]), mask)


def hidden_states(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array | None = None,
                  positions: jax.Array | None = None) -> jax.Array:
    """Residual stream after the last layer (before the final norm), [B, S, D]."""
    rope, attn_mask = attention_inputs(spec, tokens, mask, positions)

    def body(h, lp):
        return decoder_layer(spec, lp, h, rope, attn_mask)[0], None

    h, _ = jax.lax.scan(body, embed(params, tokens), params["layers"])
    return h


def forward(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array | None = None,
            positions: jax.Array | None = None) -> jax.Array:
    """Logits [B, S, V] float32 for tokens [B, S]; `mask` marks real tokens (left padding = 0)."""
    return head(spec, params, hidden_states(spec, params, tokens, mask, positions))


def init_cache(spec: ArchSpec, batch: int, max_len: int, dtype) -> KVCache:
    shape = (spec.num_layers, batch, max_len, spec.num_kv_heads, spec.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, max_len), jnp.int32))


def forward_cached(spec: ArchSpec, params: Params, tokens: jax.Array, mask: jax.Array, positions: jax.Array,
                   cache: KVCache, start: jax.Array) -> tuple[jax.Array, KVCache]:
    """Run tokens [B, s] that occupy cache slots start..start+s-1; returns logits [B, s, V] and the new cache.

    Prefill is one call with s = prompt length and start = 0; each decode step is a call with s = 1.
    """
    check_length(spec, cache.valid.shape[-1])
    valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, mask.astype(jnp.int32), start, axis=1)
    rope = rope_tables(spec, positions)
    attn_mask = attention_mask(start + jnp.arange(tokens.shape[-1]), valid)

    def body(h, xs):
        lp, k, v = xs
        h, (k, v) = decoder_layer(spec, lp, h, rope, attn_mask, (k, v), start)
        return h, (k, v)

    h, (k, v) = jax.lax.scan(body, embed(params, tokens), (params["layers"], cache.k, cache.v))
    return head(spec, params, h), KVCache(k, v, valid)


forward_jit = jax.jit(forward, static_argnums=0)
