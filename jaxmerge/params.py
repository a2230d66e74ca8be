"""The canonical parameter pytree: HF tensors, HF layouts, layers stacked on a leading axis.

    {"embed": [V, D], "norm": [D], "lm_head": [V, D] (absent when tied),
     "layers": {"q_proj": [L, Hq*hd, D], "q_bias": [L, Hq*hd], ... "down_proj": [L, D, F]}}

Every array is exactly the HF tensor (same numbers, same [out, in] layout); the only change is that the L
per-layer tensors are stacked (and, for the experts of a mixture, the E per-expert tensors, as transformers 5
and mergekit 0.1.5 hold them in memory: [L, E, 2F, D]). So load/save are bit-exact, and merges see the real
magnitudes, signs and angles. Sources of a merge add one more leading axis: [M, ...] globals, [M, L, ...] layers.
Which leaves a layer has, and their HF names, is the family's record (jaxmerge.families).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.deferred import Deferred, is_deferred
from jaxmerge.families import family_of

Params = dict[str, Any]


class Leaf(NamedTuple):
    """A canonical leaf: `id` names it in the DARE key of a tensor (fold_in(key, id)) and is explicit and
    append-only (a new leaf takes the next number; none is ever renumbered or reused, so the masks behind keys
    recorded by old runs never change); `group` is its parameter group; `axes` the logical axes of its HF tensor
    without the layer axis (jaxmerge.evolve.mesh maps them to mesh axes)."""
    id: int
    group: str
    axes: tuple[str | None, ...]


LEAVES: dict[str, Leaf] = {
    "embed": Leaf(0, "embed", ("vocab", "embed")),
    "norm": Leaf(1, "norm", ("embed",)),
    "lm_head": Leaf(2, "embed", ("vocab", "embed")),
    "input_layernorm": Leaf(3, "norm", ("embed",)),
    "q_proj": Leaf(4, "attn", ("heads", "embed")),
    "k_proj": Leaf(5, "attn", ("kv_heads", "embed")),
    "v_proj": Leaf(6, "attn", ("kv_heads", "embed")),
    "q_bias": Leaf(7, "attn", ("heads",)),
    "k_bias": Leaf(8, "attn", ("kv_heads",)),
    "v_bias": Leaf(9, "attn", ("kv_heads",)),
    "q_norm": Leaf(10, "attn", (None,)),
    "k_norm": Leaf(11, "attn", (None,)),
    "o_proj": Leaf(12, "attn", ("embed", "heads")),
    "o_bias": Leaf(13, "attn", ("embed",)),
    "post_attention_layernorm": Leaf(14, "norm", ("embed",)),
    "gate_proj": Leaf(15, "mlp", ("mlp", "embed")),
    "up_proj": Leaf(16, "mlp", ("mlp", "embed")),
    "down_proj": Leaf(17, "mlp", ("embed", "mlp")),
    # added with the families of issue 17 (append only)
    "pre_feedforward_layernorm": Leaf(18, "norm", ("embed",)),
    "post_feedforward_layernorm": Leaf(19, "norm", ("embed",)),
    "qkv_proj": Leaf(20, "attn", ("heads", "embed")),
    "gate_up_proj": Leaf(21, "mlp", ("mlp", "embed")),
    "router": Leaf(22, "experts", (None, "embed")),
    "experts_gate_up": Leaf(23, "experts", (None, "mlp", "embed")),
    "experts_down": Leaf(24, "experts", (None, "embed", "mlp")),
    "shared_expert_gate": Leaf(25, "mlp", (None, "embed")),
}
GLOBAL_NAMES = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}
GROUPS = ("embed", "attn", "mlp", "norm", "experts")
LAYOUTS = ("fused", "per_expert")  # how a checkpoint stores experts: mergekit's / transformers' save_pretrained


class TensorName(NamedTuple):
    """Where one HF tensor goes: section ("global" | "layers"), canonical leaf, layer (None for globals), the HF
    tensor's shape, and for a piece of an expert-stacked leaf its expert and first row (else None, 0)."""
    section: str
    leaf: str
    layer: int | None
    shape: tuple[int, ...]
    expert: int | None = None
    row: int = 0


def stack(trees: list) -> Any:
    """Pytrees of one structure (models' params, their name tables, candidates) -> one pytree whose leaves are
    the host arrays stacked on a new leading axis (aligned_stack)."""
    import jax
    return jax.tree.map(lambda *leaves: aligned_stack(leaves), *trees)


