"""The Gemma family: Gemma, Gemma 2, Gemma 3 (text), as transformers 5 defines them.

All three: (1 + w) RMSNorm gains applied in float32, tanh-approximated GeLU, embeddings scaled by
sqrt(hidden_size), tied embeddings by default. Gemma 2 adds sandwich norms (each block's output normalised
before it joins the stream), attention and final logit soft-capping, query_pre_attn_scalar, and alternating
sliding / global layers. Gemma 3 adds per-head q/k norms, a 5:1 local/global pattern, its own RoPE base on
local layers and (4B and up) linear RoPE scaling on global ones; transformers ignores its
`attn_logit_softcapping`, and so does jaxmerge (the key is kept).
"""
from __future__ import annotations

from typing import Any

from jaxmerge.errors import expect
from jaxmerge.families.keys import COMMON_KEYS, check_architecture, dims, write_dims
from jaxmerge.families.llama import FULL, SLIDING, attention_extras, llama_layers, window_types
from jaxmerge.families.record import Family
from jaxmerge.families.rope import read_rope, rope_dict, write_rope

GELU = "gelu_pytorch_tanh"
FIXED = {"attention_dropout": 0.0, "use_bidirectional_attention": False}
SANDWICH = {"pre_norms": ("input_layernorm", "pre_feedforward_layernorm"),
            "residual_writers": ("post_attention_layernorm", "post_feedforward_layernorm")}
GEMMA2_KEYS = COMMON_KEYS | {"attention_bias", "hidden_activation", "query_pre_attn_scalar", "sliding_window",
                             "layer_types", "final_logit_softcapping", "attn_logit_softcapping"}


def _activation(cfg: dict, where: str, key: str) -> None:
    found = cfg.get(key)
    expect(found in (GELU, "gelu", None) if key == "hidden_act" else found in (GELU, None),
           f"{where}: {key} must be {GELU!r} (the only activation of this family), found {found!r}")


def common(cfg: dict, where: str, architecture: str, key: str) -> dict[str, Any]:
    """What every Gemma reads the same way: sizes, the activation, biases, and the Gemma switches."""
    check_architecture(cfg, architecture, where)
    _activation(cfg, where, key)
    bias = bool(cfg.get("attention_bias", False))
    return {**dims(cfg, where), "qkv_bias": bias, "o_bias": bias, "norm_offset": True, "activation": "gelu_tanh",
            "embed_scale": True}


def _gemma(cfg: dict, where: str) -> dict:
    _activation(cfg, where, "hidden_activation")
    params, theta = rope_dict(cfg)
    return {**common(cfg, where, "GemmaForCausalLM", "hidden_act"),
            **read_rope(params, theta, where, ("default", "linear"))}


def _caps(cfg: dict, where: str) -> dict[str, Any]:
    """Gemma 2/3's switches: the query scale, the final soft-cap, and the window of the sliding layers."""
    final = cfg.get("final_logit_softcapping")
    scalar = cfg.get("query_pre_attn_scalar")
    ok = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0) for v in (final, scalar))
    expect(ok, f"{where}: final_logit_softcapping and query_pre_attn_scalar must be positive numbers or null, "
               f"found {final!r} and {scalar!r}")
    return {"sandwich_norms": True, "query_scale": None if scalar is None else float(scalar),
            "final_softcap": None if final is None else float(final)}


def _gemma2(cfg: dict, where: str) -> dict:
    _activation(cfg, where, "hidden_act")
    attn = cfg.get("attn_logit_softcapping")
    expect(attn is None or (isinstance(attn, (int, float)) and attn > 0),
           f"{where}: attn_logit_softcapping must be a positive number or null, found {attn!r}")
    n = int(cfg["num_hidden_layers"])
    types = cfg.get("layer_types") or [SLIDING if (i + 1) % 2 else FULL for i in range(n)]
    params, theta = rope_dict(cfg)
    return {**common(cfg, where, "Gemma2ForCausalLM", "hidden_activation"), **_caps(cfg, where),
            **window_types({**cfg, "layer_types": types}, where, cfg.get("sliding_window"), 0),
            "attn_softcap": None if attn is None else float(attn),
            **read_rope(params, theta, where, ("default", "linear"))}


