"""The registry of model families: model_type -> `Family` record (jaxmerge.families.record).

`read_config` and `write_config` are the whole of config.json <-> ArchSpec fields; `family_of` is how the rest
of jaxmerge (tensor names, the DFS fold, exports) asks a spec about its family. Nothing outside this package
branches on a family's name.
"""
from __future__ import annotations

import json
from typing import Any

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.families.keys import INERT_KEYS, check_keys
from jaxmerge.families.gemma import GEMMA, GEMMA2, GEMMA3
from jaxmerge.families.llama import LLAMA, MISTRAL, QWEN2, QWEN3
from jaxmerge.families.moe import MIXTRAL, QWEN2_MOE, QWEN3_MOE
from jaxmerge.families.phi3 import PHI3
from jaxmerge.families.record import Family, Piece

FAMILIES: dict[str, Family] = {f.model_type: f for f in (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA, GEMMA2, GEMMA3, PHI3,
                                                         MIXTRAL, QWEN2_MOE, QWEN3_MOE)}


def family_of(spec_or_type) -> Family:
    name = spec_or_type if isinstance(spec_or_type, str) else spec_or_type.model_type
    expect(name in FAMILIES, f"expected a model family in {sorted(FAMILIES)}, found {name!r}")
    return FAMILIES[name]


def read_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """ArchSpec fields of a config.json (strict: every key understood, inert, or at its one value)."""
    name = cfg.get("model_type")
    expect(name in FAMILIES, f"{where}: model_type must be one of {tuple(FAMILIES)}, found {name!r}")
    family = FAMILIES[name]
    cfg = {**family.defaults, **cfg}
    check_keys(cfg, family.keys | family.kept, family.fixed, where)
    try:
        fields = family.read(cfg, where)
    except (TypeError, ValueError) as e:  # e.g. a string where rms_norm_eps or a rope number belongs
        raise JaxmergeError(f"{where}: expected numbers for the norm/rope keys, found: {e}") from None
    inert = tuple(sorted((k, json.dumps(v)) for k, v in cfg.items() if k in INERT_KEYS | family.kept))
    return {"model_type": name, **fields, "inert": inert}


def write_config(spec) -> dict[str, Any]:
    """config.json of a spec: its inert keys as read, then the family's keys."""
    family = family_of(spec)
    cfg: dict[str, Any] = {k: json.loads(v) for k, v in spec.inert}
    cfg.update(architectures=[family.architecture], model_type=family.model_type)
    cfg.update(family.write(spec))
    return cfg


__all__ = ["FAMILIES", "Family", "Piece", "family_of", "read_config", "write_config"]
