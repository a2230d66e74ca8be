"""`ArchSpec`: the static shape and math of a decoder, and its exact conversion to/from HF config.json.

The spec is frozen and hashable so it can be a static argument of jitted functions. Its fields are the static
switches the one decoder (jaxmerge.model) reads; their defaults are the Llama family's. Which config keys set
which fields is each family's record (jaxmerge.families): reading is strict there, every key understood, inert,
or checked to hold the one value implemented, anything else refused by name.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxmerge.errors import expect
from jaxmerge.files import MB
from jaxmerge.jsonfile import read_json_object

MAX_CONFIG = 4 * MB  # a decoder's config.json is a few kilobytes
FULL, SLIDING = "full_attention", "sliding_attention"
EXPLICIT, XLA, CUDNN = "explicit", "xla", "cudnn"  # attention kernels (jaxmerge.kernels)
IMPLEMENTATIONS = (EXPLICIT, XLA, CUDNN)


def _families():
    from jaxmerge import families  # the records read and write configs; they never import this module
    return families


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
    rope_type: str = "default"  # default | linear | llama3 | longrope
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    max_position_embeddings: int = 2048
    sliding_window: int | None = None  # the window of the layers `layer_types` marks sliding
    layer_types: tuple[str, ...] = ()  # per layer FULL | SLIDING; () = every layer full attention
    partial_rotary: float = 1.0  # fraction of each head that RoPE rotates (Phi-4-mini: 0.75)
    rope_attention_factor: float = 1.0  # longrope: cos/sin are multiplied by it
    rope_short_factor: tuple[float, ...] = ()  # longrope: per-frequency divisors up to the original length
    rope_long_factor: tuple[float, ...] = ()  # ... and beyond it
    local_rope_theta: float | None = None  # RoPE base of sliding layers where it differs (Gemma 3)
    norm_offset: bool = False  # RMSNorm gain is (1 + w), applied in float32 before the cast (Gemma)
    activation: str = "silu"  # silu | gelu_tanh
    sandwich_norms: bool = False  # norms on the attention and MLP outputs too (Gemma 2/3)
    embed_scale: bool = False  # embeddings times sqrt(hidden_size), in their dtype (Gemma)
    query_scale: float | None = None  # scores / sqrt(query_scale) (Gemma's query_pre_attn_scalar); None: head_dim
    attn_softcap: float | None = None  # scores -> cap * tanh(scores / cap)
    final_softcap: float | None = None  # logits -> cap * tanh(logits / cap)
    fused_qkv: bool = False  # one qkv_proj [q + 2 kv, D] (Phi-3)
    fused_gate_up: bool = False  # one gate_up_proj [2 F, D] (Phi-3)
    num_experts: int = 0  # > 0: the MLP is a routed mixture of experts
    experts_per_token: int = 0
    expert_size: int = 0  # one expert's intermediate size
    shared_expert_size: int = 0  # > 0: plus a dense shared expert behind a sigmoid gate (Qwen2-MoE)
    norm_topk: bool = False  # renormalise the top-k routing weights to sum to 1
    inert: tuple[tuple[str, Any], ...] = ()  # inert HF keys, as hashable (key, json-string) pairs
    attention_impl: str = EXPLICIT  # not from config.json: explicit | xla | cudnn (jaxmerge.kernels)

    def __post_init__(self):
        types = self.layer_types
        expect(types == () or (len(types) == self.num_layers and set(types) <= {FULL, SLIDING}),
               f"expected layer_types to be empty or one of {FULL!r} / {SLIDING!r} per layer ({self.num_layers}), "
               f"found {str(types)[:80]}")
        expect(self.attention_impl in IMPLEMENTATIONS,
               f"expected attention_impl in {IMPLEMENTATIONS}, found {self.attention_impl!r}")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_types(self) -> tuple[str, ...]:
        """One attention type per layer."""
        return self.layer_types or (FULL,) * self.num_layers

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary)

    def replace(self, **changes) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    def with_layers(self, types: tuple[str, ...]) -> "ArchSpec":
        """This architecture with one layer per entry of `types` (a re-stacked model: slices, a DFS path)."""
        types = tuple(types)
        return self.replace(num_layers=len(types), layer_types=() if set(types) <= {FULL} else types)

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], where: str = "config.json") -> "ArchSpec":
        return cls(**_families().read_config(dict(cfg), where))

    def to_hf_config(self) -> dict[str, Any]:
        return _families().write_config(self)

    @classmethod
    def from_dir(cls, path: str | Path) -> "ArchSpec":
        """Read `path`/config.json through the guarded JSON reader (bounded size, depth and numbers); of a VLM
        (jaxmerge.vlm), its language model's text_config."""
        file = Path(path) / "config.json"
        expect(file.exists(), f"expected a config.json in {path}, found none")
        from jaxmerge.vlm.view import language_config  # a VLM's language model reads as the text model it is
        return cls.from_hf_config(*language_config(read_json_object(file, "config.json", max_bytes=MAX_CONFIG),
                                                   str(file)))


DEPTH_FIELDS = {"num_layers", "layer_types"}  # what may differ between models whose layers are re-stacked


def check_same_architecture(specs: list[tuple[ArchSpec, object]], same_depth: bool = True,
                            allow_crimes: bool = False) -> None:
    """The one "same architecture" rule of merge, evolve and DFS: every field that sets the math agrees (the layer
    count and per-layer types too unless `same_depth` is off: slices and layer paths may take layers from models
    of other depths). `specs` pairs each spec with where it came from, for the one-line error. Mixing families
    is refused naming both, unless `allow_crimes` (mergekit's --allow-crimes) and the two agree on every tensor
    and every switch of the math (Llama and a windowless Mistral do; Llama and Qwen2 do not: q/k/v biases)."""
    (first, origin), skip = specs[0], {"inert", "attention_impl"} | (set() if same_depth else DEPTH_FIELDS)
    for spec, where in specs[1:]:
        if spec.model_type != first.model_type:
            agree = _same_math(first, spec, skip)
            hint = " (their tensors and math agree: --allow-crimes merges them, as mergekit's does)" if agree else ""
            expect(allow_crimes and agree, f"expected every model to share model_type = {first.model_type!r} (from "
                                           f"{origin}), found {spec.model_type!r} in {where}{hint}")
        for field in (f.name for f in dataclasses.fields(ArchSpec) if f.name not in skip | {"model_type"}):
            mine, theirs = getattr(first, field), getattr(spec, field)
            expect(mine == theirs, f"expected every model to share {field} = {mine!r} (from {origin}), "
                                   f"found {theirs!r} in {where}")


def _same_math(a: ArchSpec, b: ArchSpec, skip: set[str]) -> bool:
    """Two families' specs that name, shape and compute every tensor the same way."""
    fields = (f.name for f in dataclasses.fields(ArchSpec) if f.name not in skip | {"model_type"})
    tensors = lambda s: _families().family_of(s).layers(s)  # noqa: E731  (leaf -> HF name and shape)
    return all(getattr(a, f) == getattr(b, f) for f in fields) and tensors(a) == tensors(b)
