"""`ArchSpec`: the static shape and math of a Llama-family decoder, and its exact conversion to/from HF config.json.

The spec is frozen and hashable so it can be a static argument of jitted functions. Reading a config is strict:
every key is either understood (it sets the math), known to be inert (ids, dtypes, bookkeeping), or checked to
hold the one value we implement. Anything else is refused by name, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.files import MB
from jaxmerge.jsonfile import read_json_object

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
ROPE_TYPES = ("default", "linear", "llama3")
MAX_CONFIG = 4 * MB  # a decoder's config.json is a few kilobytes

# Keys that do not change the forward pass; kept as-is and written back on export.
INERT_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id",
    "pad_token_id", "initializer_range", "use_cache", "_name_or_path", "max_window_layers", "tokenizer_class",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id",
    "bad_words_ids", "chunk_size_feed_forward", "is_encoder_decoder", "problem_type", "tie_encoder_decoder",
    "cache_implementation", "attn_implementation", "_attn_implementation", "_attn_implementation_autoset",
    "unsloth_version", "keys_to_ignore_at_inference",
}) | frozenset({  # bookkeeping and generation defaults that transformers v4 wrote into full config dumps
    "torchscript", "use_bfloat16", "tf_legacy_loss", "is_decoder", "add_cross_attention",
    "cross_attention_hidden_size", "finetuning_task", "prefix", "sep_token_id", "decoder_start_token_id",
    "task_specific_params", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
})
# Keys that must hold exactly this value (the only one implemented).
FIXED_KEYS = {"hidden_act": "silu", "pretraining_tp": 1, "mlp_bias": False, "attention_dropout": 0.0,
              "use_sliding_window": False, "use_mrope": False, "pruned_heads": {}}
# What transformers assumes when a key is absent, where that differs from the generic fallbacks below
# (checked against the transformers config classes in tests/test_arch.py).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"num_key_value_heads": 8, "sliding_window": 4096},
    "qwen2": {"num_key_value_heads": 32},
    "qwen3": {"num_key_value_heads": 32, "head_dim": 128},
}
MATH_KEYS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "tie_word_embeddings", "attention_bias", "max_position_embeddings", "sliding_window", "layer_types",
})


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Everything about a decoder that is static under jit. Field names follow HF where HF has one."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    max_position_embeddings: int = 2048
    sliding_window: int | None = None
    inert: tuple[tuple[str, Any], ...] = ()  # inert HF keys, as hashable (key, json-string) pairs

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def replace(self, **changes) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], where: str = "config.json") -> "ArchSpec":
        return _from_hf(dict(cfg), where)

    def to_hf_config(self) -> dict[str, Any]:
        return _to_hf(self)

    @classmethod
    def from_dir(cls, path: str | Path) -> "ArchSpec":
        """Read `path`/config.json through the guarded JSON reader (bounded size, depth and numbers)."""
        file = Path(path) / "config.json"
        expect(file.exists(), f"expected a config.json in {path}, found none")
        return cls.from_hf_config(read_json_object(file, "config.json", max_bytes=MAX_CONFIG), str(file))


def _rope(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Read RoPE from v5 `rope_parameters` or v4 `rope_theta` + `rope_scaling`."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = params.pop("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    expect(rope_type in ROPE_TYPES, f"{where}: rope_type must be one of {ROPE_TYPES}, found {rope_type!r}")
    out = {"rope_theta": float(theta), "rope_type": rope_type}
    needed = {"default": (), "linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
    missing = [k for k in needed[rope_type] if params.get(k) is None]
    expect(not missing, f"{where}: rope_type {rope_type!r} needs keys {missing}, found them missing")
    if rope_type in ("linear", "llama3"):
        out["rope_factor"] = float(params.pop("factor"))
    if rope_type == "llama3":
        out["rope_low_freq_factor"] = float(params.pop("low_freq_factor"))
        out["rope_high_freq_factor"] = float(params.pop("high_freq_factor"))
        out["rope_original_max_position"] = int(params.pop("original_max_position_embeddings"))
    if params.get("partial_rotary_factor", 1.0) in (None, 1, 1.0):
        params.pop("partial_rotary_factor", None)
    expect(not params, f"{where}: expected no other rope keys, found unsupported {sorted(params)} "
                       "(they change the math)")
    return out


def _check_keys(cfg: dict[str, Any], family: str, where: str) -> None:
    """Every key understood, inert, or holding the one value implemented; required keys present."""
    unknown = sorted(k for k in cfg if k not in INERT_KEYS | MATH_KEYS | set(FIXED_KEYS))
    expect(not unknown, f"{where}: expected only config keys known to jaxmerge, found unsupported {unknown} "
                         "(they may change the math)")
    for key, value in FIXED_KEYS.items():
        found = cfg.get(key, value)
        expect(found == value or (key == "use_sliding_window" and found is None),
               f"{where}: {key} must be {value!r}, found {found!r}")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in cfg]
    expect(not missing, f"{where}: expected keys {missing}, found them missing")
    sizes = (*required, "num_key_value_heads", "head_dim")
    bad = {k: cfg[k] for k in sizes if cfg.get(k) is not None and not _positive_int(cfg[k])}
    expect(not bad, f"{where}: expected positive integers, found {bad}")
    expect(family != "mistral" or not cfg.get("attention_bias"),
           f"{where}: attention_bias must be false for mistral (MistralForCausalLM has no attention biases), "
           f"found {cfg.get('attention_bias')!r}")
    arch = cfg.get("architectures")
    expect(arch in (None, [ARCHITECTURES[family]]),
           f"{where}: architectures must be [{ARCHITECTURES[family]!r}] (a causal LM head), found {arch!r}")
    _check_layer_types(cfg.get("layer_types"), cfg["num_hidden_layers"], where)


def _check_layer_types(layer_types: Any, num_layers: int, where: str) -> None:
    """None, or a list of one 'full_attention' per layer (the only attention implemented)."""
    if layer_types is None:
        return
    expect(isinstance(layer_types, list) and len(layer_types) == num_layers,
           f"{where}: layer_types must be a list of {num_layers} entries (one per layer), found "
           f"{str(layer_types)[:60]!s}")
    other = sorted({str(t)[:40] for t in layer_types if t != "full_attention"})
    expect(not other, f"{where}: layer_types must all be 'full_attention', found {other}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _from_hf(cfg: dict[str, Any], where: str) -> ArchSpec:
    family = cfg.get("model_type")
    expect(family in FAMILIES, f"{where}: model_type must be one of {FAMILIES}, found {family!r}")
    cfg = {**FAMILY_DEFAULTS[family], **cfg}
    _check_keys(cfg, family, where)
    try:
        return _build(cfg, family, where)
    except (TypeError, ValueError) as e:  # e.g. a string where rms_norm_eps or a rope number belongs
        raise JaxmergeError(f"{where}: expected numbers for the norm/rope keys, found: {e}") from None


def _build(cfg: dict[str, Any], family: str, where: str) -> ArchSpec:
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    expect(heads % kv_heads == 0, f"{where}: num_attention_heads ({heads}) must be a multiple of "
                                  f"num_key_value_heads, found {kv_heads}")
    window = cfg.get("sliding_window") if family == "mistral" else None
    return ArchSpec(
        model_type=family,
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=True if family == "qwen2" else bool(cfg.get("attention_bias", False)),
        o_bias=family in ("llama", "qwen3") and bool(cfg.get("attention_bias", False)),
        qk_norm=family == "qwen3",
        max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        sliding_window=None if window is None else int(window),
        inert=tuple(sorted((k, json.dumps(v)) for k, v in cfg.items() if k in INERT_KEYS)),
        **_rope(cfg, where),
    )


def _to_hf(spec: ArchSpec) -> dict[str, Any]:
    cfg: dict[str, Any] = {k: json.loads(v) for k, v in spec.inert}
    rope: dict[str, Any] = {"rope_theta": spec.rope_theta, "rope_type": spec.rope_type}
    if spec.rope_type in ("linear", "llama3"):
        rope["factor"] = spec.rope_factor
    if spec.rope_type == "llama3":
        rope.update(low_freq_factor=spec.rope_low_freq_factor, high_freq_factor=spec.rope_high_freq_factor,
                    original_max_position_embeddings=spec.rope_original_max_position)
    cfg.update(
        architectures=[ARCHITECTURES[spec.model_type]], model_type=spec.model_type, vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, rms_norm_eps=spec.rms_norm_eps,
        rope_parameters=rope, tie_word_embeddings=spec.tie_word_embeddings, hidden_act="silu",
        max_position_embeddings=spec.max_position_embeddings,
    )
    if spec.model_type in ("llama", "qwen3"):
        cfg["attention_bias"] = spec.qkv_bias
    if spec.model_type == "mistral":
        cfg["sliding_window"] = spec.sliding_window
    if spec.model_type in ("qwen2", "qwen3"):
        cfg.update(use_sliding_window=False, sliding_window=None, layer_types=["full_attention"] * spec.num_layers)
    return cfg


def check_same_architecture(specs: list[tuple[ArchSpec, object]], same_depth: bool = True) -> None:
    """The one "same architecture" rule of merge, evolve and DFS: every field that sets the math agrees (the layer
    count too unless `same_depth` is off: slices and layer paths may take layers from models of other depths).
    `specs` pairs each spec with where it came from, for the one-line error."""
    (first, origin), skip = specs[0], {"inert"} | (set() if same_depth else {"num_layers"})
    for spec, where in specs[1:]:
        for field in (f.name for f in dataclasses.fields(ArchSpec) if f.name not in skip):
            mine, theirs = getattr(first, field), getattr(spec, field)
            expect(mine == theirs, f"expected every model to share {field} = {mine!r} (from {origin}), "
                                   f"found {theirs!r} in {where}")
