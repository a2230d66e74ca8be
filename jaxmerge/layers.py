"""One decoder layer of any family, as pure functions of (spec, this layer's tensors, inputs).

Every difference between families is a static field of the spec (jaxmerge.arch.ArchSpec), read here with plain
Python `if`s at trace time: the norm's (1 + w) gain, the activation, sandwich norms, soft-capping, the query
scale, fused projections, partial rotary, per-head q/k norms, a mixture of experts. No family is named here.

Numerics follow transformers: RMSNorm in float32 (Llama casts back before the gain, Gemma after it), softmax in
float32, rotate-half RoPE, GQA by grouping query heads over their shared kv head.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge.arch import ArchSpec
from jaxmerge.kernels import dense
from jaxmerge.moe import moe_block
from jaxmerge.params import Params
from jaxmerge.rope import apply_rope
from jaxmerge.window import Band, banded

ACTIVATIONS = {"silu": jax.nn.silu, "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, offset: bool = False) -> jax.Array:
    """Llama: gain times the normalised input cast back; Gemma (`offset`): (1 + gain) times it, in float32."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    if offset:
        return (xf * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)
    return weight * xf.astype(x.dtype)


def norm(spec: ArchSpec, x: jax.Array, weight: jax.Array) -> jax.Array:
    return rms_norm(x, weight, spec.rms_norm_eps, spec.norm_offset)


def linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """x @ w.T (+ b) with w in HF [out, in] layout."""
    y = jnp.einsum("...i,oi->...o", x, w)
    return y if b is None else y + b


def attend(spec: ArchSpec, q: jax.Array, k: jax.Array, v: jax.Array, mask) -> jax.Array:
    """Grouped-query attention. q [B,Sq,H,hd], k/v [B,Sk,K,hd], mask [B,Sq,Sk] -> [B,Sq,H,hd]; a `Band` in
    place of the mask attends a long sequence window by window (jaxmerge.window). Which kernel, and query
    blocks for long calls: jaxmerge.kernels."""
    if isinstance(mask, Band):
        return banded(q, k, v, mask, lambda q, k, v, m: attend(spec, q, k, v, m))
    return dense(spec, q, k, v, mask)


def qkv(spec: ArchSpec, lp: Params, x: jax.Array):
    """Queries, keys and values [B, S, heads, hd] from separate projections or one fused qkv_proj."""
    b, s, _ = x.shape
    if spec.fused_qkv:
        fused = linear(x, lp["qkv_proj"])
        q, k, v = jnp.split(fused, [spec.q_size, spec.q_size + spec.kv_size], axis=-1)
    else:
        q = linear(x, lp["q_proj"], lp.get("q_bias"))
        k, v = linear(x, lp["k_proj"], lp.get("k_bias")), linear(x, lp["v_proj"], lp.get("v_bias"))
    return (q.reshape(b, s, spec.num_heads, spec.head_dim), k.reshape(b, s, spec.num_kv_heads, spec.head_dim),
            v.reshape(b, s, spec.num_kv_heads, spec.head_dim))


class CacheView(NamedTuple):
    """A layer's KV cache inside the whole one: keys/values [L, B, S_max, K, hd] and this layer's index. The
    layer writes only its new keys, at [layer, :, start] (or each row at its own start), into the array it was
    handed (in place, when that array is a loop carry), and attends over its own entry: a decode step then moves
    one token's keys per layer, not the layer's whole cache in and out of the scan (jaxmerge.model.run says when
    each form is used)."""
    k: jax.Array
    v: jax.Array
    layer: jax.Array


def _written(cache: jax.Array, new: jax.Array, layer, start) -> jax.Array:
    """`new` [B, s, K, hd] written into layer `layer` of `cache` [L, B, S_max, K, hd] (at_slots)."""
    return at_slots(cache, new, start, layer)


def at_slots(array: jax.Array, new: jax.Array, start, *lead) -> jax.Array:
    """`new` [B, s, ...] written into `array` [..., B, S_max, ...] at slots start..start+s-1, after indexing its
    leading axes by `lead` (a cache's layer): `start` one slot for every row, or one per row [B] (rows decoding
    at different slots: greedy_queue)."""
    start, lead = jnp.asarray(start, jnp.int32), tuple(jnp.asarray(i, jnp.int32) for i in lead)
    new = new.astype(array.dtype)
    if start.ndim == 0:
        at = (*lead, jnp.int32(0), start) + (jnp.int32(0),) * (new.ndim - 2)
        return jax.lax.dynamic_update_slice(array, new.reshape((1,) * len(lead) + new.shape), at)
    rows, slots = jnp.arange(start.shape[0])[:, None], start[:, None] + jnp.arange(new.shape[1])[None]
    return array.at[(*lead, rows, slots)].set(new)


def attention_block(spec: ArchSpec, lp: Params, x: jax.Array, rope, mask, kv: CacheView | None = None, start=None):
    """Self-attention of one layer. With a cache view `kv`, writes the new keys at `start` and returns the view."""
    q, k, v = qkv(spec, lp, x)
    if spec.qk_norm:
        q, k = norm(spec, q, lp["q_norm"]), norm(spec, k, lp["k_norm"])
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if kv is not None:
        kv = CacheView(_written(kv.k, k, kv.layer, start), _written(kv.v, v, kv.layer, start), kv.layer)
        k = jax.lax.dynamic_index_in_dim(kv.k, kv.layer, keepdims=False)
        v = jax.lax.dynamic_index_in_dim(kv.v, kv.layer, keepdims=False)
    out = attend(spec, q, k, v, mask).reshape(*x.shape[:2], spec.q_size)
    return linear(out, lp["o_proj"], lp.get("o_bias")), kv


def mlp_block(spec: ArchSpec, lp: Params, x: jax.Array) -> jax.Array:
    """The gated MLP: act(gate) * up, then down; gate and up from one gate_up_proj where the family fuses them."""
    if spec.fused_gate_up:
        gate, up = jnp.split(linear(x, lp["gate_up_proj"]), 2, axis=-1)
    else:
        gate, up = linear(x, lp["gate_proj"]), linear(x, lp["up_proj"])
    return linear(ACTIVATIONS[spec.activation](gate) * up, lp["down_proj"])


def ffn(spec: ArchSpec, lp: Params, x: jax.Array) -> jax.Array:
    """The layer's feed-forward part: the gated MLP, or routed experts plus (Qwen2-MoE) a gated shared expert."""
    if not spec.num_experts:
        return mlp_block(spec, lp, x)
    out = moe_block(spec, lp, x, ACTIVATIONS[spec.activation])
    if spec.shared_expert_size:
        gate = jax.nn.sigmoid(linear(x, lp["shared_expert_gate"]))
        out = out + gate * mlp_block(spec, lp, x)
    return out


def decoder_layer(spec: ArchSpec, lp: Params, h: jax.Array, rope, mask, kv=None, start=None):
    """One decoder layer on the residual stream h [B, S, D]; lp holds this layer's tensors. Pre-norm, and with
    sandwich norms (Gemma 2/3) each block's output is normalised too before it joins the stream."""
    attn, kv = attention_block(spec, lp, norm(spec, h, lp["input_layernorm"]), rope, mask, kv, start)
    if spec.sandwich_norms:
        attn = norm(spec, attn, lp["post_attention_layernorm"])
    h = h + attn
    pre = lp["pre_feedforward_layernorm"] if spec.sandwich_norms else lp["post_attention_layernorm"]
    out = ffn(spec, lp, norm(spec, h, pre))
    if spec.sandwich_norms:
        out = norm(spec, out, lp["post_feedforward_layernorm"])
    return h + out, kv
