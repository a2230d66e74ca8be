"""The Llama family: Llama, Mistral, Qwen2, Qwen3 (pre-norm, SiLU-gated MLP, rotate-half RoPE, GQA).

Differences are data: Qwen2 always biases q/k/v, Llama and Qwen3 bias q/k/v/o with `attention_bias`, Qwen3
normalises q and k per head, Mistral slides every layer's window, Qwen2/Qwen3 slide the layers from
`max_window_layers` on when `use_sliding_window` is set (or as `layer_types` says).
"""
from __future__ import annotations

from typing import Any

from jaxmerge.errors import expect
from jaxmerge.families.keys import COMMON_KEYS, check_architecture, dims, write_dims
from jaxmerge.families.record import Family
from jaxmerge.families.rope import read_rope, rope_dict, write_rope

FULL, SLIDING = "full_attention", "sliding_attention"
KEYS = COMMON_KEYS | {"attention_bias", "sliding_window", "layer_types", "use_sliding_window"}
FIXED = {"hidden_act": "silu", "pretraining_tp": 1, "mlp_bias": False, "attention_dropout": 0.0,
         "use_mrope": False, "pruned_heads": {}}
ROPES = ("default", "linear", "llama3")


def base_fields(cfg: dict, where: str, architecture: str) -> dict[str, Any]:
    """Sizes and RoPE, the part every Llama-like family reads the same way."""
    check_architecture(cfg, architecture, where)
    params, theta = rope_dict(cfg)
    return {**dims(cfg, where), **read_rope(params, theta, where, ROPES)}


def all_full(cfg: dict, where: str) -> None:
    """None, or one 'full_attention' per layer (families whose transformers class has no per-layer types)."""
    types = cfg.get("layer_types")
    if types is not None:
        check_types(types, cfg["num_hidden_layers"], where)
        other = sorted({str(t)[:40] for t in types if t != FULL})
        expect(not other, f"{where}: layer_types must all be 'full_attention', found {other}")


def check_types(types: Any, num_layers: int, where: str) -> None:
    expect(isinstance(types, list) and len(types) == num_layers and all(t in (FULL, SLIDING) for t in types),
           f"{where}: layer_types must be a list of {num_layers} entries 'full_attention' / 'sliding_attention' "
           f"(one per layer), found {str(types)[:60]!s}")


def window_types(cfg: dict, where: str, window: int | None, first_sliding: int) -> dict[str, Any]:
    """sliding_window and per-layer types: `layer_types` as given, else sliding from layer `first_sliding` on
    when there is a window (transformers' rule for Qwen2/Qwen3)."""
    n = int(cfg["num_hidden_layers"])
    types = cfg.get("layer_types")
    if types is None:
        types = [SLIDING if window is not None and i >= first_sliding else FULL for i in range(n)]
    check_types(types, n, where)
    expect(window is not None or SLIDING not in types,
           f"{where}: layer_types has sliding_attention layers but no window (use_sliding_window is false or "
           f"sliding_window is null), found layer_types {str(types)[:60]}")
    expect(window is None or (isinstance(window, int) and window > 0),
           f"{where}: sliding_window must be a positive integer, found {window!r}")
    return {"sliding_window": window, "layer_types": () if SLIDING not in types else tuple(types)}


