"""mergekit recipe YAML -> a frozen `Recipe`. Every key is understood or refused by name, never ignored.

The `models:` form becomes one slice over all layers (layer_range None, filled in from the config at load time)
with the base model appended when it is not listed, exactly as mergekit normalises it. Relative model paths
are taken relative to the recipe file's directory when that path exists there.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping


from jaxmerge.errors import expect
from jaxmerge.yamlfile import read_yaml
from jaxmerge.merge.methods import METHODS

TOP_KEYS = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
            "tokenizer_source"}
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Source:
    model: str
    layer_range: tuple[int, int] | None
    parameters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Slice:
    sources: tuple[Source, ...]
    parameters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Recipe:
    method: str
    base_model: str | None
    slices: tuple[Slice, ...]
    parameters: Mapping[str, Any]
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None  # None, "base", or a model reference


def _keys(mapping: Any, allowed: set[str], where: str) -> dict:
    expect(isinstance(mapping, dict), f"expected a mapping for {where}, found {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    expect(not unknown, f"{where}: unsupported keys {unknown} (supported: {sorted(allowed)})")
    return mapping


def _model(ref: Any, root: Path | None, where: str) -> str:
    expect(isinstance(ref, str) and ref != "", f"expected a model path or repo id for {where}, found {ref!r}")
    expect("+" not in ref or Path(ref).exists(), f"{where}: LoRA references ('model+lora') are not supported, "
                                                 f"found {ref!r}")
    path = Path(ref).expanduser()
    if root is not None and not path.is_absolute() and (root / path).exists():
        return str((root / path).absolute())
    return ref


def _params(value: Any, where: str) -> dict:
    expect(value is None or isinstance(value, dict), f"expected a parameters mapping for {where}, "
                                                     f"found {type(value).__name__}")
    return dict(value or {})


def _source(entry: Any, root: Path | None, where: str, sliced: bool) -> Source:
    _keys(entry, {"model", "parameters"} | ({"layer_range"} if sliced else set()), where)
    layer_range = None
    if sliced:
        lr = entry.get("layer_range")
        expect(isinstance(lr, list) and len(lr) == 2 and all(isinstance(v, int) for v in lr) and 0 <= lr[0] < lr[1],
               f"expected {where}.layer_range as [start, stop] with 0 <= start < stop, found {lr!r}")
        layer_range = (lr[0], lr[1])
    return Source(_model(entry.get("model"), root, f"{where}.model"), layer_range,
                  _params(entry.get("parameters"), f"{where}.parameters"))


def parse_recipe(raw: Any, root: Path | None = None) -> Recipe:
    """Validate a recipe mapping. `root`: directory relative model paths are resolved against."""
    _keys(raw, TOP_KEYS, "recipe")
    method = raw.get("merge_method")
    expect(method in METHODS, f"expected merge_method in {sorted(METHODS)}, found {method!r}")
    expect(("models" in raw) != ("slices" in raw), "expected exactly one of 'models' or 'slices' in the recipe, "
                                                   f"found {sorted(k for k in ('models', 'slices') if k in raw)}")
    base = raw.get("base_model")
    base = None if base is None else _model(base, root, "base_model")
    for key in ("dtype", "out_dtype"):
        expect(raw.get(key) in (None, *DTYPES), f"expected {key} in {DTYPES}, found {raw.get(key)!r}")
    if "models" in raw:
        entries = raw["models"]
        expect(isinstance(entries, list) and entries, f"expected a non-empty list for models, found {entries!r}")
        sources = [_source(e, root, f"models[{i}]", False) for i, e in enumerate(entries)]
        if base is not None and base not in [s.model for s in sources]:
            sources.append(Source(base, None, {}))
        slices = (Slice(tuple(sources), {}),)
    else:
        slices = tuple(_slice(s, root, i) for i, s in enumerate(_list(raw["slices"], "slices")))
    return Recipe(method, base, slices, _params(raw.get("parameters"), "parameters"), raw.get("dtype"),
                  raw.get("out_dtype"), _tokenizer_source(raw.get("tokenizer_source"), root))


def _list(value: Any, where: str) -> list:
    expect(isinstance(value, list) and value, f"expected a non-empty list for {where}, found {value!r}")
    return value


def _slice(entry: Any, root: Path | None, i: int) -> Slice:
    _keys(entry, {"sources", "parameters"}, f"slices[{i}]")
    sources = tuple(_source(s, root, f"slices[{i}].sources[{j}]", True)
                    for j, s in enumerate(_list(entry.get("sources"), f"slices[{i}].sources")))
    lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
    expect(len(lengths) == 1, f"expected the sources of slices[{i}] to span equal layer counts, found "
                              f"{sorted(lengths)}")
    return Slice(sources, _params(entry.get("parameters"), f"slices[{i}].parameters"))


def _tokenizer_source(value: Any, root: Path | None) -> str | None:
    expect(value != "union", "tokenizer_source: union is not supported (expected base or a model)")
    return value if value in (None, "base") else _model(value, root, "tokenizer_source")


def read_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe YAML file."""
    path = Path(path)
    return parse_recipe(read_yaml(path, "a recipe YAML"), path.parent.absolute())
