"""Recipe -> lazily loaded `Columns` -> merged `Model` (deferred tensors) -> HF directory, one tensor at a time.
Host-side orchestration of `jaxmerge merge`.

Slices are realised by position: model position p of the merge is the concatenation, over output slices, of the
layer range of the p-th (non-base) source of each slice; embed comes from the first slice's sources and the final
norm / lm_head from the last slice's, as mergekit plans them. A `models:` recipe is one slice over all layers.

Dtypes, as mergekit 0.1.5: sources are read in the recipe's `dtype` (else as stored); the merge is computed in
`Options.math_dtype`, else the comment's `math_dtype`, else `dtype`, else the sources' dtype (float32 when they
differ, as torch promotes); the output is written in `out_dtype`, else `dtype`, else the sources' dtype.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect
from jaxmerge.io import DTYPES, Model
from jaxmerge.deferred import concatenate
from jaxmerge.merge.methods import METHODS
from jaxmerge.merge.numerics import check_math
from jaxmerge.merge.prepare import (align_vocabularies, chat_template, load_models, referenced,  # noqa: F401
                                    tokenizer_dir)
from jaxmerge.merge.recipe import Recipe
from jaxmerge.merge.resolve import model_sources
from jaxmerge.merge.stream import Columns, merge_deferred
from jaxmerge.merge.vocab import Vocabulary
from jaxmerge.vlm.checkpoint import Tower, the_tower


@dataclasses.dataclass(frozen=True)
class Options:
    """What `jaxmerge merge` takes besides the recipe (mergekit's option names and defaults where it has them).
    `seed`: DARE / DELLA masks (None: the recipe's merge_key, else 0); `math_dtype`: see the module doc;
    `out_shard_size`: bytes per weight shard (mergekit's "5B"; <= 0: one file)."""
    seed: int | None = None
    math_dtype: str | None = None
    out_shard_size: int = 5 * 10**9
    copy_tokenizer: bool = True
    write_model_card: bool = True
    overwrite: bool = False
    allow_crimes: bool = False  # mergekit's: models of different families whose tensors and math agree


def check_structure(recipe: Recipe) -> None:
    """Base present where required, and the number of models each method takes, in every slice."""
    method = METHODS[recipe.method]
    lo, hi = method.counts
    if method.needs_base:
        expect(recipe.base_model is not None, f"expected base_model for merge_method {recipe.method}, found none")
    for i, sl in enumerate(recipe.slices):
        if method.uses_base and recipe.base_model:
            expect(any(s.model == recipe.base_model for s in sl.sources),
                   f"expected base_model {recipe.base_model} among the sources of slice {i}, found it missing")
        n = len(model_sources(recipe, sl))
        expect(n >= lo and (hi is None or n <= hi), f"expected {lo if lo == hi else f'at least {lo}'} "
               f"{'non-base ' if method.needs_base else ''}models for {recipe.method} (slice {i}), found {n}")


def _layers(model: Model, rng: tuple[int, int] | None) -> dict[str, np.ndarray]:
    start, stop = rng or (0, model.spec.num_layers)
    expect(stop <= model.spec.num_layers, f"expected layer_range within the {model.spec.num_layers} layers of "
                                          f"{model.path}, found [{start}, {stop}]")
    return {k: v[start:stop] for k, v in model.params["layers"].items()}


def _column(slices_sources, models: dict[str, Model]):
    """One merge position: layers concatenated over slices; embed from the first, norm/lm_head from the last."""
    first, last = models[slices_sources[0].model].params, models[slices_sources[-1].model].params
    parts = [_layers(models[s.model], s.layer_range) for s in slices_sources]
    params = {k: (first if k == "embed" else last)[k] for k in first if k != "layers"}
    params["layers"] = parts[0] if len(parts) == 1 else {k: concatenate([p[k] for p in parts]) for k in parts[0]}
    return params


def build_sources(recipe: Recipe, models: dict[str, Model]) -> Columns:
    """The recipe's sources, one tree per model position (nothing read yet), with the output model's spec."""
    check_structure(recipe)
    columns = [model_sources(recipe, sl) for sl in recipe.slices]
    expect(len({len(c) for c in columns}) == 1, "expected the same number of models in every slice, found "
                                                f"{[len(c) for c in columns]}")
    positions = [_column([c[p] for c in columns], models) for p in range(len(columns[0]))]
    base = None
    if recipe.base_model is not None and METHODS[recipe.method].uses_base:
        base = _column([next(s for s in sl.sources if s.model == recipe.base_model) for sl in recipe.slices],
                       models)
    donor = models[recipe.base_model or recipe.slices[0].sources[0].model]
    spec = donor.spec.with_layers(output_types(recipe, models)).replace(vocab_size=positions[0]["embed"].shape[0])
    return Columns(spec, base, positions, tuple(s.model for s in columns[0]))


def output_types(recipe: Recipe, models: dict[str, Model]) -> tuple[str, ...]:
    """The attention type (full / sliding window) of every output layer: the type its layer has in the
    slice's sources, which must agree (a layer merged from a sliding and a full-attention layer has no type)."""
    types = []
    for i, sl in enumerate(recipe.slices):
        ranges = [(s, s.layer_range or (0, models[s.model].spec.num_layers)) for s in sl.sources]
        for j in range(ranges[0][1][1] - ranges[0][1][0]):
            found = {models[s.model].spec.attention_types[r[0] + j] for s, r in ranges
                     if r[0] + j < models[s.model].spec.num_layers}
            expect(len(found) == 1, f"expected the sources of slice {i} to agree on the attention type of its "
                                    f"layer {j}, found {sorted(found)}")
            types.append(found.pop())
    return tuple(types)


def storage_dtype(models: dict[str, Model]) -> str:
    """The dtype mergekit computes in without a recipe dtype: the sources' own, float32 when they differ."""
    kinds = {m.dtype for m in models.values()}
    return kinds.pop() if len(kinds) == 1 else "float32"


def math_dtype(recipe: Recipe, models: dict[str, Model], override: str | None) -> str:
    """The dtype the merge is computed in (module doc); --math-dtype and the comment must not disagree."""
    expect(override is None or recipe.math_dtype is None or override == recipe.math_dtype,
           f"expected one math dtype, found --math-dtype {override} and the recipe's '# jaxmerge:' math_dtype "
           f"{recipe.math_dtype}")
    return check_math(override or recipe.math_dtype or recipe.dtype or storage_dtype(models))


def out_dtype(recipe: Recipe, models: dict[str, Model]) -> str:
    """mergekit's output dtype: out_dtype, else dtype, else the sources' dtype."""
    return recipe.out_dtype or recipe.dtype or storage_dtype(models)


def merge_key(recipe: Recipe, seed: int | None) -> jax.Array:
    """The recipe's raw merge key (as evolution drew its masks with it), else one from the seed (default 0)."""
    expect(recipe.merge_key is None or seed is None, "expected either --seed or the recipe's '# jaxmerge:' "
                                                     "merge_key, found both (remove one)")
    if recipe.merge_key is not None:
        return jnp.asarray(recipe.merge_key, jnp.uint32)
    return jax.random.key(0 if seed is None else seed)


@dataclasses.dataclass(frozen=True)
class Merged:
    """A merge's result before it is written: the model (host arrays, `path` None), the reconciled vocabulary
    (or None), the resolved chat template (or None) and the directory a copied tokenizer comes from."""
    model: Model
    vocab: Vocabulary | None
    template: str | None
    tokenizer_from: Path
    tower: Tower | None = None  # a VLM among the models: the output is that VLM with `model` as its LM


def merge_model(recipe: Recipe, options: Options, provided: dict | None = None,
                on_step: Callable[[str], None] = lambda step: None) -> Merged:
    """Load (lazily), reconcile, and give the merge as deferred tensors (jaxmerge.merge.stream): each is read and
    merged when the writer asks for it. `provided`: models by reference that are already in memory or
    elsewhere on disk (the earlier documents of a chain, jaxmerge.merge.multi). With a VLM among the models its
    language model merges like any text model and the result carries the VLM's tower (and its tokenizer)."""
    from jaxmerge.merge.resolve import resolve_hparams
    models = load_models(recipe, lambda ref: on_step(f"load {ref}"), provided, options.allow_crimes)
    tower = the_tower({ref: m.path for ref, m in models.items()}, recipe.dtype)  # a VLM among them: a VLM out
    template = chat_template(recipe, models, options)
    vocab, aligned = align_vocabularies(recipe, models)
    expect(tower is None or vocab is None, f"expected one vocabulary with a vision-language model (its processor "
                                           f"and image token belong to it), found a tokenizer setting that aligns "
                                           f"vocabularies in {tower.path if tower else ''}'s merge")
    columns = build_sources(recipe, aligned)
    hparams = resolve_hparams(recipe, columns.spec, columns.names)
    key, math = merge_key(recipe, options.seed), math_dtype(recipe, models, options.math_dtype)
    on_step("merge")
    merged = merge_deferred(METHODS[recipe.method], columns, hparams, key,
                            np.dtype(DTYPES[out_dtype(recipe, models)]), math)
    tokenizer = tower.path if tower is not None and recipe.tokenizer is None else tokenizer_dir(recipe, models)
    return Merged(Model(columns.spec, merged, None), vocab, template, tokenizer, tower)


def merge_recipe(recipe: Recipe, out_dir: str | Path, options: Options | None = None, *,
                 on_step: Callable[[str], None] = lambda step: None, provided: dict | None = None,
                 **changes) -> Path:
    """Load, merge tensor by tensor as the writer asks, and write a HF directory atomically. `changes`: Options
    fields."""
    from jaxmerge.atomic import check_target
    from jaxmerge.merge.output import write_merge
    options = dataclasses.replace(options or Options(), **changes)
    check_target(Path(out_dir).absolute(), options.overwrite)  # fail before minutes of loading
    done = merge_model(recipe, options, provided, on_step)
    on_step("write")
    return write_merge(recipe, done.model, out_dir, options, done.tokenizer_from, done.vocab, done.template,
                       done.tower)