def llama_layers(spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """One layer's tensors: canonical leaf -> (HF suffix, shape), in the order they are written."""
    d, f, q, kv = spec.hidden_size, spec.intermediate_size, spec.q_size, spec.kv_size
    out = {"input_layernorm": ("input_layernorm.weight", (d,)), "q_proj": ("self_attn.q_proj.weight", (q, d)),
           "k_proj": ("self_attn.k_proj.weight", (kv, d)), "v_proj": ("self_attn.v_proj.weight", (kv, d)),
           "o_proj": ("self_attn.o_proj.weight", (d, q)),
           "post_attention_layernorm": ("post_attention_layernorm.weight", (d,)),
           "gate_proj": ("mlp.gate_proj.weight", (f, d)), "up_proj": ("mlp.up_proj.weight", (f, d)),
           "down_proj": ("mlp.down_proj.weight", (d, f))}
    return {**out, **attention_extras(spec)}


def attention_extras(spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """q/k/v biases, the o_proj bias and per-head q/k norms, where the spec has them."""
    q, kv, hd = spec.q_size, spec.kv_size, spec.head_dim
    out = {}
    if spec.qkv_bias:
        out.update(q_bias=("self_attn.q_proj.bias", (q,)), k_bias=("self_attn.k_proj.bias", (kv,)),
                   v_bias=("self_attn.v_proj.bias", (kv,)))
    if spec.o_bias:
        out["o_bias"] = ("self_attn.o_proj.bias", (spec.hidden_size,))
    if spec.qk_norm:
        out.update(q_norm=("self_attn.q_norm.weight", (hd,)), k_norm=("self_attn.k_norm.weight", (hd,)))
    return out


def base_write(spec) -> dict[str, Any]:
    return {**write_dims(spec), "rope_parameters": write_rope(spec), "hidden_act": "silu"}


def _llama(cfg: dict, where: str) -> dict:
    all_full(cfg, where)
    expect(not cfg.get("use_sliding_window"), f"{where}: use_sliding_window must be false for llama (transformers' "
                                              "LlamaForCausalLM has no window), found "
                                              f"{cfg.get('use_sliding_window')!r}")
    bias = bool(cfg.get("attention_bias", False))
    return {**base_fields(cfg, where, "LlamaForCausalLM"), "qkv_bias": bias, "o_bias": bias}


def _mistral(cfg: dict, where: str) -> dict:
    all_full(cfg, where)
    expect(not cfg.get("use_sliding_window"), f"{where}: use_sliding_window must be false for mistral, found "
                                              f"{cfg.get('use_sliding_window')!r}")
    expect(not cfg.get("attention_bias"), f"{where}: attention_bias must be false for mistral (MistralForCausalLM "
                                          f"has no attention biases), found {cfg.get('attention_bias')!r}")
    window = cfg.get("sliding_window")
    fields = window_types({**cfg, "layer_types": None}, where, window, 0)
    return {**base_fields(cfg, where, "MistralForCausalLM"), **fields}


def _qwen(cfg: dict, where: str, architecture: str) -> dict:
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    fields = window_types(cfg, where, window, int(cfg.get("max_window_layers", 28)))
    return {**base_fields(cfg, where, architecture), **fields}


def _qwen2(cfg: dict, where: str) -> dict:
    return {**_qwen(cfg, where, "Qwen2ForCausalLM"), "qkv_bias": True}


def _qwen3(cfg: dict, where: str) -> dict:
    bias = bool(cfg.get("attention_bias", False))
    return {**_qwen(cfg, where, "Qwen3ForCausalLM"), "qkv_bias": bias, "o_bias": bias, "qk_norm": True}


def qwen_window(spec) -> dict[str, Any]:
    """Qwen's window keys: explicit per-layer types, so transformers needs no max_window_layers rule."""
    return dict(use_sliding_window=spec.sliding_window is not None, sliding_window=spec.sliding_window,
                layer_types=list(spec.attention_types))


LLAMA = Family("llama", "LlamaForCausalLM", KEYS, _llama,
               lambda s: {**base_write(s), "attention_bias": s.qkv_bias}, llama_layers, FIXED)
MISTRAL = Family("mistral", "MistralForCausalLM", KEYS, _mistral,
                 lambda s: {**base_write(s), "sliding_window": s.sliding_window}, llama_layers, FIXED,
                 defaults={"num_key_value_heads": 8, "sliding_window": 4096})
QWEN2 = Family("qwen2", "Qwen2ForCausalLM", KEYS, _qwen2, lambda s: {**base_write(s), **qwen_window(s)},
               llama_layers, FIXED, defaults={"num_key_value_heads": 32}, layer_types_key=True)
QWEN3 = Family("qwen3", "Qwen3ForCausalLM", KEYS, _qwen3,
               lambda s: {**base_write(s), **qwen_window(s), "attention_bias": s.qkv_bias}, llama_layers, FIXED,
               defaults={"num_key_value_heads": 32, "head_dim": 128}, layer_types_key=True)
