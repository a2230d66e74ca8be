"""RoPE settings from config.json: v5 `rope_parameters` or v4 `rope_theta` + `rope_scaling`, strictly.

Types implemented: default, linear, llama3 and longrope (Phi-3's short/long factors with its attention factor),
with a partial rotary factor where the family has one (Phi-4-mini rotates 3/4 of each head). Any other type, or
a key of a type that this reader does not use, is refused by name.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from jaxmerge.errors import expect

NEEDED = {"default": (), "linear": ("factor",),
          "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
          "longrope": ("short_factor", "long_factor", "original_max_position_embeddings")}


def read_rope(params: Mapping[str, Any], theta: float, where: str, types: tuple[str, ...],
              partial: bool = False, max_position: int | None = None) -> dict[str, Any]:
    """ArchSpec rope fields from one rope dict (`theta`: the base when the dict has none)."""
    params = dict(params)
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    expect(rope_type in types, f"{where}: rope_type must be one of {types}, found {rope_type!r}")
    missing = [k for k in NEEDED[rope_type] if params.get(k) is None]
    expect(not missing, f"{where}: rope_type {rope_type!r} needs keys {missing}, found them missing")
    out = {"rope_theta": float(params.pop("rope_theta", theta)), "rope_type": rope_type}
    fraction = params.pop("partial_rotary_factor", 1.0)
    expect(partial or fraction in (None, 1, 1.0), f"{where}: partial_rotary_factor must be 1 for this family, "
                                                  f"found {fraction!r}")
    out["partial_rotary"] = float(1.0 if fraction is None else fraction)
    if rope_type in ("linear", "llama3"):
        out["rope_factor"] = float(params.pop("factor"))
    if rope_type == "llama3":
        out["rope_low_freq_factor"] = float(params.pop("low_freq_factor"))
        out["rope_high_freq_factor"] = float(params.pop("high_freq_factor"))
        out["rope_original_max_position"] = int(params.pop("original_max_position_embeddings"))
    if rope_type == "longrope":
        out.update(_longrope(params, max_position, where))
    expect(not params, f"{where}: expected no other rope keys, found unsupported {sorted(params)} "
                       "(they change the math)")
    return out


def _longrope(params: dict, max_position: int | None, where: str) -> dict[str, Any]:
    """transformers' _compute_longrope_parameters: factor defaults to max / original positions, the attention
    factor to sqrt(1 + ln(factor) / ln(original)) (1 when factor <= 1)."""
    original = int(params.pop("original_max_position_embeddings"))
    factor = params.pop("factor", None)
    factor = float(factor if factor is not None else (max_position or original) / original)
    attention = params.pop("attention_factor", None)
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    short, long = params.pop("short_factor"), params.pop("long_factor")
    ok = all(isinstance(f, list) and all(isinstance(x, (int, float)) for x in f) for f in (short, long))
    expect(ok and len(short) == len(long), f"{where}: short_factor and long_factor must be lists of numbers of "
                                           f"one length, found {str(short)[:40]} and {str(long)[:40]}")
    return {"rope_original_max_position": original, "rope_factor": factor, "rope_attention_factor": float(attention),
            "rope_short_factor": tuple(float(x) for x in short), "rope_long_factor": tuple(float(x) for x in long)}


def rope_dict(cfg: Mapping[str, Any]) -> tuple[dict, float]:
    """(the rope dict, the base it falls back to) from either spelling."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    return params, float(cfg.get("rope_theta", 10000.0))


def write_rope(spec) -> dict[str, Any]:
    """The v5 `rope_parameters` dict of the spec's (full-attention) rope."""
    rope: dict[str, Any] = {"rope_theta": spec.rope_theta, "rope_type": spec.rope_type}
    if spec.rope_type in ("linear", "llama3"):
        rope["factor"] = spec.rope_factor
    if spec.rope_type == "llama3":
        rope.update(low_freq_factor=spec.rope_low_freq_factor, high_freq_factor=spec.rope_high_freq_factor,
                    original_max_position_embeddings=spec.rope_original_max_position)
    if spec.rope_type == "longrope":
        rope.update(short_factor=list(spec.rope_short_factor), long_factor=list(spec.rope_long_factor),
                    factor=spec.rope_factor, attention_factor=spec.rope_attention_factor,
                    original_max_position_embeddings=spec.rope_original_max_position)
    if spec.partial_rotary != 1.0:
        rope["partial_rotary_factor"] = spec.partial_rotary
    return rope
