"""Phi-3 / Phi-4 (`Phi3ForCausalLM`): the Llama layer with q, k, v fused into one qkv_proj and gate, up into one
gate_up_proj (stored as they are: mergekit merges them as one tensor each), longrope scaling (short factors up
to `original_max_position_embeddings`, long ones beyond, cos/sin times the attention factor), a partial rotary
factor (Phi-4-mini rotates 3/4 of each head), and one sliding window for every layer where the config has one.
"""
from __future__ import annotations

from typing import Any

from jaxmerge.errors import expect
from jaxmerge.families.keys import COMMON_KEYS, check_architecture, dims, write_dims
from jaxmerge.families.llama import window_types
from jaxmerge.families.record import Family
from jaxmerge.families.rope import read_rope, write_rope

KEYS = COMMON_KEYS | {"original_max_position_embeddings", "sliding_window", "partial_rotary_factor"}
FIXED = {"hidden_act": "silu", "attention_dropout": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}


def _rope(cfg: dict, where: str) -> dict[str, Any]:
    """Phi3Config's reading: `su` and `yarn` mean longrope, the top-level original_max_position_embeddings wins
    over the rope dict's, and a top-level partial_rotary_factor is the rope's."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    kind = params.pop("rope_type", params.pop("type", "default"))
    params["rope_type"] = "longrope" if kind in ("su", "yarn") else kind
    params.setdefault("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if params["rope_type"] == "longrope":
        params["original_max_position_embeddings"] = int(cfg.get("original_max_position_embeddings", 4096))
    return read_rope(params, float(cfg.get("rope_theta", 10000.0)), where, ("default", "longrope"), partial=True,
                     max_position=int(cfg.get("max_position_embeddings", 4096)))


def _phi3(cfg: dict, where: str) -> dict:
    check_architecture(cfg, "Phi3ForCausalLM", where)
    fields = {**dims(cfg, where), **_rope(cfg, where), "fused_qkv": True, "fused_gate_up": True}
    rotary = int(fields["head_dim"] * fields["partial_rotary"])
    expect(rotary % 2 == 0 and rotary > 0, f"{where}: partial_rotary_factor must rotate an even number of each "
                                           f"head's {fields['head_dim']} features, found {rotary}")
    short = fields.get("rope_short_factor", ())
    expect(not short or len(short) == rotary // 2, f"{where}: short_factor and long_factor must have "
                                                   f"{rotary // 2} entries (rotary dim / 2), found {len(short)}")
    window = cfg.get("sliding_window")
    return {**fields, **window_types({**cfg, "layer_types": None}, where, window, 0),
            "rope_original_max_position": int(cfg.get("original_max_position_embeddings", 4096))}


def _layers(spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    d, f, q, kv = spec.hidden_size, spec.intermediate_size, spec.q_size, spec.kv_size
    return {"input_layernorm": ("input_layernorm.weight", (d,)),
            "qkv_proj": ("self_attn.qkv_proj.weight", (q + 2 * kv, d)),
            "o_proj": ("self_attn.o_proj.weight", (d, q)),
            "post_attention_layernorm": ("post_attention_layernorm.weight", (d,)),
            "gate_up_proj": ("mlp.gate_up_proj.weight", (2 * f, d)), "down_proj": ("mlp.down_proj.weight", (d, f))}


def _write(spec) -> dict[str, Any]:
    rope = write_rope(spec)
    return {**write_dims(spec), "rope_parameters": rope, "hidden_act": "silu", "sliding_window": spec.sliding_window,
            "original_max_position_embeddings": spec.rope_original_max_position}


PHI3 = Family("phi3", "Phi3ForCausalLM", KEYS, _phi3, _write, _layers, FIXED,
              {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096})
