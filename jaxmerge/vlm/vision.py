"""The CLIP vision tower and the LLaVA projector, as pure functions of (spec, params, pixels).

Params keep transformers' tensor names (after the vision-tower / projector prefix) and HF layouts; the vision
layers are stacked on a leading axis under "layers" and scanned. Numerics follow transformers' CLIP: LayerNorm
with bias, attention over every token with scale head_dim ** -0.5 and a float32 softmax, quick-GELU MLP. The
hidden states are counted as transformers does: index 0 is the embeddings after the pre-norm, index i the output
of layer i; only the layers up to the deepest selected one run. The vision tower is never merged: its features
depend on the image alone, which is why a fitness can compute them once per item.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmerge.layers import linear
from jaxmerge.vlm.config import VisionSpec, VLMSpec

ACTIVATIONS = {"quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
               "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


def vision_shapes(vs: VisionSpec) -> dict:
    """Local tensor name -> shape of the vision tower; per-layer tensors under "layers" with their layer axis."""
    d, f, p = vs.hidden_size, vs.intermediate_size, vs.patch_size
    layer = {"layer_norm1.weight": (d,), "layer_norm1.bias": (d,), "layer_norm2.weight": (d,),
             "layer_norm2.bias": (d,), "mlp.fc1.weight": (f, d), "mlp.fc1.bias": (f,), "mlp.fc2.weight": (d, f),
             "mlp.fc2.bias": (d,)}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer.update({f"self_attn.{proj}.weight": (d, d), f"self_attn.{proj}.bias": (d,)})
    return {"embeddings.class_embedding": (d,), "embeddings.patch_embedding.weight": (d, vs.num_channels, p, p),
            "embeddings.position_embedding.weight": (vs.num_patches + 1, d), "pre_layrnorm.weight": (d,),
            "pre_layrnorm.bias": (d,), "post_layernorm.weight": (d,), "post_layernorm.bias": (d,),
            "layers": {k: (vs.num_layers, *s) for k, s in layer.items()}}


def projector_shapes(spec: VLMSpec) -> dict:
    d_in, d = spec.vision.hidden_size * len(spec.feature_layers), spec.text.hidden_size
    out = {"linear_1.weight": (d, d_in), "linear_2.weight": (d, d)}
    if spec.projector_bias:
        out.update({"linear_1.bias": (d,), "linear_2.bias": (d,)})
    return out


def layer_norm(x, weight, bias, eps):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps) * weight + bias).astype(x.dtype)


def embeddings(vs: VisionSpec, vp, pixels):
    """Patch embedding (a stride-p convolution as one matmul over flattened patches), class token, positions."""
    b, c, h, w = pixels.shape
    p, d = vs.patch_size, vs.hidden_size
    weight = vp["embeddings.patch_embedding.weight"]
    patches = pixels.astype(weight.dtype).reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    x = linear(patches.reshape(b, (h // p) * (w // p), c * p * p), weight.reshape(d, c * p * p))
    cls = jnp.broadcast_to(vp["embeddings.class_embedding"], (b, 1, d)).astype(x.dtype)
    return jnp.concatenate([cls, x], axis=1) + vp["embeddings.position_embedding.weight"]


def encoder_layer(vs: VisionSpec, lp, h):
    """Pre-norm attention over every token, then the MLP; both with biases."""
    b, n, d = h.shape
    heads, hd = vs.num_heads, d // vs.num_heads
    x = layer_norm(h, lp["layer_norm1.weight"], lp["layer_norm1.bias"], vs.layer_norm_eps)
    q, k, v = (linear(x, lp[f"self_attn.{p}.weight"], lp[f"self_attn.{p}.bias"]).reshape(b, n, heads, hd)
               for p in ("q_proj", "k_proj", "v_proj"))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(hd)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    attn = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, d)
    h = h + linear(attn, lp["self_attn.out_proj.weight"], lp["self_attn.out_proj.bias"])
    x = layer_norm(h, lp["layer_norm2.weight"], lp["layer_norm2.bias"], vs.layer_norm_eps)
    x = ACTIVATIONS[vs.activation](linear(x, lp["mlp.fc1.weight"], lp["mlp.fc1.bias"]))
    return h + linear(x, lp["mlp.fc2.weight"], lp["mlp.fc2.bias"])


def hidden_states(vs: VisionSpec, vp, pixels, depth: int):
    """[depth + 1, B, N + 1, D]: the pre-normed embeddings and the outputs of the first `depth` layers."""
    h = embeddings(vs, vp, pixels)
    h = layer_norm(h, vp["pre_layrnorm.weight"], vp["pre_layrnorm.bias"], vs.layer_norm_eps)
    layers = jax.tree.map(lambda a: a[:depth], vp["layers"])
    _, ys = jax.lax.scan(lambda h, lp: (encoder_layer(vs, lp, h),) * 2, h, layers)
    return jnp.concatenate([h[None], ys], axis=0)


def projector(spec: VLMSpec, pp, x):
    x = ACTIVATIONS[spec.projector_act](linear(x, pp["linear_1.weight"], pp.get("linear_1.bias")))
    return linear(x, pp["linear_2.weight"], pp.get("linear_2.bias"))


def image_features(spec: VLMSpec, vp, pp, pixels):
    """pixels [B, C, H, W] -> projected features [B, tokens_per_tile, text hidden]: the selected hidden states
    (class token dropped under the "default" strategy), concatenated on the feature axis, then the projector."""
    states = hidden_states(spec.vision, vp, pixels, max(spec.feature_layers))
    start = 0 if spec.full else 1
    x = jnp.concatenate([states[i][:, start:] for i in spec.feature_layers], axis=-1)
    return projector(spec, pp, x)


image_features_jit = jax.jit(image_features, static_argnums=0)
