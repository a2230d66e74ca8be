"""Models whose vocabularies disagree, reconciled once at load: the host-side step between loading models and
stacking them, so that everything after it (the merge, a search's compiled step) sees one vocabulary.

    vocab, models = reconcile(spec, base_ref, refs, groups, models)   # spec: a recipe's TokenizerSpec
    check_vocabularies(models)                                  # no spec: refuse vocabularies that differ

`refs`: every model the merge reads, first appearance first (each one's tokens join a union); `models` maps each
to a `jaxmerge.io.Model` (its .path, .spec and host .params); `groups` maps
"embed" / "lm_head" to the models merged into that tensor, in merge order (mergekit aligns each tensor within
its own group: which model is the only one with a token, or the base, depends on the group). The result has the
same models with embed / lm_head moved into the output vocabulary (jaxmerge.merge.align) and vocab_size set to
its rows; `vocab.tokenizer` is the tokenizer the output carries. `jaxmerge merge` calls this; a search can call
it the same way on the sources it has read, before stacking them.
"""
from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

from jaxmerge.arch import check_same_architecture
from jaxmerge.errors import expect
from jaxmerge.merge.align import align_rows
from jaxmerge.merge.tokenspec import TokenizerSpec
from jaxmerge.merge.vocab import Vocabulary, build, has_tokenizer, load_tokenizer

HF_NAMES = {"embed": "model.embed_tokens.weight", "lm_head": "lm_head.weight"}
HINT = ("set tokenizer_source (base, union or a model) or a tokenizer: block, so that rows are aligned by token")


def reconcile(spec: TokenizerSpec, base_ref: str | None, refs: list[str], groups: dict[str, list[str]],
              models: dict):
    """(the output Vocabulary, `models` with their embedding rows in it); see the module doc."""
    vocab = build(spec, base_ref, refs, models)
    leaves: dict[str, dict] = {ref: {} for ref in refs}
    for leaf, group in groups.items():
        if leaf not in models[group[0]].params:  # tied embeddings: no lm_head
            continue
        rows = {ref: models[ref].params[leaf] for ref in group}
        for ref, table in align_rows(vocab, spec, group, rows, base_ref, HF_NAMES[leaf]).items():
            leaves[ref][leaf] = table
    return vocab, {ref: _with(models[ref], leaves.get(ref, {}), vocab) for ref in models}


def _with(model, leaves: dict, vocab: Vocabulary):
    """`model` with aligned leaves. A model outside every group keeps its rows; its spec still says the output
    size only where it was aligned."""
    if not leaves:
        return model
    params = {**model.params, **leaves}
    return dataclasses.replace(model, spec=model.spec.replace(vocab_size=vocab.size), params=params)


def _same_tokenizer(a: Path, b: Path, rows: int) -> bool:
    """Both directories' tokenizers put the same tokens on the `rows` embedding rows (tokens past them have no
    row to merge); byte-equal files need no loading."""
    if (a / "tokenizer.json").is_file() and (b / "tokenizer.json").is_file() and \
            filecmp.cmp(a / "tokenizer.json", b / "tokenizer.json", shallow=False):
        return True
    on_rows = lambda path: {t: i for t, i in load_tokenizer(path, "tokenizer").get_vocab().items() if i < rows}
    return on_rows(a) == on_rows(b)


EVOLVE_HINT = ("set tokenizer_source (base, union or a model) or a tokenizer: block in the run config (mode ps), or "
               "pick sources with one tokenizer (DFS and hybrid runs need one)")


def check_vocabularies(models: dict, hint: str = HINT) -> None:
    """Without tokenizer settings rows merge by index: refuse models whose vocabularies differ (row counts, or
    tokenizers that map tokens to other rows), instead of merging unrelated rows or failing on a shape. `models`:
    reference -> anything with a .spec and a .path (a Model, a search's Checkpoint)."""
    (first, model), *rest = models.items()
    for ref, other in rest:
        size, theirs = model.spec.vocab_size, other.spec.vocab_size
        expect(size == theirs, f"expected models with one vocabulary, found {size} embedding rows in {first} and "
                               f"{theirs} in {ref}: {hint}")
    with_tokenizer = [(ref, m.path) for ref, m in models.items() if m.path and has_tokenizer(m.path)]
    for ref, path in with_tokenizer[1:]:
        expect(_same_tokenizer(with_tokenizer[0][1], path, model.spec.vocab_size),
               f"expected models with one vocabulary, found different tokenizers in {with_tokenizer[0][0]} and "
               f"{ref}: {hint}")


def check_sources(models: dict, aligned: bool, hint: str = HINT, **rules) -> None:
    """The checks of a search's sources (`models`: reference -> anything with a .spec and a .path): one
    architecture (`rules`: check_same_architecture's) up to the row count, and unless their rows are `aligned`
    by token, one vocabulary (check_vocabularies, whose line names the setting that aligns them)."""
    size = next(iter(models.values())).spec.vocab_size
    check_same_architecture([(m.spec.replace(vocab_size=size), m.path) for m in models.values()], **rules)
    if not aligned:
        check_vocabularies(models, hint)
