"""Recipe parameters -> hparams arrays, host-side, once: gradients over depth and filters become plain
per-(leaf, layer) numbers, so the jitted merge never sees a string or a Python branch.

Layout (what `merge_params` takes): hparams[name] mirrors the canonical params tree; model hparams hold [M]
(globals) / [M, L] (layers), global hparams [] / [L]. Booleans are float 0/1.

mergekit's rules reproduced here: depth t = j / (n - 1) within each output slice (1 for a one-layer slice);
embed gets t = 0 with the first slice's settings, final norm and lm_head t = 0 with the last slice's;
precedence per model: its own source parameters, then the slice's, then the recipe's; shared (global) hparams
skip the per-model level; per-model filters match the INPUT tensor's name, shared ones the output's.

Every value passes its method's table (`HParam.check`: kind, finite, range), the method's cell check (DELLA's
density +/- epsilon, linear's normalisable weights), and fractions that become counts (TIES / breadcrumbs
density, gamma) are snapped per tensor to a float32 with mergekit's count (jaxmerge.merge.count); where no
float32 has it the nearest is used and one warning says so. Parameters mergekit accepts and ignores (a `weight`
on slerp / model_stock models) are accepted with a warning (`RecipeWarning`).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.merge import count, settings
from jaxmerge.merge.hparams import REQUIRED
from jaxmerge.merge.methods import METHODS
from jaxmerge.merge.recipe import Recipe, RecipeWarning, Slice, Source, parse_recipe
from jaxmerge.families import family_of
from jaxmerge.params import GLOBAL_NAMES, hf_names, param_shapes


def model_sources(recipe: Recipe, sl: Slice) -> list[Source]:
    """The sources of a slice that carry per-model hparams, in order (the base is left out when it is one)."""
    uses_base = METHODS[recipe.method].uses_base
    return [s for s in sl.sources if not (uses_base and s.model == recipe.base_model)]


def layer_plan(recipe: Recipe, num_layers: int) -> list[tuple[Slice, int, float]]:
    """(slice, index within slice, depth t) for every output layer."""
    plan = []
    for sl in recipe.slices:
        rng = sl.sources[0].layer_range
        n = num_layers if rng is None else rng[1] - rng[0]
        plan += [(sl, j, j / (n - 1) if n > 1 else 1.0) for j in range(n)]
    expect(len(plan) == num_layers, f"expected the slices to produce {num_layers} layers, found {len(plan)}")
    return plan


def _value(recipe: Recipe, name: str, chain: list, tensor: str, t: float, where: str) -> Any:
    row = METHODS[recipe.method].hparam(name)
    for scope in chain:
        if scope and name in scope:
            value = settings.evaluate(scope[name], name, tensor, t, row.is_bool)
            if value is not None:
                return value
    default = row.default
    if default is REQUIRED:
        raise JaxmergeError(f"expected parameter {name} for {where} at {tensor}, found none")
    return default


def _scopes(recipe: Recipe) -> list[tuple[str, Mapping, set[str]]]:
    """(where, parameters, names allowed there) for every parameters mapping of the recipe. Per model: the
    method's per-model parameters and those it accepts without using (mergekit reads no shared value there)."""
    method = METHODS[recipe.method]
    known = {h.name for h in method.hparams}
    per_model = {h.name for h in method.hparams if h.per_model or h.role != "merge"}
    scopes = [("parameters", recipe.parameters, known)]
    for i, sl in enumerate(recipe.slices):
        scopes.append((f"slices[{i}].parameters", sl.parameters, known))
        scopes += [(f"parameters of {s.model}", s.parameters, per_model) for s in sl.sources]
    return scopes


def check_names(recipe: Recipe, spec: ArchSpec) -> None:
    """Refuse parameters the method does not have, shared ones set per model, and filters that match nothing;
    warn once per parameter that mergekit accepts and ignores."""
    method = METHODS[recipe.method]
    names = list(hf_names(spec))
    ignored = set()
    for where, params, allowed in _scopes(recipe):
        bad = sorted(set(params) - allowed)
        expect(not bad, f"{where}: parameters {bad} are not per-model/known for {recipe.method} "
                        f"(expected some of {sorted(allowed)})")
        ignored |= {n for n in params if method.hparam(n).role == "ignored"}
        for filt in (f for v in params.values() for f in settings.filters(v)):
            expect(any(filt in n for n in names), f"{where}: filter {filt!r} matches no tensor of this model")
    for name in sorted(ignored):
        warnings.warn(f"parameter {name} has no effect on {recipe.method} (mergekit accepts and ignores it): "
                      "ignored", RecipeWarning, stacklevel=2)


