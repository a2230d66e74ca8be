"""Between reading a recipe and stacking its sources, once on the host: load every model it names (LoRA
sources folded, earlier documents of a chain taken as they are), check they can be merged, reconcile their
vocabularies and resolve the chat template. Everything after this sees models of one architecture and one
vocabulary (jaxmerge.merge.build)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from jaxmerge.arch import check_same_architecture
from jaxmerge.errors import expect
from jaxmerge.io import Model
from jaxmerge.merge import tokenspec
from jaxmerge.merge.lora import load_ref
from jaxmerge.merge.recipe import Recipe
from jaxmerge.merge.reconcile import check_vocabularies, reconcile
from jaxmerge.merge.vocab import Vocabulary
from jaxmerge.vlm.checkpoint import describe


def referenced(recipe: Recipe) -> list[str]:
    """Every model the recipe reads, first appearance first."""
    refs = [s.model for sl in recipe.slices for s in sl.sources]
    return list(dict.fromkeys(refs + ([recipe.base_model] if recipe.base_model else [])))


def load_models(recipe: Recipe, on_load: Callable[[str], None] = lambda name: None,
                provided: dict | None = None, allow_crimes: bool = False) -> dict[str, Model]:
    """Load every referenced model once, refusing mixed families (unless `allow_crimes` and their tensors and
    math agree) or shapes; vocabularies may differ only when
    the recipe says how to align them (jaxmerge.merge.reconcile). `provided`: reference -> a Model in memory or
    the directory to read it from (a chain's earlier results)."""
    models: dict[str, Model] = {}
    for ref in referenced(recipe):
        on_load(ref)
        models[ref] = load_ref(ref, recipe.dtype, provided or {})  # MODEL+LORA: the adapter folded in
        size = next(iter(models.values())).spec.vocab_size  # compared below, with a line that says what to do
        check_same_architecture([(m.spec.replace(vocab_size=size), describe(m.path)) for m in models.values()],
                                same_depth=False, allow_crimes=allow_crimes)
    if recipe.tokenizer is None:
        check_vocabularies(models)
    return models


def align_vocabularies(recipe: Recipe, models: dict[str, Model]) -> tuple[Vocabulary | None, dict[str, Model]]:
    """The output vocabulary and the models with embed / lm_head rows in it (None, models: merged by index)."""
    if recipe.tokenizer is None:
        return None, models
    for ref in tokenspec.row_models(recipe.tokenizer):
        expect(ref in models, f"tokenizer.tokens: expected a model the recipe merges, found {ref}")
    groups = {"embed": [s.model for s in recipe.slices[0].sources],
              "lm_head": [s.model for s in recipe.slices[-1].sources]}
    return reconcile(recipe.tokenizer, recipe.base_model, referenced(recipe), groups, models)


def tokenizer_dir(recipe: Recipe, models: dict[str, Model]) -> Path:
    """Where the output's tokenizer files are copied from when no vocabulary is built: the base's, else the first
    model's (mergekit's donor)."""
    return models[recipe.base_model or recipe.slices[0].sources[0].model].path


def chat_template(recipe: Recipe, models: dict[str, Model], options) -> str | None:
    """The recipe's chat template as text (jaxmerge.merge.chat), checked before the merge; it needs a tokenizer
    to go into: the built vocabulary's, or the donor's when the tokenizer is copied."""
    if recipe.chat_template is None:
        return None
    from jaxmerge.merge import chat
    from jaxmerge.merge.vocab import has_tokenizer
    text = chat.resolve(recipe.chat_template, [models[ref].path for ref in referenced(recipe)])
    donor = tokenizer_dir(recipe, models)
    expect(recipe.tokenizer is not None or not options.copy_tokenizer or has_tokenizer(donor),
           f"chat_template: expected a tokenizer to write it into, found none in {donor}")
    return text
