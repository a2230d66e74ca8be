"""Mixtures of experts: Mixtral, Qwen2-MoE (plus a shared expert behind a sigmoid gate), Qwen3-MoE (q/k norms,
`norm_topk_prob`). Attention is the Llama family's; the MLP of every layer is a router [E, D] and E experts,
held as mergekit 0.1.5 and transformers 5 hold them in memory: experts_gate_up [E, 2F, D] (gate rows, then up
rows) and experts_down [E, D, F]. Checkpoints that transformers' save_pretrained writes keep one tensor per
expert (Mixtral: block_sparse_moe.experts.{e}.w1/w3/w2; Qwen: mlp.experts.{e}.gate_proj/up_proj/down_proj);
`pieces` maps those onto the stacked leaves, so both layouts load, and a model saves in the layout it came in.
Layers without experts (`mlp_only_layers`, `decoder_sparse_step` > 1) are refused: a scanned stack has one
layer shape.
"""
from __future__ import annotations

from typing import Any

from jaxmerge.errors import expect
from jaxmerge.families.keys import COMMON_KEYS, positive_int
from jaxmerge.families.llama import FULL, SLIDING, attention_extras, base_fields, base_write, window_types
from jaxmerge.families.record import Family, Piece

FIXED = {"hidden_act": "silu", "attention_dropout": 0.0, "decoder_sparse_step": 1, "mlp_only_layers": []}
QWEN_KEYS = COMMON_KEYS | {"num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
                           "use_sliding_window", "sliding_window"}


def _experts(cfg: dict, where: str, count: str, size: str) -> dict[str, Any]:
    values = {count: cfg.get(count), "num_experts_per_tok": cfg.get("num_experts_per_tok"), size: cfg.get(size)}
    bad = {k: v for k, v in values.items() if not positive_int(v)}
    expect(not bad, f"{where}: expected positive integers, found {bad}")
    expect(values["num_experts_per_tok"] <= values[count], f"{where}: num_experts_per_tok must be at most {count} "
                                                           f"({values[count]}), found {values['num_experts_per_tok']}")
    return {"num_experts": values[count], "experts_per_token": values["num_experts_per_tok"],
            "expert_size": values[size]}


