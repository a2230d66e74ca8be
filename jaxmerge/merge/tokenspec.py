"""A recipe's vocabulary settings -> a frozen `TokenizerSpec`: mergekit 0.1.5's `tokenizer_source` key and its
`tokenizer:` block, every key understood or refused by name.

    tokenizer_source: base | union | MODEL              # the output vocabulary: base's, the union, or MODEL's
    tokenizer:                                          # the same, with per-token rows (not with tokenizer_source)
      source: union                                     # (default union)
      pad_to_multiple_of: 64                            # embedding rows rounded up; padding rows get the mean
      tokens:
        "<|im_start|>": {source: MODEL}                 # that model's row of this token
        "<pad>": {source: {kind: zero}, force: true}    # zeros, even for models that have the token
        "<x>": {source: {kind: model_token, model: MODEL, token: "<y>"}}  # or token_id: N, a row of MODEL
    chat_template: chatml | auto | "{% for ... %}"      # written into the output tokenizer (jaxmerge.merge.chat)

`force` takes the configured row for every model; without it only models lacking the token take it. Token keys
that the output vocabulary lacks are added to it (as mergekit adds them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxmerge.errors import expect, expect_keys


@dataclasses.dataclass(frozen=True)
class TokenRow:
    """Where the row of one `tokens:` entry comes from. kind: "model" (MODEL's row of this token), "zero",
    "model_token" (MODEL's row of `token` or of row `token_id`) or "none" (no source given)."""
    token: str
    kind: str
    model: str | None = None
    token_id: int | None = None
    source_token: str | None = None
    force: bool = False


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    source: str  # "base", "union" or a model reference
    tokens: tuple[TokenRow, ...] = ()
    pad_to_multiple_of: int | None = None


def _row(token: Any, entry: Any, model: Callable[[Any, str], str]) -> TokenRow:
    where = f"tokenizer.tokens[{token!r}]"
    expect(isinstance(token, str) and token != "", f"{where}: expected a token (a non-empty string) as the key")
    entry = expect_keys(entry, ("source", "force"), where)
    force = entry.get("force", False)
    expect(isinstance(force, bool), f"{where}.force: expected true/false, found {force!r}")
    source = entry.get("source")
    if source is None:
        return TokenRow(token, "none", force=force)
    if not isinstance(source, dict):
        return TokenRow(token, "model", model(source, f"{where}.source"), force=force)
    kind = source.get("kind")
    expect(kind in ("zero", "model_token"), f"{where}.source.kind: expected zero or model_token, found {kind!r}")
    if kind == "zero":
        expect_keys(source, ("kind",), f"{where}.source")
        return TokenRow(token, "zero", force=force)
    expect_keys(source, ("kind", "model", "token_id", "token"), f"{where}.source", required=("model",))
    token_id, name = source.get("token_id"), source.get("token")
    expect((token_id is None) != (name is None),
           f"{where}.source: expected exactly one of token_id or token, found {sorted(k for k in source if k in ('token_id', 'token'))}")
    expect(token_id is None or (isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0),
           f"{where}.source.token_id: expected a row number >= 0, found {token_id!r}")
    expect(name is None or isinstance(name, str), f"{where}.source.token: expected a string, found {name!r}")
    return TokenRow(token, "model_token", model(source["model"], f"{where}.source.model"), token_id, name, force)


def _source(value: Any, where: str, model: Callable[[Any, str], str]) -> str:
    return value if value in ("base", "union") else model(value, where)


def parse(raw: dict, model: Callable[[Any, str], str]) -> TokenizerSpec | None:
    """The recipe's vocabulary settings (None: merge rows by index, as without them); `model(ref, where)` checks
    and resolves a model reference as the recipe's other references are."""
    block, source = raw.get("tokenizer"), raw.get("tokenizer_source")
    expect(block is None or source is None, "expected tokenizer_source or a tokenizer block, found both "
                                            "(mergekit refuses them together)")
    if block is None:
        return None if source is None else TokenizerSpec(_source(source, "tokenizer_source", model))
    block = expect_keys(block, ("source", "tokens", "pad_to_multiple_of"), "tokenizer")
    pad = block.get("pad_to_multiple_of")
    expect(pad is None or (isinstance(pad, int) and not isinstance(pad, bool) and pad > 0),
           f"tokenizer.pad_to_multiple_of: expected a positive integer, found {pad!r}")
    tokens = block.get("tokens") or {}
    expect(isinstance(tokens, dict), f"tokenizer.tokens: expected a mapping of tokens, found {type(tokens).__name__}")
    rows = tuple(_row(token, entry, model) for token, entry in tokens.items())
    return TokenizerSpec(_source(block.get("source", "union"), "tokenizer.source", model), rows, pad)


def row_models(spec: TokenizerSpec | None) -> list[str]:
    """Models the `tokens:` entries take rows from (each must be one the recipe merges)."""
    return [] if spec is None else [row.model for row in spec.tokens if row.model is not None]


def recipe_keys(spec: TokenizerSpec | None) -> dict:
    """The recipe keys that `parse` reads back as `spec` (what an evolved winner's recipe.yml carries)."""
    if spec is None:
        return {}
    if not spec.tokens and spec.pad_to_multiple_of is None:
        return {"tokenizer_source": spec.source}
    block: dict = {"source": spec.source}
    if spec.pad_to_multiple_of is not None:
        block["pad_to_multiple_of"] = spec.pad_to_multiple_of
    if spec.tokens:
        block["tokens"] = {row.token: _entry(row) for row in spec.tokens}
    return {"tokenizer": block}


def _entry(row: TokenRow) -> dict:
    source = {"model": row.model, "zero": {"kind": "zero"}, "none": None,
              "model_token": {"kind": "model_token", "model": row.model,
                              **({"token": row.source_token} if row.source_token is not None
                                 else {"token_id": row.token_id})}}[row.kind]
    return {**({} if source is None else {"source": source}), **({"force": True} if row.force else {})}
