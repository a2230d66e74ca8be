"""The canonical parameter pytree: HF tensors, HF layouts, layers stacked on a leading axis.

    {"embed": [V, D], "norm": [D], "lm_head": [V, D] (absent when tied),
     "layers": {"q_proj": [L, Hq*hd, D], "q_bias": [L, Hq*hd], ... "down_proj": [L, D, F]}}

Every array is exactly the HF tensor (same numbers, same [out, in] layout); the only change is that the L
per-layer tensors are stacked. So load/save are bit-exact, and merges see the real magnitudes, signs and
angles. Sources of a merge add one more leading axis: [M, ...] for globals, [M, L, ...] for layers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jaxmerge.arch import ArchSpec

Params = dict[str, Any]

# canonical layer leaf -> (HF suffix after "model.layers.{i}.", parameter group)
LAYER_LEAVES: dict[str, tuple[str, str]] = {
    "input_layernorm": ("input_layernorm.weight", "norm"),
    "q_proj": ("self_attn.q_proj.weight", "attn"),
    "k_proj": ("self_attn.k_proj.weight", "attn"),
    "v_proj": ("self_attn.v_proj.weight", "attn"),
    "q_bias": ("self_attn.q_proj.bias", "attn"),
    "k_bias": ("self_attn.k_proj.bias", "attn"),
    "v_bias": ("self_attn.v_proj.bias", "attn"),
    "q_norm": ("self_attn.q_norm.weight", "attn"),
    "k_norm": ("self_attn.k_norm.weight", "attn"),
    "o_proj": ("self_attn.o_proj.weight", "attn"),
    "o_bias": ("self_attn.o_proj.bias", "attn"),
    "post_attention_layernorm": ("post_attention_layernorm.weight", "norm"),
    "gate_proj": ("mlp.gate_proj.weight", "mlp"),
    "up_proj": ("mlp.up_proj.weight", "mlp"),
    "down_proj": ("mlp.down_proj.weight", "mlp"),
}
# canonical global leaf -> (HF name, parameter group)
GLOBAL_LEAVES: dict[str, tuple[str, str]] = {
    "embed": ("model.embed_tokens.weight", "embed"),
    "norm": ("model.norm.weight", "norm"),
    "lm_head": ("lm_head.weight", "embed"),
}
GROUPS = ("embed", "attn", "mlp", "norm")


def stack(trees: list) -> Any:
    """Pytrees of one structure (models' params, their name tables, candidates) -> one pytree whose leaves are
    the host arrays stacked on a new leading axis."""
    import jax
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def layer_leaf_shapes(spec: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's tensors (no layer axis), only the leaves this spec has."""
    d, f, q, kv, hd = spec.hidden_size, spec.intermediate_size, spec.q_size, spec.kv_size, spec.head_dim
    shapes = {"input_layernorm": (d,), "q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q),
              "post_attention_layernorm": (d,), "gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}
    if spec.qkv_bias:
        shapes.update(q_bias=(q,), k_bias=(kv,), v_bias=(kv,))
    if spec.o_bias:
        shapes["o_bias"] = (d,)
    if spec.qk_norm:
        shapes.update(q_norm=(hd,), k_norm=(hd,))
    return shapes


def param_shapes(spec: ArchSpec) -> Params:
    """The full canonical pytree of shapes (tuples) for `spec`."""
    shapes: Params = {"embed": (spec.vocab_size, spec.hidden_size), "norm": (spec.hidden_size,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head"] = (spec.vocab_size, spec.hidden_size)
    shapes["layers"] = {k: (spec.num_layers, *s) for k, s in layer_leaf_shapes(spec).items()}
    return shapes


def hf_names(spec: ArchSpec) -> dict[str, tuple[str, str, int | None]]:
    """HF tensor name -> (section, leaf, layer index or None). section is "layers" or "global"."""
    names: dict[str, tuple[str, str, int | None]] = {}
    for leaf in param_shapes(spec):
        if leaf != "layers":
            names[GLOBAL_LEAVES[leaf][0]] = ("global", leaf, None)
    for leaf in layer_leaf_shapes(spec):
        for i in range(spec.num_layers):
            names[f"model.layers.{i}.{LAYER_LEAVES[leaf][0]}"] = ("layers", leaf, i)
    return names


def leaf_group(leaf: str) -> str:
    """Parameter group ("embed" | "attn" | "mlp" | "norm") of a canonical leaf name."""
    return (LAYER_LEAVES.get(leaf) or GLOBAL_LEAVES[leaf])[1]


def to_hf_tensors(spec: ArchSpec, params: Params) -> dict[str, np.ndarray]:
    """Unstack the canonical pytree into HF-named tensors (views, no copies)."""
    out: dict[str, np.ndarray] = {}
    for name, (section, leaf, i) in hf_names(spec).items():
        out[name] = np.asarray(params[leaf] if section == "global" else params["layers"][leaf][i])
    return out
