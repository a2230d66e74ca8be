"""Strict config.json reading shared by every family: the keys that never change the math, and the checks that
every family's reader runs before it looks at a single number.

A key is either read by the family (it sets the math), inert (ids, dtypes, bookkeeping: kept and written back),
or fixed (it must hold the one value implemented; absent means that value). Anything else is refused by name,
never silently ignored: an unknown key may change the forward pass.
"""
from __future__ import annotations

from typing import Any, Mapping

from jaxmerge.errors import expect

# Keys that do not change the forward pass; kept as-is and written back on export.
INERT_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id",
    "pad_token_id", "initializer_range", "use_cache", "_name_or_path", "tokenizer_class",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id",
    "bad_words_ids", "chunk_size_feed_forward", "is_encoder_decoder", "problem_type", "tie_encoder_decoder",
    "cache_implementation", "attn_implementation", "_attn_implementation", "_attn_implementation_autoset",
    "unsloth_version", "keys_to_ignore_at_inference", "max_window_layers", "auto_map",
    "router_aux_loss_coef", "output_router_logits", "router_jitter_noise",  # a mixture's training-only losses
}) | frozenset({  # bookkeeping and generation defaults that transformers v4 wrote into full config dumps
    "torchscript", "use_bfloat16", "tf_legacy_loss", "is_decoder", "add_cross_attention",
    "cross_attention_hidden_size", "finetuning_task", "prefix", "sep_token_id", "decoder_start_token_id",
    "task_specific_params", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
})
# Keys every decoder family reads.
COMMON_KEYS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "tie_word_embeddings", "max_position_embeddings",
})
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SIZES = (*REQUIRED, "num_key_value_heads", "head_dim")


def check_keys(cfg: Mapping[str, Any], keys: frozenset[str], fixed: Mapping[str, Any], where: str) -> None:
    """Every key read, inert, or holding the one value implemented; the required sizes present and positive."""
    unknown = sorted(k for k in cfg if k not in INERT_KEYS | keys | set(fixed))
    expect(not unknown, f"{where}: expected only config keys known to jaxmerge, found unsupported {unknown} "
                        "(they may change the math)")
    for key, value in fixed.items():
        found = cfg.get(key, value)
        expect(found == value or (found is None and value in (False, 0, (), [], {})),
               f"{where}: {key} must be {value!r} (the only value implemented), found {found!r}")
    missing = [k for k in REQUIRED if k not in cfg]
    expect(not missing, f"{where}: expected keys {missing}, found them missing")
    bad = {k: cfg[k] for k in SIZES if cfg.get(k) is not None and not positive_int(cfg[k])}
    expect(not bad, f"{where}: expected positive integers, found {bad}")


def check_architecture(cfg: Mapping[str, Any], architecture: str, where: str) -> None:
    arch = cfg.get("architectures")
    expect(arch in (None, [architecture]),
           f"{where}: architectures must be [{architecture!r}] (a causal LM head), found {arch!r}")


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def heads(cfg: Mapping[str, Any], where: str) -> dict[str, int]:
    """Head counts and head_dim as transformers derives them (head_dim absent: hidden_size // heads)."""
    n = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or n)
    expect(n % kv == 0, f"{where}: num_attention_heads ({n}) must be a multiple of num_key_value_heads, "
                        f"found {kv}")
    return {"num_heads": n, "num_kv_heads": kv, "head_dim": int(cfg.get("head_dim") or int(cfg["hidden_size"]) // n)}


def dims(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The fields every family reads the same way."""
    return dict(vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
                intermediate_size=int(cfg["intermediate_size"]), num_layers=int(cfg["num_hidden_layers"]),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)), **heads(cfg, where))


def write_dims(spec) -> dict[str, Any]:
    """The config keys of `dims`, written back."""
    return dict(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, rms_norm_eps=spec.rms_norm_eps,
                tie_word_embeddings=spec.tie_word_embeddings, max_position_embeddings=spec.max_position_embeddings)
