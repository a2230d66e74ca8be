"""Family records <-> config.json, with transformers' config classes (and its RoPE init functions) as the oracle
of what a config means: real-world configs (tests/data/configs), the tiny all-features configs, our written
configs read back by transformers; unsupported features refused by key name."""
import json
from pathlib import Path

import numpy as np
import pytest
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from jaxmerge.arch import SLIDING, ArchSpec
from jaxmerge.errors import JaxmergeError
from jaxmerge.rope import inv_frequencies, kind_spec
from tests.tiny import CONFIGS, FULL_FEATURES, make_config

DATA = Path(__file__).parent / "data" / "configs"
NEW = ("gemma", "gemma2", "gemma3_text", "phi3", "mixtral", "qwen2_moe", "qwen3_moe")
REAL_WORLD = sorted(p.name for p in DATA.glob("*.json") if json.loads(p.read_text())["model_type"] in NEW)
UNIFORM_WINDOW = ("phi3", "mixtral", "qwen3_moe")  # one window for every layer, where the config has one


def hf_types(family, config) -> list[str]:
    if family in UNIFORM_WINDOW:
        return [SLIDING if config.sliding_window is not None else "full_attention"] * config.num_hidden_layers
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def hf_rope(config, kind=None) -> tuple[list, float]:
    """transformers' inverse frequencies and attention factor for layers of type `kind`."""
    params = config.rope_parameters[kind] if kind else config.rope_parameters
    if params["rope_type"] == "default":
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        base, dim = params["rope_theta"], int(head * params.get("partial_rotary_factor", 1.0))
        return (1.0 / base ** (np.arange(0, dim, 2) / dim)).astype(np.float32).tolist(), 1.0
    inv, factor = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, None, **({"layer_type": kind} if kind else {}))
    return inv.numpy().tolist(), float(factor)


def hf_view(family: str, config) -> dict:
    """The numbers transformers' modeling code reads from a config object (the oracle)."""
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", 0)
    kinds = sorted(set(hf_types(family, config))) if family == "gemma3_text" else [None]
    return dict(
        layers=config.num_hidden_layers, heads=config.num_attention_heads, kv=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        eps=config.rms_norm_eps, tied=config.tie_word_embeddings, vocab=config.vocab_size,
        types=hf_types(family, config), window=config.sliding_window if SLIDING in hf_types(family, config) else None,
        rope={k: hf_rope(config, k) for k in kinds}, final_cap=getattr(config, "final_logit_softcapping", None),
        attn_cap=getattr(config, "attn_logit_softcapping", None) if family == "gemma2" else None,
        query=getattr(config, "query_pre_attn_scalar", None), experts=experts,
        top_k=getattr(config, "num_experts_per_tok", 0) if experts else 0,
        expert_size=(config.intermediate_size if family == "mixtral" else getattr(config, "moe_intermediate_size", 0))
        if experts else 0,
        norm_topk=True if family == "mixtral" else bool(getattr(config, "norm_topk_prob", False)),
        shared=getattr(config, "shared_expert_intermediate_size", 0) if family == "qwen2_moe" else 0)


def spec_view(spec: ArchSpec) -> dict:
    kinds = sorted(set(spec.attention_types)) if spec.model_type == "gemma3_text" else [None]
    rope = {k: (np.asarray(inv_frequencies(kind_spec(spec, k or "full_attention"))).tolist(),
                kind_spec(spec, k or "full_attention").rope_attention_factor) for k in kinds}
    return dict(layers=spec.num_layers, heads=spec.num_heads, kv=spec.num_kv_heads, head_dim=spec.head_dim,
                eps=spec.rms_norm_eps, tied=spec.tie_word_embeddings, vocab=spec.vocab_size,
                types=list(spec.attention_types),
                window=spec.sliding_window if SLIDING in spec.attention_types else None, rope=rope,
                final_cap=spec.final_softcap, attn_cap=spec.attn_softcap, query=spec.query_scale,
                experts=spec.num_experts, top_k=spec.experts_per_token, expert_size=spec.expert_size,
                norm_topk=spec.norm_topk if spec.num_experts else False, shared=spec.shared_expert_size)


def same(a: dict, b: dict) -> None:
    """Equal views; RoPE frequencies to float32 rounding (transformers computes them in torch float32)."""
    for key in a:
        if key == "rope":
            assert a[key].keys() == b[key].keys()
            for kind in a[key]:
                np.testing.assert_allclose(a[key][kind][0], b[key][kind][0], rtol=2e-6, err_msg=str(kind))
                assert a[key][kind][1] == pytest.approx(b[key][kind][1], rel=1e-12)
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("name", REAL_WORLD)
def test_real_world_configs_read_as_transformers_reads_them(name):
    raw = json.loads((DATA / name).read_text())
    spec = ArchSpec.from_hf_config(raw, name)
    same(spec_view(spec), hf_view(raw["model_type"], CONFIGS[raw["model_type"]].from_dict(raw)))
    again = ArchSpec.from_hf_config(spec.to_hf_config())
    assert again.replace(inert=()) == spec.replace(inert=())
    same(hf_view(raw["model_type"], CONFIGS[raw["model_type"]].from_dict(spec.to_hf_config())), spec_view(spec))


