"""Embedding and lm_head rows of a merge group moved into the output vocabulary, token by token, once on the
host (numpy), as mergekit 0.1.5's PermutedVocabulary does; the merge then sees one vocabulary.

For each output token, a model that has it keeps its own row. A model that lacks it (or every model, for a
`force`d token) takes a default row:
    a `tokens:` entry:      its source (a model's row of the token, zeros, or a model's row of another token)
    else one model has it:  that model's row;   none has it: zeros (warned)
    else the base has it:   the base's row;     else: the mean of the rows of the models that have it
Rows past the vocabulary (`pad_to_multiple_of`) are each model's mean row. Rows sum and divide in the merge's
storage dtype, rounded per operation as torch does. Sources' padding rows (more rows than tokens) hold no token
and are dropped; every real token keeps its row.

    aligned = align_rows(vocab, spec, group, {ref: [V_ref, D] array}, base_ref, tensor_name)
"""
from __future__ import annotations

import warnings

import numpy as np

from jaxmerge.errors import expect
from jaxmerge.merge.recipe import RecipeWarning
from jaxmerge.merge.tokenspec import TokenizerSpec, TokenRow
from jaxmerge.merge.vocab import Vocabulary


def _in(x: np.ndarray, dtype) -> np.ndarray:
    return x.astype(np.float32).astype(dtype)


def _mean_row(vocab, group, rows, token_id) -> np.ndarray:
    """mergekit's running sum over the models that have the token, then / count (in the rows' dtype)."""
    having = [ref for ref in group if vocab.rows[ref][token_id] >= 0]
    dtype = rows[group[0]].dtype
    total = np.zeros(rows[group[0]].shape[1:], dtype)
    for ref in having:
        total = _in(total.astype(np.float32) + rows[ref][vocab.rows[ref][token_id]].astype(np.float32), dtype)
    return _in(total.astype(np.float32) / np.float32(len(having)), dtype)


def _source_row(vocab: Vocabulary, row: TokenRow, group, rows, token_id: int, where: str) -> np.ndarray:
    """The row a `tokens:` entry (or the default rule, as an entry) names for one token."""
    dtype = rows[group[0]].dtype
    if row.kind == "zero":
        return np.zeros(rows[group[0]].shape[1:], dtype)
    key = f"tokenizer.tokens[{row.token!r}].source"
    expect(row.kind != "none", f"{key}: expected a source for a token that some models lack (or that is "
                               "forced), found none")
    expect(row.model in rows, f"{key}: expected a model merged into {where}, found {row.model}")
    table = rows[row.model]
    if row.kind == "model":
        j = vocab.rows[row.model][token_id]
        expect(j >= 0, f"{key}: expected {row.model} to have the token {row.token!r}, found it missing")
        return table[j]
    if row.source_token is not None:
        own = vocab.vocabs.get(row.model, {})
        expect(row.source_token in own, f"{key}.token: expected a token of {row.model}, found {row.source_token!r} "
                                        "not in its vocabulary")
        j = own[row.source_token]
    else:
        j = row.token_id
    expect(0 <= j < table.shape[0], f"{key}: expected a row of {row.model} (0..{table.shape[0] - 1}), found {j}")
    return table[j]


def _defaults(vocab: Vocabulary, spec: TokenizerSpec, group, rows, base_ref, where) -> dict[int, np.ndarray]:
    """token id -> default row, for every token some model lacks or that is forced (module doc)."""
    configured = {row.token: row for row in spec.tokens}
    have = np.stack([vocab.rows[ref] >= 0 for ref in group])
    count = have.sum(axis=0)
    out = {}
    for token, i in vocab.tokens.items():
        row = configured.get(token)
        if count[i] == len(group) and not (row and row.force):
            continue
        if row is None and count[i] == 1:
            row = TokenRow(token, "model", group[int(np.argmax(have[:, i]))])
        elif row is None and count[i] == 0:
            warnings.warn(f"token {token!r} is in no model: its {where} row is zeros", RecipeWarning, stacklevel=3)
            row = TokenRow(token, "zero")
        elif row is None and base_ref in group and vocab.rows[base_ref][i] >= 0:
            row = TokenRow(token, "model", base_ref)
        out[i] = _mean_row(vocab, group, rows, i) if row is None else \
            _source_row(vocab, row, group, rows, i, where)
    return out


def align_rows(vocab: Vocabulary, spec: TokenizerSpec, group: list[str], rows: dict[str, np.ndarray],
               base_ref: str | None, where: str) -> dict[str, np.ndarray]:
    """Each model's [vocab.size, D] rows in the output vocabulary (module doc). `where`: the tensor's HF name."""
    defaults = _defaults(vocab, spec, group, rows, base_ref, where)
    forced = np.zeros(len(vocab.tokens), bool)
    for row in spec.tokens:
        forced[vocab.tokens[row.token]] = row.force
    out = {}
    for ref in group:
        table, index = rows[ref], vocab.rows[ref]
        new = np.zeros((vocab.size,) + table.shape[1:], table.dtype)
        own = (index >= 0) & ~forced
        new[np.flatnonzero(own)] = table[index[own]]
        for i, row in defaults.items():
            if not own[i]:
                new[i] = row
        real = len(vocab.tokens)
        if vocab.size > real:  # padding rows: the mean of the real ones (float64, rounded once)
            new[real:] = new[:real].astype(np.float64).mean(axis=0).astype(np.float32).astype(table.dtype)
        out[ref] = new
    return out
