"""The output vocabulary of a merge and where each model's rows sit in it, built once on the host as mergekit
0.1.5 builds them (transformers tokenizers; no tensor is touched here, jaxmerge.merge.align moves the rows).

- Every tokenizer keeps only the tokens its model has embedding rows for (config.json's vocab_size); the base's
  (else the first model's) is stripped of the others (BPE tokenizers; mergekit supports no other kind there).
- `source: base`: the base's tokenizer. `source: MODEL`: MODEL's own. `source: union`: the base's, plus every
  other model's tokens it lacks, in model order (ordinary tokens first, then added tokens with the first
  model's settings), each appended as an added token, as mergekit appends them.
- Then each `tokens:` key the vocabulary lacks is added; the output has len(vocabulary) rows, rounded up to
  `pad_to_multiple_of`.
A model without a tokenizer is taken to have the base's vocabulary (mergekit's assumption; warned).

    vocab = build(spec, base_ref, refs, models)   # Vocabulary: .tokenizer, .tokens, .size, .rows[ref], .vocabs
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.merge.recipe import RecipeWarning
from jaxmerge.merge.tokenspec import TokenizerSpec

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """`rows[ref][i]`: the row of output token i in model `ref`'s embedding, -1 where it lacks the token.
    `vocabs[ref]`: that model's own token -> row (`kind: model_token` looks tokens up there)."""
    tokenizer: Any
    tokens: dict[str, int]
    size: int
    rows: dict[str, np.ndarray]
    vocabs: dict[str, dict[str, int]]


def has_tokenizer(path: Path) -> bool:
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(path: Path, where: str):
    """A transformers tokenizer from a model directory (offline), or a one-line error."""
    import transformers
    expect(has_tokenizer(path), f"{where}: expected a tokenizer (tokenizer.json) in {path}, found none")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True)
    except Exception as e:  # a broken tokenizer file is bad input, not a bug of ours
        found = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise JaxmergeError(f"{where}: expected a readable tokenizer in {path}, found: {found}") from None


def strip(tokenizer, vocab_size: int, where: str):
    """`tokenizer` without the tokens at rows >= vocab_size (the model has no embedding for them)."""
    unused = {tok for tok, i in tokenizer.get_vocab().items() if i >= vocab_size}
    if not unused:
        return tokenizer
    from tokenizers import Tokenizer
    doc = json.loads(tokenizer._tokenizer.to_str())
    expect(doc["model"]["type"] == "BPE", f"{where}: expected a BPE tokenizer to drop the {len(unused)} tokens "
                                          f"beyond its {vocab_size} embedding rows, found {doc['model']['type']}")
    doc["added_tokens"] = [t for t in doc["added_tokens"] if t["id"] < vocab_size]
    doc["model"]["vocab"] = {t: i for t, i in doc["model"]["vocab"].items() if t not in unused}
    pair = lambda m: m.split(" ") if isinstance(m, str) else m
    doc["model"]["merges"] = [m for m in doc["model"]["merges"] if not set(pair(m)) & unused]
    tokenizer._tokenizer = Tokenizer.from_str(json.dumps(doc))
    return tokenizer


def _copy(tokenizer):
    """A fresh tokenizer equal to `tokenizer` (saved and reloaded), so adding tokens leaves the original alone."""
    import transformers
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return transformers.AutoTokenizer.from_pretrained(tmp, use_fast=True, local_files_only=True)


def union(base, tokenizers: dict[str, Any], sizes: dict[str, int]):
    """The base's tokenizer plus every other token the models have rows for (module doc)."""
    plain, added = {}, {}
    for ref, tok in tokenizers.items():
        specials = tok.added_tokens_decoder
        contents = {info.content for info in specials.values()}
        # in id order: get_vocab()'s order is a Rust hash map's, which differs between loads of one tokenizer
        for token, i in sorted(tok.get_vocab().items(), key=lambda item: item[1]):
            if i < sizes[ref] and token not in contents:
                plain.setdefault(token, None)
        for i, info in specials.items():
            if i < sizes[ref]:
                added.setdefault(info.content, info)
    out, known = _copy(base), base.get_vocab()
    for token in plain:
        if token not in added and token not in known:
            out.add_tokens(token)
    for info in added.values():
        out.add_tokens(info)
    return out


def build(spec: TokenizerSpec, base_ref: str | None, refs: list[str], models: dict[str, Any]) -> Vocabulary:
    """The output vocabulary for merging `refs` (in order; `models[ref]` has .path and .spec) under `spec`."""
    first = base_ref or refs[0]
    base = strip(load_tokenizer(models[first].path, "tokenizer"), models[first].spec.vocab_size, str(first))
    tokenizers = {first: base}
    for ref in refs:
        if ref != first:
            if has_tokenizer(models[ref].path):
                tokenizers[ref] = load_tokenizer(models[ref].path, "tokenizer")
            else:
                warnings.warn(f"{ref} has no tokenizer: taking it to have the vocabulary of {first}, as mergekit "
                              "does", RecipeWarning, stacklevel=2)
    sizes = {ref: models[ref].spec.vocab_size for ref in refs}
    out = output_tokenizer(spec, base, tokenizers, sizes, models)
    tokens = out.get_vocab()
    size = len(tokens)
    expect(max(tokens.values()) < size, f"tokenizer: expected token ids 0..{size - 1}, found id "
                                        f"{max(tokens.values())} (a vocabulary with holes)")
    if spec.pad_to_multiple_of and size % spec.pad_to_multiple_of:
        size += spec.pad_to_multiple_of - size % spec.pad_to_multiple_of
    vocabs = {ref: tok.get_vocab() for ref, tok in tokenizers.items()}
    rows = {ref: _rows(tokens, vocabs.get(ref, vocabs[first]), sizes[ref]) for ref in refs}
    return Vocabulary(out, tokens, size, rows, vocabs)


def output_tokenizer(spec: TokenizerSpec, base, tokenizers: dict[str, Any], sizes: dict[str, int], models: dict):
    """The tokenizer the output carries: base's, union, or a named model's (one the merge reads, or any other),
    plus the `tokens:` keys."""
    from jaxmerge.io import resolve
    if spec.source == "base":
        out = base
    elif spec.source == "union":
        out = union(base, tokenizers, sizes)
    else:
        source = models[spec.source].path if spec.source in models else resolve(spec.source)
        out = load_tokenizer(source, "tokenizer.source")
    present = set(out.get_vocab())
    for row in spec.tokens:
        if row.token not in present:
            out.add_tokens(row.token)
            present.add(row.token)
    return out


def _rows(tokens: dict[str, int], vocab: dict[str, int], vocab_size: int) -> np.ndarray:
    """Each output token's row in one model: its id there, or -1 where it lacks it (or has no row for it)."""
    rows = np.full(len(tokens), -1, np.int64)
    for token, i in tokens.items():
        j = vocab.get(token, -1)
        rows[i] = j if j < vocab_size else -1
    return rows