def test_real_world_spot_checks():
    """Facts about well-known checkpoints, written down independently of both readers."""
    load = lambda name: ArchSpec.from_hf_config(json.loads((DATA / name).read_text()))  # noqa: E731
    g2 = load("gemma-2-9b.json")
    assert g2.attention_types[:2] == ("sliding_attention", "full_attention") and g2.sliding_window == 4096
    assert (g2.attn_softcap, g2.final_softcap, g2.query_scale, g2.tie_word_embeddings) == (50.0, 30.0, 256, True)
    g3 = load("gemma-3-4b-text.json")
    assert g3.attention_types[:6].count("sliding_attention") == 5 and g3.attention_types[5] == "full_attention"
    assert (g3.rope_type, g3.rope_factor, g3.rope_theta, g3.local_rope_theta) == ("linear", 8.0, 1e6, 1e4)
    phi = load("phi-3-mini-128k-instruct.json")
    assert (phi.rope_type, phi.rope_original_max_position, phi.fused_qkv) == ("longrope", 4096, True)
    assert phi.rope_attention_factor == pytest.approx((1 + np.log(32) / np.log(4096)) ** 0.5)
    assert load("phi-4-mini-instruct.json").rotary_dim == 96 and load("phi-4.json").rope_type == "default"
    mix = load("mixtral-8x7b-v0.1.json")
    assert (mix.num_experts, mix.experts_per_token, mix.expert_size, mix.norm_topk) == (8, 2, 14336, True)
    q3 = load("qwen3-30b-a3b.json")
    assert (q3.num_experts, q3.experts_per_token, q3.expert_size, q3.norm_topk, q3.qk_norm) == (128, 8, 768, True, True)
    q15 = load("qwen1.5-moe-a2.7b.json")
    assert (q15.shared_expert_size, q15.qkv_bias, q15.sliding_window, q15.norm_topk) == (5632, True, None, False)


@pytest.mark.parametrize("family", NEW)
def test_tiny_configs_transformers_writes_read_and_round_trip(family):
    config = make_config(family, **FULL_FEATURES[family])
    for written in (json.loads(config.to_json_string(use_diff=True)), config.to_dict()):
        spec = ArchSpec.from_hf_config(written)
        same(spec_view(spec), hf_view(family, config))
    ours = spec.to_hf_config()
    same(hf_view(family, CONFIGS[family].from_dict(ours)), spec_view(spec))
    assert ArchSpec.from_hf_config(ours).replace(inert=()) == spec.replace(inert=())


def _bad(family, **changes):
    cfg = make_config(family, **FULL_FEATURES[family]).to_dict()
    cfg.update(changes)
    return cfg


BAD = {
    "bidirectional": (_bad("gemma3_text", use_bidirectional_attention=True), "use_bidirectional_attention"),
    "gemma activation": (_bad("gemma2", hidden_activation="relu"), "hidden_activation"),
    "gemma3 flat rope": (_bad("gemma3_text", rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
                         "rope_parameters"),
    "gemma3 local scaling": (_bad("gemma3_text", rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}), "rope_type"),
    "chunked layers": (_bad("gemma2", layer_types=["chunked_attention"] * 3), "layer_types"),
    "dense layers in a mixture": (_bad("qwen2_moe", mlp_only_layers=[1]), "mlp_only_layers"),
    "sparse step": (_bad("qwen3_moe", decoder_sparse_step=2), "decoder_sparse_step"),
    "top-k above experts": (_bad("mixtral", num_experts_per_tok=5), "num_experts_per_tok"),
    "mixtral activation": (_bad("mixtral", hidden_act="gelu"), "hidden_act"),
    "phi3 rope": (_bad("phi3", rope_parameters={"rope_type": "dynamic", "factor": 2.0}), "dynamic"),
    "phi3 factors": (_bad("phi3", rope_parameters={"rope_type": "longrope", "short_factor": [1.0],
                                                   "long_factor": [1.0]}), "short_factor"),
    "phi3 dropout": (_bad("phi3", resid_pdrop=0.1), "resid_pdrop"),
    "llama partial rotary": ({**make_config("llama").to_dict(), "rope_parameters": {
        "rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}, "partial_rotary_factor"),
}


@pytest.mark.parametrize("name", BAD)
def test_unsupported_features_are_refused_by_key(name):
    cfg, key = BAD[name]
    with pytest.raises(JaxmergeError, match=key) as info:
        ArchSpec.from_hf_config(cfg)
    assert "\n" not in str(info.value)
