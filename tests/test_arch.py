"""ArchSpec <-> HF config.json, with the transformers config classes as the oracle of what a config means."""
import json
from pathlib import Path

import pytest
import torch
import transformers

from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError
from jaxmerge.params import hf_names, param_shapes
from tests.tiny import CONFIGS, make_config

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # the Llama family; tests/test_families.py covers the others
DATA = Path(__file__).parent / "data" / "configs"
REAL_WORLD = sorted(p.name for p in DATA.glob("*.json") if json.loads(p.read_text())["model_type"] in FAMILIES)


def hf_view(family: str, config) -> dict:
    """The numbers transformers' modeling code reads from a config object (the oracle)."""
    rope = config.rope_parameters
    heads = config.num_attention_heads
    return dict(layers=config.num_hidden_layers, heads=heads, kv_heads=config.num_key_value_heads,
                head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                eps=config.rms_norm_eps, tied=config.tie_word_embeddings, theta=float(rope["rope_theta"]),
                rope_type=rope["rope_type"], factor=rope.get("factor"), low=rope.get("low_freq_factor"),
                high=rope.get("high_freq_factor"), orig=rope.get("original_max_position_embeddings"),
                window=config.sliding_window if family == "mistral" else None)


def spec_view(spec: ArchSpec) -> dict:
    scaled, llama3 = spec.rope_type != "default", spec.rope_type == "llama3"
    return dict(layers=spec.num_layers, heads=spec.num_heads, kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
                eps=spec.rms_norm_eps, tied=spec.tie_word_embeddings, theta=spec.rope_theta,
                rope_type=spec.rope_type, factor=spec.rope_factor if scaled else None,
                low=spec.rope_low_freq_factor if llama3 else None,
                high=spec.rope_high_freq_factor if llama3 else None,
                orig=spec.rope_original_max_position if llama3 else None, window=spec.sliding_window)


VARIANTS = [
    {},
    {"num_key_value_heads": 4, "tie_word_embeddings": True},
    {"num_key_value_heads": 1, "head_dim": 16, "rms_norm_eps": 1e-6},
    {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e4}},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=range(len(VARIANTS)))
@pytest.mark.parametrize("family", FAMILIES)
def test_configs_transformers_writes_load(family, variant):
    config = make_config(family, **variant)
    for written in (json.loads(config.to_json_string(use_diff=True)), config.to_dict()):
        assert spec_view(ArchSpec.from_hf_config(written)) == hf_view(family, config)


@pytest.mark.parametrize("name", REAL_WORLD)
def test_real_world_configs_load_as_transformers_reads_them(name):
    raw = json.loads((DATA / name).read_text())
    spec = ArchSpec.from_hf_config(raw, name)
    config = CONFIGS[raw["model_type"]].from_dict(raw)
    assert spec_view(spec) == hf_view(raw["model_type"], config)
    assert spec.vocab_size == raw["vocab_size"] and spec.intermediate_size == raw["intermediate_size"]


def test_real_world_spot_checks():
    """A few facts about well-known checkpoints, written down independently of both readers."""
    load = lambda name: ArchSpec.from_hf_config(json.loads((DATA / name).read_text()))  # noqa: E731
    l32 = load("llama3.2-1b.json")
    assert (l32.head_dim, l32.tie_word_embeddings, l32.rope_type, l32.rope_factor) == (64, True, "llama3", 32.0)
    assert load("mistral-nemo-12b.json").head_dim == 128  # not 5120 / 32
    assert load("mistral-7b-v0.1.json").sliding_window == 4096
    assert load("mistral-7b-instruct-v0.3.json").sliding_window is None
    q25 = load("qwen2.5-7b-instruct.json")
    assert (q25.qkv_bias, q25.o_bias, q25.sliding_window, q25.rope_theta) == (True, False, None, 1e6)
    q3 = load("qwen3-8b.json")
    assert (q3.qk_norm, q3.qkv_bias, q3.head_dim) == (True, False, 128)


@pytest.mark.parametrize("family", FAMILIES)
def test_absent_keys_mean_what_transformers_assumes(family):
    """Mistral defaults to 8 kv heads and a 4096 window, Qwen to 32 kv heads, Qwen3 to head_dim 128."""
    minimal = dict(model_type=family, vocab_size=97, hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=32)
    config = CONFIGS[family].from_dict(minimal)
    assert spec_view(ArchSpec.from_hf_config(minimal)) == hf_view(family, config)