XLA_ALIGNMENT = 64  # bytes: a host array aligned so is taken by a CPU jit call / device_put without a copy


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty whose data starts on an XLA_ALIGNMENT boundary. On CPU, JAX aliases such an array instead of
    copying it into its own buffer (a 1.2 GB merge's sources were copied once per compiled call otherwise)."""
    dtype = np.dtype(dtype)
    raw = np.empty(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + XLA_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % XLA_ALIGNMENT
    return raw[start:start + raw.size - XLA_ALIGNMENT].view(dtype).reshape(shape)


def aligned_stack(arrays) -> np.ndarray:
    """np.stack, into an aligned_empty array where the values are numbers; a Deferred of the stack's dtype is
    made straight into its row (Deferred.make_into)."""
    arrays = [a if isinstance(a, Deferred) else np.asarray(a) for a in arrays]
    dtype = np.result_type(*[a.dtype for a in arrays])
    if dtype.kind not in "biuf" or any(a.shape != arrays[0].shape for a in arrays):  # np.stack refuses those
        return np.stack([np.asarray(a) for a in arrays])
    out = aligned_empty((len(arrays), *arrays[0].shape), dtype)
    for row, a in zip(out, arrays):
        if isinstance(a, Deferred) and a.dtype == dtype:
            a.make_into(row)
        else:
            row[...] = np.asarray(a)
    return out


def layer_leaf_shapes(spec: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's tensors (no layer axis), only the leaves this spec has."""
    return {leaf: shape for leaf, (_, shape) in family_of(spec).layers(spec).items()}


def param_shapes(spec: ArchSpec) -> Params:
    """The full canonical pytree of shapes (tuples) for `spec`."""
    shapes: Params = {"embed": (spec.vocab_size, spec.hidden_size), "norm": (spec.hidden_size,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head"] = (spec.vocab_size, spec.hidden_size)
    shapes["layers"] = {k: (spec.num_layers, *s) for k, s in layer_leaf_shapes(spec).items()}
    return shapes


def spec_groups(spec: ArchSpec) -> tuple[str, ...]:
    """The parameter groups this spec's leaves fall in, in GROUPS order (dense families: the first four)."""
    used = {LEAVES[leaf].group for leaf in layer_leaf_shapes(spec)} | {"embed", "norm"}
    return tuple(g for g in GROUPS if g in used)


def hf_names(spec: ArchSpec, layout: str = "fused") -> dict[str, TensorName]:
    """HF tensor name -> where it goes, for a checkpoint that stores experts in `layout`."""
    names: dict[str, TensorName] = {}
    for leaf, shape in param_shapes(spec).items():
        if leaf != "layers":
            names[GLOBAL_NAMES[leaf]] = TensorName("global", leaf, None, shape)
    family = family_of(spec)
    pieces = family.pieces(spec) if layout == "per_expert" else {}
    for leaf, (suffix, shape) in family.layers(spec).items():
        for i in range(spec.num_layers):
            for p in pieces.get(leaf, [(suffix, shape, None, 0)]):
                names[f"model.layers.{i}.{p[0]}"] = TensorName("layers", leaf, i, tuple(p[1]), p[2], p[3])
    return names


def layout_of(spec: ArchSpec, names) -> str:
    """The expert layout of a checkpoint holding tensors `names`: per_expert when it has the family's
    per-expert names rather than the fused ones (dense families: fused, the only one)."""
    per_expert = hf_names(spec, "per_expert")
    fused = hf_names(spec, "fused")
    if per_expert.keys() == fused.keys():
        return "fused"
    names = set(names)
    return "per_expert" if len(names & per_expert.keys()) > len(names & fused.keys()) else "fused"


def leaf_group(leaf: str) -> str:
    """Parameter group ("embed" | "attn" | "mlp" | "norm" | "experts") of a canonical leaf name."""
    return LEAVES[leaf].group


def piece_index(t: TensorName) -> tuple:
    """The index of tensor `t` inside its per-layer canonical leaf (the whole leaf for an ordinary tensor)."""
    return () if t.expert is None else (t.expert, slice(t.row, t.row + t.shape[0]))


def to_hf_tensors(spec: ArchSpec, params: Params, layout: str = "fused") -> dict[str, np.ndarray]:
    """Unstack the canonical pytree into HF-named tensors (views, no copies; a deferred tensor stays deferred
    unless it is an expert's piece of one)."""
    out: dict[str, Any] = {}
    for name, t in hf_names(spec, layout).items():
        array = params[t.leaf] if t.section == "global" else params["layers"][t.leaf][t.layer]
        out[name] = array if t.expert is None and is_deferred(array) else np.asarray(array)[piece_index(t)]
    return out