def resolve_hparams(recipe: Recipe | Mapping, spec: ArchSpec, names: tuple[str, ...] | None = None) -> dict:
    """hparams for `merge_params` from a recipe (parsed, or a raw mapping). `spec` is the OUTPUT spec;
    `names`, when given, must be the models (in Sources order) the recipe's per-model parameters belong to."""
    recipe = recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)
    check_names(recipe, spec)
    n_models = len(model_sources(recipe, recipe.slices[0]))
    expect(names is None or len(names) == n_models, f"expected {n_models} model names for this recipe, found "
                                                    f"{None if names is None else len(names)}")
    misses: list = []
    out = _global_cells(recipe, spec, misses)
    layers = _layer_cells(recipe, spec, layer_plan(recipe, spec.num_layers), misses)
    for name in out:
        out[name]["layers"] = layers[name]
    _warn_misses(misses)
    return {name: _to_jnp(tree) for name, tree in out.items()}


def _global_cells(recipe: Recipe, spec: ArchSpec, misses: list) -> dict:
    """{hparam: {global leaf: value}}: embed at t = 0 with the first slice's settings, the rest the last's."""
    method, shapes = METHODS[recipe.method], param_shapes(spec)
    out = {name: {} for name in (*method.model_hparams, *method.global_hparams)}
    for leaf in (k for k in shapes if k != "layers"):
        sl = recipe.slices[0] if leaf == "embed" else recipe.slices[-1]
        name_of = GLOBAL_NAMES[leaf]
        cells = _cell(recipe, method, sl, 0, 0.0, name_of, lambda s: name_of, recipe.parameters,
                      math.prod(shapes[leaf]), misses)
        for name, v in cells.items():
            out[name][leaf] = v
    return out


def _layer_cells(recipe: Recipe, spec: ArchSpec, plan: list, misses: list) -> dict:
    """{hparam: {layer leaf: [..., L] values}} along the layer plan (per-model filters see input names)."""
    method = METHODS[recipe.method]
    out: dict = {name: {} for name in (*method.model_hparams, *method.global_hparams)}
    for leaf, (suffix, shape) in family_of(spec).layers(spec).items():
        rows = [_cell(recipe, method, sl, j, t, f"model.layers.{i}.{suffix}",
                      lambda s, j=j: f"model.layers.{(s.layer_range or (0,))[0] + j}.{suffix}", recipe.parameters,
                      math.prod(shape), misses) for i, (sl, j, t) in enumerate(plan)]
        for name in out:
            out[name][leaf] = np.stack([r[name] for r in rows], axis=-1)
    return out


def _warn_misses(misses: list[tuple]) -> None:
    if not misses:
        return
    name, value, tensor, n, want, got = misses[0]
    warnings.warn(f"no float32 {name} keeps mergekit's count for {len(misses)} tensor(s) (first: {name} {value!r} "
                  f"of {tensor}, {n} elements: mergekit keeps {want}, jaxmerge {got})", RecipeWarning, stacklevel=3)


def _to_jnp(tree):
    return {k: _to_jnp(v) if isinstance(v, dict) else jnp.asarray(v, jnp.float32) for k, v in tree.items()}


def _cell(recipe, method, sl, j, t, out_name, in_name, top, numel, misses) -> dict[str, np.ndarray]:
    """All hparams for one output tensor: model hparams as [M] arrays, global ones as 0-d arrays."""
    cell = {}
    for name in method.global_hparams:
        value = _value(recipe, name, [sl.parameters, top], out_name, t, "the merge")
        cell[name] = np.float32(_checked(method, name, value, numel, out_name, misses))
    for name in method.model_hparams:
        vals = [_checked(method, name, _value(recipe, name, [s.parameters, sl.parameters, top], in_name(s), t,
                                              s.model), numel, in_name(s), misses)
                for s in model_sources(recipe, sl)]
        cell[name] = np.asarray(vals, np.float32)
    if method.check is not None:
        method.check(cell, out_name)
    return cell


def _checked(method, name: str, value, numel: int, tensor: str, misses: list) -> float:
    """The value checked against the table; a fraction that becomes a count snapped for this tensor's size."""
    row = method.hparam(name)
    value = row.check(value, f"{name} at {tensor}")
    if not row.snapped:
        return value
    snapped = count.snap(value, numel)
    if snapped is None:
        snapped = float(np.float32(value))
        misses.append((name, value, tensor, numel, count.host_count(value, numel), count.host_count(snapped, numel)))
    return snapped
