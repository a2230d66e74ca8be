"""mergekit recipe YAML -> a frozen `Recipe`. Every key is understood or refused by name, never ignored.

The `models:` form becomes one slice over all layers (layer_range None, filled in from the config at load time)
with the base model appended when it is not listed, exactly as mergekit normalises it.

Relative model paths resolve as mergekit 0.1.5 resolves them: against the working directory. A path that does
not exist there but does exist relative to the recipe's folder is taken from there with a warning (mergekit
would fail on it, taking it for a Hub repo id); when it exists in both places the working directory wins.

One comment line carries what a mergekit recipe cannot say and mergekit ignores (written by `jaxmerge evolve`):

    # jaxmerge: {"merge_key": [K0, K1], "math_dtype": "float32"}

a JSON object after `# jaxmerge: `. `merge_key`: the two uint32 words of the raw JAX key (threefry, as
`jax.random.PRNGKey`) the DARE / DELLA masks were drawn with: `jaxmerge merge` then draws exactly the same masks
(it refuses a `--seed` as well). `math_dtype` (optional): the dtype the merge is computed in, in place of the
recipe's `dtype` (as `--math-dtype`). Any other key is refused by name, and so is a second such line.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

from jaxmerge.errors import JaxmergeError, expect, expect_keys
from jaxmerge.merge import lora, tokenspec
from jaxmerge.merge.methods import METHODS
from jaxmerge.merge.numerics import MATH_DTYPES
from jaxmerge.merge.tokenspec import TokenizerSpec
from jaxmerge.yamlfile import parse_yaml, read_yaml

TOP_KEYS = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
            "tokenizer_source", "tokenizer", "chat_template"}
DTYPES = ("float32", "bfloat16", "float16")


class RecipeWarning(UserWarning):
    """A recipe runs, but not quite as written (an ignored parameter, a path found beside the recipe, a count
    one element off): `jaxmerge merge` prints each as one line."""


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
    tokenizer: TokenizerSpec | None = None  # tokenizer_source / tokenizer: (jaxmerge.merge.tokenspec); None: by index
    chat_template: str | None = None        # a template name, "auto" or Jinja text (jaxmerge.merge.chat)
    merge_key: tuple[int, int] | None = None  # from the `# jaxmerge:` comment
    math_dtype: str | None = None             # from the `# jaxmerge:` comment
    text: str | None = dataclasses.field(default=None, compare=False)  # the file's text, comments included
    raw: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)  # the mapping it came from


@dataclasses.dataclass(frozen=True)
class Context:
    """How a recipe's model references resolve: relative paths against the working directory (else `root`, the
    recipe's folder, with a warning); `names` (earlier documents of a chain) are kept as they are."""
    root: Path | None
    names: frozenset = frozenset()


def _model(ref: Any, ctx: Context, where: str) -> str:
    """A model reference, relative paths resolved (below); MODEL+LORA (a PEFT adapter, jaxmerge.merge.lora) has
    each part resolved."""
    expect(isinstance(ref, str) and ref != "", f"expected a model path or repo id for {where}, found {ref!r}")
    if "+" in ref and not Path(ref).exists():
        model, adapter = lora.split(ref)
        expect(model != "" and adapter != "", f"{where}: expected MODEL+LORA, found {ref!r}")
        return f"{_path(model, ctx, where)}+{_path(adapter, ctx, where)}"
    return _path(ref, ctx, where)


def _path(ref: str, ctx: Context, where: str) -> str:
    root = ctx.root
    if ref in ctx.names:
        return ref
    path = Path(ref).expanduser()
    if root is None or path.is_absolute() or path.exists() or not (root / path).exists():
        return ref
    found = str((root / path).absolute())
    warnings.warn(f"{where}: {ref} is not in the working directory; taking {found} (beside the recipe; "
                  "mergekit resolves relative paths against the working directory only)", RecipeWarning, stacklevel=2)
    return found


def _params(value: Any, where: str) -> dict:
    expect(value is None or isinstance(value, dict), f"expected a parameters mapping for {where}, "
                                                     f"found {type(value).__name__}")
    return dict(value or {})


def _source(entry: Any, ctx: Context, where: str, sliced: bool) -> Source:
    entry = expect_keys(entry, {"model", "parameters"} | ({"layer_range"} if sliced else set()), where)
    layer_range = None
    if sliced:
        lr = entry.get("layer_range")
        expect(isinstance(lr, list) and len(lr) == 2 and all(isinstance(v, int) for v in lr) and 0 <= lr[0] < lr[1],
               f"expected {where}.layer_range as [start, stop] with 0 <= start < stop, found {lr!r}")
        layer_range = (lr[0], lr[1])
    return Source(_model(entry.get("model"), ctx, f"{where}.model"), layer_range,
                  _params(entry.get("parameters"), f"{where}.parameters"))


