"""The PS winner as a mergekit recipe that rebuilds it exactly, with `jaxmerge merge` and (deterministic
methods) with `mergekit-yaml`.

Exactness takes three things:
- values: every evolved value is the float32 the candidate used, written as the float64 number equal to it
  (PyYAML writes repr), so a reader gets that float32 back; fixed parameters are written as given.
- no interpolation: mergekit evaluates a gradient list at t * (n - 1), which is not an integer for some layers
  (j / 22 * 22 != j), and a density 1.0 read there as 0.9999999999999999 drops an element. So per-layer values
  are written as one slice per layer group, each with plain numbers; one group is a `models:` recipe.
  In a slices recipe mergekit takes embed from the first slice and the final norm and lm_head from the last;
  the genome gives all three the first layer group's values, so the last slice carries them as filters.
- the merge key: DARE/DELLA masks are a function of the candidate's key, written as the first line
  `# jaxmerge: {"merge_key": [k0, k1]}` (a comment to mergekit, which draws its own masks; `jaxmerge merge`
  reads it and uses that key).
`dtype: float32` is the dtype evolution merges in, `out_dtype` the candidates' dtype (what was scored).
"""
from __future__ import annotations

import json

import numpy as np
import yaml

from jaxmerge.params import spec_groups
from jaxmerge.ps.genome import GeneSpec

# mergekit filters that select each parameter group; the first that matches a tensor name wins, and norms are
# the default (q_norm / k_norm sit inside self_attn, so they fall in the attention group, as in jaxmerge).
GROUP_FILTERS = (("attn", "self_attn"), ("mlp", "mlp"), ("embed", "embed_tokens"), ("embed", "lm_head"))
# a mixture's routed experts and router, ahead of the "mlp" filter that would take them
EXPERT_FILTERS = (("experts", "mlp.experts"), ("experts", "mlp.gate."))
KEY_COMMENT = "# jaxmerge: "


def exact(value) -> float:
    """The float32 `value` as the Python float equal to it (written by repr, read back as the same float32)."""
    return float(np.float32(value))


def group_filters(spec) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(the spec's parameter groups, the (group, filter) rules that select them): only groups the family has and
    filters that match one of its tensors (a tied model has no lm_head)."""
    groups = spec_groups(spec)
    filters = (EXPERT_FILTERS if "experts" in groups else ()) + GROUP_FILTERS
    return groups, tuple((g, f) for g, f in filters if g in groups and not (f == "lm_head" and spec.tie_word_embeddings))


def setting(cells: np.ndarray, param_groups: bool, overrides: list[dict] = (), groups=None):
    """One slice's value of a hyper-parameter from its [C] cells (C: one per group): a number, or filters per
    parameter group (`groups`: group_filters(spec)); `overrides` ({filter, value}) come first."""
    if not param_groups and not overrides:
        return exact(cells[0])
    if not param_groups:
        return [*overrides, {"value": exact(cells[0])}]
    names, filters = groups
    rules = [{"filter": f, "value": exact(cells[names.index(g)])} for g, f in filters]
    return [*overrides, *rules, {"value": exact(cells[names.index("norm")])}]


def head_overrides(genome: GeneSpec, first: np.ndarray) -> list[dict]:
    """Filters giving the final norm and lm_head the first layer group's values (cells `first` [C])."""
    groups = spec_groups(genome.spec)
    col = (lambda g: groups.index(g)) if genome.param_groups else (lambda g: 0)
    found = [{"filter": "model.norm", "value": exact(first[col("norm")])}]
    if not genome.spec.tie_word_embeddings:
        found.insert(0, {"filter": "lm_head", "value": exact(first[col("embed")])})
    return found


def _cells(genes: dict, fixed: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """[..., G, C] cells of a hyper-parameter: evolved ones from the genes, fixed ones broadcast."""
    if name in genes:
        return np.asarray(genes[name], np.float32)
    return np.full(shape, fixed[name], np.float32)


def to_recipe(genome: GeneSpec, genes: dict, method: str, models: list[str], base: str | None, out_dtype: str):
    """The mergekit recipe (a dict) of a candidate whose decoded genes are `genes` (float32 arrays). Fixed
    switches (normalize, rescale, ...) are written as true/false, as mergekit reads them."""
    from jaxmerge.merge.methods import hparam
    fixed = {name: value for name, value, _ in genome.fixed}
    per_model = [g.name for g in genome.genes if g.per_model] + [n for n, _, pm in genome.fixed if pm]
    shared = [g.name for g in genome.genes if not g.per_model]
    cells = (genome.num_layer_groups, genome.num_param_groups)
    model_cells = {h: _cells(genes, fixed, h, (len(models), *cells)) for h in per_model}
    shared_cells = {h: _cells(genes, {}, h, cells) for h in shared}
    recipe = {"merge_method": method}
    if base:
        recipe["base_model"] = base
    if genome.num_layer_groups == 1:
        groups = group_filters(genome.spec)
        recipe["models"] = [{"model": name, "parameters": {h: setting(model_cells[h][m, 0], genome.param_groups,
                                                                      (), groups) for h in per_model}}
                            for m, name in enumerate(models)]
        top = {h: setting(shared_cells[h][0], genome.param_groups, (), groups) for h in shared}
    else:
        recipe["slices"] = _slices(genome, model_cells, shared_cells, models, base)
        top = {}
    top.update({n: bool(v) if hparam(method, n).is_bool else v for n, v, pm in genome.fixed if not pm})
    if top:
        recipe["parameters"] = top
    recipe.update(dtype="float32", out_dtype=out_dtype)
    return recipe


def _slices(genome: GeneSpec, model_cells: dict, shared_cells: dict, models: list[str], base: str | None):
    k, layers = genome.layers_per_group, genome.spec.num_layers
    out = []
    for g in range(genome.num_layer_groups):
        span = [g * k, min((g + 1) * k, layers)]
        last = g == genome.num_layer_groups - 1 and g > 0

        def value(c, h):
            return setting(c[g], genome.param_groups, head_overrides(genome, c[0]) if last else (),
                           group_filters(genome.spec))
        sources = [{"model": name, "layer_range": list(span),
                    "parameters": {h: value(model_cells[h][m], h) for h in model_cells}}
                   for m, name in enumerate(models)]
        if base:
            sources.append({"model": base, "layer_range": list(span)})
        sl = {"sources": sources}
        if shared_cells:
            sl["parameters"] = {h: value(shared_cells[h], h) for h in shared_cells}
        out.append(sl)
    return out


def recipe_text(recipe: dict, merge_key) -> str:
    """recipe.yml: the key comment, then the recipe as YAML."""
    key = [int(v) for v in np.asarray(merge_key).reshape(-1)]
    return KEY_COMMENT + json.dumps({"merge_key": key}) + "\n" + yaml.safe_dump(recipe, sort_keys=False)