def _attention(spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    d, q, kv = spec.hidden_size, spec.q_size, spec.kv_size
    return {"input_layernorm": ("input_layernorm.weight", (d,)), "q_proj": ("self_attn.q_proj.weight", (q, d)),
            "k_proj": ("self_attn.k_proj.weight", (kv, d)), "v_proj": ("self_attn.v_proj.weight", (kv, d)),
            "o_proj": ("self_attn.o_proj.weight", (d, q)),
            "post_attention_layernorm": ("post_attention_layernorm.weight", (d,)), **attention_extras(spec)}


def moe_layers(spec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Attention, then the router and the stacked experts (fused names), then a shared expert if there is one."""
    d, e, f, s = spec.hidden_size, spec.num_experts, spec.expert_size, spec.shared_expert_size
    out = {**_attention(spec), "router": ("mlp.gate.weight", (e, d)),
           "experts_gate_up": ("mlp.experts.gate_up_proj", (e, 2 * f, d)),
           "experts_down": ("mlp.experts.down_proj", (e, d, f))}
    if s:
        out.update(gate_proj=("mlp.shared_expert.gate_proj.weight", (s, d)),
                   up_proj=("mlp.shared_expert.up_proj.weight", (s, d)),
                   down_proj=("mlp.shared_expert.down_proj.weight", (d, s)),
                   shared_expert_gate=("mlp.shared_expert_gate.weight", (1, d)))
    return out


def per_expert(prefix: str, gate: str, up: str, down: str, router: str):
    """The per-expert checkpoint layout of a family: tensor names of expert e's gate, up and down projections."""
    def pieces(spec) -> dict[str, tuple[Piece, ...]]:
        d, f = spec.hidden_size, spec.expert_size
        experts = range(spec.num_experts)
        return {"router": (Piece(router, (spec.num_experts, d)),),
                "experts_gate_up": tuple(p for i in experts for p in (
                    Piece(f"{prefix}.{i}.{gate}.weight", (f, d), i, 0),
                    Piece(f"{prefix}.{i}.{up}.weight", (f, d), i, f))),
                "experts_down": tuple(Piece(f"{prefix}.{i}.{down}.weight", (d, f), i, 0) for i in experts)}
    return pieces


def _mixtral(cfg: dict, where: str) -> dict:
    fields = window_types({**cfg, "layer_types": None}, where, cfg.get("sliding_window"), 0)
    return {**base_fields(cfg, where, "MixtralForCausalLM"), **fields, "norm_topk": True,
            **_experts(cfg, where, "num_local_experts", "intermediate_size")}


def _qwen_moe(cfg: dict, where: str, architecture: str, count: str) -> dict[str, Any]:
    return {**base_fields(cfg, where, architecture), **_experts(cfg, where, count, "moe_intermediate_size"),
            "norm_topk": bool(cfg.get("norm_topk_prob", False))}


def _qwen2_moe(cfg: dict, where: str) -> dict:
    """Qwen2MoeConfig's window rule: with use_sliding_window, every other layer below max_window_layers slides."""
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    n, below = int(cfg["num_hidden_layers"]), int(cfg.get("max_window_layers", 28))
    types = cfg.get("layer_types") or [SLIDING if window is not None and (i + 1) % 2 and i < below else FULL
                                       for i in range(n)]
    shared = cfg.get("shared_expert_intermediate_size")
    expect(positive_int(shared), f"{where}: expected a positive shared_expert_intermediate_size, found {shared!r}")
    return {**_qwen_moe(cfg, where, "Qwen2MoeForCausalLM", "num_experts"),
            **window_types({**cfg, "layer_types": types}, where, window, 0), "qkv_bias": bool(cfg.get("qkv_bias")),
            "shared_expert_size": shared}


def _qwen3_moe(cfg: dict, where: str) -> dict:
    """num_experts, or num_local_experts (the attribute Qwen3MoeConfig maps it to, and what it writes)."""
    both = {cfg.get("num_experts"), cfg.get("num_local_experts")} - {None}
    expect(len(both) <= 1, f"{where}: expected num_experts and num_local_experts to agree, found {sorted(both)}")
    cfg = {**cfg, "num_experts": both.pop() if both else 128}
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    bias = bool(cfg.get("attention_bias", False))
    return {**_qwen_moe(cfg, where, "Qwen3MoeForCausalLM", "num_experts"), "qkv_bias": bias, "o_bias": bias,
            "qk_norm": True, **window_types({**cfg, "layer_types": None}, where, window, 0)}


def _write_experts(spec, count: str, size: str) -> dict[str, Any]:
    return {count: spec.num_experts, "num_experts_per_tok": spec.experts_per_token, size: spec.expert_size}


def _write_mixtral(spec) -> dict[str, Any]:
    out = {**base_write(spec), "sliding_window": spec.sliding_window}
    out.update(_write_experts(spec, "num_local_experts", "intermediate_size"))
    return out


def _write_qwen(spec, count: str) -> dict[str, Any]:
    return {**base_write(spec), **_write_experts(spec, count, "moe_intermediate_size"),
            "norm_topk_prob": spec.norm_topk, "use_sliding_window": spec.sliding_window is not None,
            "sliding_window": spec.sliding_window}


def _write_qwen2(spec) -> dict[str, Any]:
    return {**_write_qwen(spec, "num_experts"), "layer_types": list(spec.attention_types), "qkv_bias": spec.qkv_bias,
            "shared_expert_intermediate_size": spec.shared_expert_size}


MOE_WRITERS = ("o_proj", "o_bias", "experts_down", "down_proj")
MIXTRAL = Family("mixtral", "MixtralForCausalLM", COMMON_KEYS | {"num_local_experts", "num_experts_per_tok",
                                                                  "sliding_window"},
                 _mixtral, _write_mixtral, moe_layers, FIXED,
                 {"num_key_value_heads": 8, "rope_theta": 1e6, "num_local_experts": 8, "num_experts_per_tok": 2,
                  "rms_norm_eps": 1e-5, "max_position_embeddings": 4096 * 32},
                 per_expert("block_sparse_moe.experts", "w1", "w3", "w2", "block_sparse_moe.gate.weight"),
                 residual_writers=MOE_WRITERS)
QWEN2_MOE = Family("qwen2_moe", "Qwen2MoeForCausalLM",
                   QWEN_KEYS | {"shared_expert_intermediate_size", "qkv_bias", "layer_types"}, _qwen2_moe,
                   _write_qwen2, moe_layers, FIXED,
                   {"num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4,
                    "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "qkv_bias": True,
                    "max_position_embeddings": 32768},
                   per_expert("mlp.experts", "gate_proj", "up_proj", "down_proj", "mlp.gate.weight"),
                   residual_writers=MOE_WRITERS, layer_types_key=True)
QWEN3_MOE = Family("qwen3_moe", "Qwen3MoeForCausalLM", QWEN_KEYS | {"num_local_experts", "attention_bias"},
                   _qwen3_moe, lambda s: {**_write_qwen(s, "num_experts"), "attention_bias": s.qkv_bias},
                   moe_layers, FIXED,
                   {"num_key_value_heads": 4, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
                    "max_position_embeddings": 32768},
                   per_expert("mlp.experts", "gate_proj", "up_proj", "down_proj", "mlp.gate.weight"),
                   residual_writers=MOE_WRITERS)