def _gemma3_rope(cfg: dict, where: str) -> dict[str, Any]:
    """v5: rope_parameters keyed by layer type; v4: rope_theta + rope_scaling (global) and rope_local_base_freq."""
    params = cfg.get("rope_parameters") or {}
    expect(not params or set(params) <= {FULL, SLIDING},
           f"{where}: rope_parameters of gemma3_text must be keyed by layer type ({FULL!r}, {SLIDING!r}), "
           f"found keys {sorted(params)[:4]}")
    full = params.get(FULL) or dict(cfg.get("rope_scaling") or {})
    local = dict(params.get(SLIDING) or {"rope_theta": cfg.get("rope_local_base_freq", 10000.0)})
    out = read_rope(full, float(cfg.get("rope_theta", 1e6)), where, ("default", "linear"))
    local_rope = read_rope(local, 10000.0, where, ("default",))
    return {**out, "local_rope_theta": local_rope["rope_theta"]}


def _gemma3(cfg: dict, where: str) -> dict:
    n = int(cfg["num_hidden_layers"])
    pattern = cfg.get("sliding_window_pattern", 6)
    expect(isinstance(pattern, int) and pattern > 0, f"{where}: sliding_window_pattern must be a positive "
                                                     f"integer, found {pattern!r}")
    types = cfg.get("layer_types") or [SLIDING if (i + 1) % pattern else FULL for i in range(n)]
    return {**common(cfg, where, "Gemma3ForCausalLM", "hidden_activation"), **_caps(cfg, where),
            **window_types({**cfg, "layer_types": types}, where, cfg.get("sliding_window"), 0),
            **_gemma3_rope(cfg, where), "qk_norm": True}


def sandwich_layers(spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Gemma 2/3: the Llama layer's tensors plus the pre- and post-feedforward norms (post_attention_layernorm
    is then the norm of the attention output)."""
    d = spec.hidden_size
    out = {k: v for k, v in llama_layers(spec).items() if k not in attention_extras(spec)}
    out["pre_feedforward_layernorm"] = ("pre_feedforward_layernorm.weight", (d,))
    out["post_feedforward_layernorm"] = ("post_feedforward_layernorm.weight", (d,))
    return {**out, **attention_extras(spec)}


def _write(spec) -> dict[str, Any]:
    return {**write_dims(spec), "rope_parameters": write_rope(spec), "attention_bias": spec.qkv_bias,
            "hidden_activation": GELU}


def _write2(spec) -> dict[str, Any]:
    scalar = spec.query_scale
    scalar = int(scalar) if scalar is not None and float(scalar).is_integer() else scalar
    return {**_write(spec), "query_pre_attn_scalar": scalar, "final_logit_softcapping": spec.final_softcap,
            "attn_logit_softcapping": spec.attn_softcap, "sliding_window": spec.sliding_window,
            "layer_types": list(spec.attention_types)}


def _write3(spec) -> dict[str, Any]:
    local = {"rope_type": "default", "rope_theta": spec.local_rope_theta}
    out = {**_write2(spec), "rope_parameters": {FULL: write_rope(spec), SLIDING: local}}
    out.pop("attn_logit_softcapping")
    return out


GEMMA_DEFAULTS = {"num_key_value_heads": 16, "head_dim": 256, "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
                  "max_position_embeddings": 8192}
GEMMA = Family("gemma", "GemmaForCausalLM", COMMON_KEYS | {"attention_bias", "hidden_act"}, _gemma,
               lambda s: {**_write(s), "hidden_act": GELU}, llama_layers, FIXED, GEMMA_DEFAULTS,
               kept=frozenset({"hidden_activation"}))
GEMMA2 = Family("gemma2", "Gemma2ForCausalLM", GEMMA2_KEYS, _gemma2, _write2, sandwich_layers, FIXED,
                {**GEMMA_DEFAULTS, "num_key_value_heads": 4, "query_pre_attn_scalar": 256, "sliding_window": 4096,
                 "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
                layer_types_key=True, kept=frozenset({"hidden_act", "sliding_window_size"}), **SANDWICH)
GEMMA3 = Family("gemma3_text", "Gemma3ForCausalLM",
                GEMMA2_KEYS | {"rope_local_base_freq", "sliding_window_pattern"}, _gemma3, _write3,
                sandwich_layers, FIXED,
                {**GEMMA_DEFAULTS, "num_key_value_heads": 4, "query_pre_attn_scalar": 256, "sliding_window": 4096,
                 "max_position_embeddings": 131072}, layer_types_key=True,
                kept=frozenset({"hidden_act", "attn_logit_softcapping", "_sliding_window_pattern"}), **SANDWICH)