def parse_recipe(raw: Any, root: Path | None = None, names: frozenset = frozenset()) -> Recipe:
    """Validate a recipe mapping. `root`: the recipe's folder (see `Context`); `names`: references that name
    earlier documents of a chain (jaxmerge.merge.multi), taken as they are."""
    ctx = Context(root, frozenset(names))
    raw = expect_keys(raw, TOP_KEYS, "recipe")
    method = raw.get("merge_method")
    expect(method in METHODS, f"expected merge_method in {sorted(METHODS)}, found {method!r}")
    expect(("models" in raw) != ("slices" in raw), "expected exactly one of 'models' or 'slices' in the recipe, "
                                                   f"found {sorted(k for k in ('models', 'slices') if k in raw)}")
    base = raw.get("base_model")
    base = None if base is None else _model(base, ctx, "base_model")
    for key in ("dtype", "out_dtype"):
        expect(raw.get(key) in (None, *DTYPES), f"expected {key} in {DTYPES}, found {raw.get(key)!r}")
    if "models" in raw:
        entries = raw["models"]
        expect(isinstance(entries, list) and entries, f"expected a non-empty list for models, found {entries!r}")
        sources = [_source(e, ctx, f"models[{i}]", False) for i, e in enumerate(entries)]
        if base is not None and base not in [s.model for s in sources]:
            sources.append(Source(base, None, {}))
        slices = (Slice(tuple(sources), {}),)
    else:
        slices = tuple(_slice(s, ctx, i) for i, s in enumerate(_list(raw["slices"], "slices")))
    template = raw.get("chat_template")
    expect(template is None or (isinstance(template, str) and template != ""),
           f"expected chat_template as a template name, auto or Jinja text, found {template!r}")
    return Recipe(method, base, slices, _params(raw.get("parameters"), "parameters"), raw.get("dtype"),
                  raw.get("out_dtype"), tokenspec.parse(raw, lambda ref, where: _model(ref, ctx, where)),
                  template, raw=dict(raw))


def _list(value: Any, where: str) -> list:
    expect(isinstance(value, list) and value, f"expected a non-empty list for {where}, found {value!r}")
    return value


def _slice(entry: Any, ctx: Context, i: int) -> Slice:
    entry = expect_keys(entry, {"sources", "parameters"}, f"slices[{i}]")
    sources = tuple(_source(s, ctx, f"slices[{i}].sources[{j}]", True)
                    for j, s in enumerate(_list(entry.get("sources"), f"slices[{i}].sources")))
    lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
    expect(len(lengths) == 1, f"expected the sources of slices[{i}] to span equal layer counts, found "
                              f"{sorted(lengths)}")
    return Slice(sources, _params(entry.get("parameters"), f"slices[{i}].parameters"))


COMMENT = re.compile(r"\s*#\s*jaxmerge:(.*)")
COMMENT_KEYS = ("merge_key", "math_dtype")


def _comment(text: str, where: str) -> dict:
    """The `# jaxmerge: {...}` line of a recipe's text, validated (see module doc); {} when there is none."""
    found = [m[1] for m in map(COMMENT.fullmatch, text.splitlines()) if m]
    expect(len(found) <= 1, f"{where}: expected at most one '# jaxmerge:' line, found {len(found)}")
    if not found:
        return {}
    try:
        doc = json.loads(found[0])
    except json.JSONDecodeError as e:
        raise JaxmergeError(f"{where}: expected a JSON object after '# jaxmerge:', found invalid JSON ({e})") from None
    expect(isinstance(doc, dict), f"{where}: expected a JSON object after '# jaxmerge:', found {doc!r}")
    unknown = sorted(set(doc) - set(COMMENT_KEYS))
    expect(not unknown, f"{where}: '# jaxmerge:' keys {unknown} are unknown (known: {list(COMMENT_KEYS)})")
    key = doc.get("merge_key")
    expect(key is None or (isinstance(key, list) and len(key) == 2 and all(
        isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 2**32 for k in key)),
        f"{where}: expected merge_key as two uint32 integers [K0, K1], found {key!r}")
    expect(doc.get("math_dtype") in (None, *MATH_DTYPES),
           f"{where}: expected math_dtype in {MATH_DTYPES}, found {doc.get('math_dtype')!r}")
    return {"merge_key": None if key is None else tuple(key), "math_dtype": doc.get("math_dtype")}


def parse_document(raw: Any, text: str, root: Path | None, where: str, names: frozenset = frozenset()) -> Recipe:
    """A recipe from its parsed mapping and its text (for its `# jaxmerge:` comment and the output's card)."""
    return dataclasses.replace(parse_recipe(raw, root, names), text=text, **_comment(text, where))


def parse_recipe_text(text: str, root: Path | None = None, where: str = "recipe") -> Recipe:
    """A recipe from its YAML text, with its `# jaxmerge:` comment (`root`: the recipe's folder)."""
    return parse_document(parse_yaml(text, where), text, root, where)


def read_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe YAML file (and its `# jaxmerge:` comment)."""
    path = Path(path)
    read_yaml(path, "a recipe YAML")  # the one-line refusals of a missing, non-UTF-8 or invalid file
    return parse_recipe_text(path.read_text(), path.parent.absolute(), str(path))