def test_v4_and_v5_spellings_mean_the_same():
    rope = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    base = {k: v for k, v in make_config("llama").to_dict().items() if k not in ("rope_parameters", "dtype")}
    v4 = {**base, "torch_dtype": "bfloat16", "rope_theta": 5e5, "rope_scaling": {**rope, "rope_type": "llama3"}}
    old = {**base, "rope_theta": 5e5, "rope_scaling": {**rope, "type": "llama3"}}  # pre-4.45 spelling
    v5 = {**base, "dtype": "bfloat16", "rope_parameters": {**rope, "rope_type": "llama3", "rope_theta": 5e5}}
    specs = [ArchSpec.from_hf_config(c).replace(inert=()) for c in (v4, old, v5)]
    assert specs[0] == specs[1] == specs[2]
    assert (specs[0].rope_type, specs[0].rope_theta, specs[0].rope_original_max_position) == ("llama3", 5e5, 64)


@pytest.mark.parametrize("family", FAMILIES)
def test_to_hf_config_round_trips_and_transformers_agrees(family):
    spec = ArchSpec.from_hf_config(make_config(family, attention_bias=family != "mistral",
                                               rope_parameters={"rope_type": "linear", "factor": 3.0}).to_dict())
    written = spec.to_hf_config()
    again = ArchSpec.from_hf_config(written)
    assert again.replace(inert=()) == spec.replace(inert=()) and again.to_hf_config() == written
    assert hf_view(family, CONFIGS[family].from_dict(written)) == spec_view(spec)


SHAPE_CASES = [("llama", {}), ("llama", {"attention_bias": True, "tie_word_embeddings": True}),
               ("mistral", {"head_dim": 16}), ("qwen2", {"num_key_value_heads": 1}), ("qwen3", {}),
               ("qwen3", {"attention_bias": True, "head_dim": 16})]


@pytest.mark.parametrize("family,overrides", SHAPE_CASES)
def test_param_shapes_are_the_transformers_tensors(family, overrides):
    """Canonical leaves <-> HF tensor names and shapes, e.g. qwen3 attention_bias also biases o_proj."""
    config = make_config(family, num_hidden_layers=2, **overrides)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    hf = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        hf.pop("lm_head.weight")
    spec = ArchSpec.from_hf_config(config.to_dict())
    shapes = param_shapes(spec)
    ours = {n: shapes[t.leaf] if t.section == "global" else shapes["layers"][t.leaf][1:]
            for n, t in hf_names(spec).items()}
    assert ours == hf


def _bad(**changes):
    cfg = make_config("llama").to_dict()
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if v is not KeyError}


BAD = {
    "unknown key": (_bad(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    "rope type": (_bad(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "yarn"),
    "rope keys": (_bad(rope_parameters={"rope_type": "llama3", "factor": 8.0}), "low_freq_factor"),
    "family": (_bad(model_type="gpt_neox"), "model_type"),
    "wrong family": (_bad(model_type="gemma"), "mlp_bias"),  # a Llama config that claims to be Gemma
    "activation": (_bad(hidden_act="gelu"), "hidden_act"),
    "mlp bias": (_bad(mlp_bias=True), "mlp_bias"),
    "missing": (_bad(vocab_size=KeyError), "vocab_size"),
    "gqa": (_bad(num_key_value_heads=3), "num_key_value_heads"),
    "not a number": (_bad(hidden_size="big"), "hidden_size"),
    "sliding layers": ({**make_config("qwen2").to_dict(), "layer_types": ["sliding_attention"] * 3},
                       "layer_types"),
    "qwen window": ({**make_config("qwen3").to_dict(), "use_sliding_window": True, "sliding_window": -1},
                    "sliding_window"),
    "llama window": (_bad(use_sliding_window=True), "use_sliding_window"),
    "mistral bias": ({**make_config("mistral").to_dict(), "attention_bias": True}, "attention_bias"),
    "classifier head": (_bad(architectures=["LlamaForSequenceClassification"]), "architectures"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_configs_are_refused_by_key(name):
    cfg, key = BAD[name]
    with pytest.raises(JaxmergeError, match=key) as info:
        ArchSpec.from_hf_config(cfg)
    assert "\n" not in str(info.value)


def test_from_dir_refuses_missing_or_invalid_json(tmp_path):
    with pytest.raises(JaxmergeError, match="config.json"):
        ArchSpec.from_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(JaxmergeError, match="valid JSON"):
        ArchSpec.from_dir(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(JaxmergeError, match="JSON object"):
        ArchSpec.from_dir(tmp_path)
