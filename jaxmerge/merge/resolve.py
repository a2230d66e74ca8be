"""Recipe parameters -> hparams arrays, host-side, once: gradients over depth and filters become plain
per-(leaf, layer) numbers, so the jitted merge never sees a string or a Python branch.

Layout (what `merge_params` takes): hparams[name] mirrors the canonical params tree; model hparams hold [M]
(globals) / [M, L] (layers), global hparams [] / [L]. Booleans are float 0/1.

mergekit's rules reproduced here: depth t = j / (n - 1) within each output slice (1 for a one-layer slice);
embed gets t = 0 with the first slice's settings, final norm and lm_head t = 0 with the last slice's;
precedence per model: its own source parameters, then the slice's, then the recipe's; shared (global) hparams
skip the per-model level; per-model filters match the INPUT tensor's name, shared ones the output's.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.merge import settings
from jaxmerge.merge.methods import BOOL_HPARAMS, INERT, METHODS, REQUIRED, UNIT_HPARAMS, defaults
from jaxmerge.merge.recipe import Recipe, Slice, Source, parse_recipe
from jaxmerge.params import GLOBAL_LEAVES, LAYER_LEAVES, hf_names, layer_leaf_shapes, param_shapes

SNAPPED = {"ties": ("density",), "breadcrumbs": ("density", "gamma"), "breadcrumbs_ties": ("density", "gamma")}
OPTIONAL_BASE = frozenset({"nuslerp"})


def model_sources(recipe: Recipe, sl: Slice) -> list[Source]:
    """The sources of a slice that carry per-model hparams, in order (the base is left out when it is one)."""
    method = METHODS[recipe.method]
    uses_base = method.needs_base or recipe.method in OPTIONAL_BASE
    return [s for s in sl.sources if not (uses_base and s.model == recipe.base_model)]


def snap_fraction(value: float, n: int) -> float:
    """A float32-safe stand-in for `value` with floor(value * n) equal to mergekit's float64 int(value * n)."""
    if value >= 1 or value <= 0:
        return value
    return (int(value * n) + 0.5) / n


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
    for scope in chain:
        if scope and name in scope:
            value = settings.evaluate(scope[name], name, tensor, t, name in BOOL_HPARAMS)
            if value is not None:
                return value
    default = defaults(recipe.method)[name]
    if default is REQUIRED:
        raise JaxmergeError(f"expected parameter {name} for {where} at {tensor}, found none")
    return default


def check_names(recipe: Recipe, spec: ArchSpec) -> None:
    """Refuse parameters the method does not have, shared ones set per model, and filters that match nothing."""
    method = METHODS[recipe.method]
    known = set(method.model_hparams) | set(method.global_hparams) | INERT.get(recipe.method, frozenset())
    scopes = [("parameters", recipe.parameters, known)]
    for i, sl in enumerate(recipe.slices):
        scopes.append((f"slices[{i}].parameters", sl.parameters, known))
        per_model = set(method.model_hparams) | INERT.get(recipe.method, frozenset())
        scopes += [(f"parameters of {s.model}", s.parameters, per_model) for s in sl.sources]
    names = list(hf_names(spec))
    for where, params, allowed in scopes:
        bad = sorted(set(params) - allowed)
        expect(not bad, f"{where}: parameters {bad} are not per-model/known for {recipe.method} "
                        f"(expected some of {sorted(allowed)})")
        for filt in (f for v in params.values() for f in settings.filters(v)):
            expect(any(filt in n for n in names), f"{where}: filter {filt!r} matches no tensor of this model")


def resolve_hparams(recipe: Recipe | Mapping, spec: ArchSpec, names: tuple[str, ...] | None = None) -> dict:
    """hparams for `merge_params` from a recipe (parsed, or a raw mapping). `spec` is the OUTPUT spec;
    `names`, when given, must be the models (in Sources order) the recipe's per-model parameters belong to."""
    recipe = recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)
    method = METHODS[recipe.method]
    check_names(recipe, spec)
    plan = layer_plan(recipe, spec.num_layers)
    count = len(model_sources(recipe, recipe.slices[0]))
    expect(names is None or len(names) == count, f"expected {count} model names for this recipe, found "
                                                 f"{None if names is None else len(names)}")
    top = recipe.parameters
    out = {name: {} for name in (*method.model_hparams, *method.global_hparams)}
    shapes = param_shapes(spec)
    for leaf in (k for k in shapes if k != "layers"):
        sl = recipe.slices[0] if leaf == "embed" else recipe.slices[-1]
        cells = _cell(recipe, method, sl, 0, 0.0, GLOBAL_LEAVES[leaf][0], lambda s: GLOBAL_LEAVES[leaf][0], top,
                      math.prod(shapes[leaf]))
        for name, v in cells.items():
            out[name][leaf] = v
    layer_shapes = layer_leaf_shapes(spec)
    out_layers = {name: {} for name in out}
    for leaf, shape in layer_shapes.items():
        suffix = LAYER_LEAVES[leaf][0]
        rows = [_cell(recipe, method, sl, j, t, f"model.layers.{i}.{suffix}",
                      lambda s, j=j: f"model.layers.{(s.layer_range or (0,))[0] + j}.{suffix}", top,
                      math.prod(shape)) for i, (sl, j, t) in enumerate(plan)]
        for name in out:
            out_layers[name][leaf] = np.stack([r[name] for r in rows], axis=-1)
    for name in out:
        out[name]["layers"] = out_layers[name]
    return {name: _to_jnp(tree) for name, tree in out.items()}


def _to_jnp(tree):
    return {k: _to_jnp(v) if isinstance(v, dict) else jnp.asarray(v, jnp.float32) for k, v in tree.items()}


def _cell(recipe, method, sl, j, t, out_name, in_name, top, numel) -> dict[str, np.ndarray]:
    """All hparams for one output tensor: model hparams as [M] arrays, global ones as 0-d arrays."""
    cell = {}
    for name in method.global_hparams:
        cell[name] = np.float32(_checked(recipe, name, _value(recipe, name, [sl.parameters, top], out_name, t,
                                                              "the merge"), numel))
    for name in method.model_hparams:
        vals = [_checked(recipe, name, _value(recipe, name, [s.parameters, sl.parameters, top], in_name(s), t, s.model),
                         numel) for s in model_sources(recipe, sl)]
        cell[name] = np.asarray(vals, np.float32)
    _check_della(recipe, cell, out_name)
    return cell


def _checked(recipe: Recipe, name: str, value, numel: int) -> float:
    value = float(value)
    if name in UNIT_HPARAMS - {"t"}:
        expect(0.0 <= value <= 1.0, f"expected {name} in [0, 1], found {value}")
    if name in SNAPPED.get(recipe.method, ()):
        value = snap_fraction(value, numel)
    return value


def _check_della(recipe: Recipe, cell: dict, where: str) -> None:
    if "epsilon" not in cell:
        return
    for d, e in zip(cell["density"], cell["epsilon"]):
        expect(d >= 1 or d <= 0 or (0 < d - e and d + e < 1),
               f"expected density +/- epsilon inside (0, 1) at {where}, found density {d:g}, epsilon {e:g}")
