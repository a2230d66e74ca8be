"""`Family`: everything jaxmerge knows about one Hugging Face decoder architecture, as data.

A family says which config.json keys it reads (strictly: jaxmerge.families.keys), how they become ArchSpec
fields (the static switches the one decoder in jaxmerge.model reads) and back, which tensors one layer has
(canonical leaf -> HF name and shape), and what the DFS fold needs to know about its norms. Adding a family is
one record in this package plus its tests; nothing in the forward pass, the merge or the search names a family.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple


class Piece(NamedTuple):
    """One HF tensor of the per-expert checkpoint layout that holds part of a canonical leaf: rows
    [row, row + shape[0]) of expert `expert` (None: the whole leaf, under another name). transformers writes one
    tensor per expert (`experts.3.w1.weight`); the canonical leaf is the stacked [E, 2F, D] tensor mergekit
    0.1.5 merges and writes (`experts.gate_up_proj`)."""
    suffix: str
    shape: tuple[int, ...]
    expert: int | None = None
    row: int = 0


@dataclasses.dataclass(frozen=True)
class Family:
    """One HF architecture. `read(cfg, where)` gets the config with `defaults` applied and its keys checked
    against `keys` / `fixed`, and returns ArchSpec fields; `write(spec)` returns the family's config keys.
    `layers(spec)` is {canonical leaf: (HF suffix after "model.layers.{i}.", shape)} of one layer;
    `pieces(spec)` the per-expert checkpoint layout of the leaves that have one ({} for dense families).
    `pre_norms` are the norm gains whose input a DFS path scales (scale-invariant: times sign C);
    `residual_writers` the tensors whose output enters the residual stream (times 1 / C; a post-norm gain where
    the family has sandwich norms, since a norm after o_proj would undo a scale put into o_proj).
    `layer_types_key`: config.json can give every layer its own attention type (a DFS path may mix them).
    `kept`: keys transformers' class of this family ignores, accepted and written back as they were."""
    model_type: str
    architecture: str
    keys: frozenset[str]
    read: Callable[[dict, str], dict]
    write: Callable[[Any], dict]
    layers: Callable[[Any], dict]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pieces: Callable[[Any], dict] = lambda spec: {}
    pre_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    residual_writers: tuple[str, ...] = ("o_proj", "o_bias", "down_proj")
    layer_types_key: bool = False
    kept: frozenset[str] = frozenset()
