"""A DFS winner as a mergekit `passthrough` recipe: one slice per used step of the path, the fold's factors as
`scale` filters, so `jaxmerge merge recipe.yml` writes exactly the exported model (and mergekit-yaml the same
tensors up to its own float32 rounding).

Step k of the path is layer l of model m: a slice `{model: m, layer_range: [l, l + 1]}`. The fold (fold.py)
multiplies that layer's residual writers by 1 / C_k and its pre-norm gains by sign(C_k), and the final norm by
sign(C_last): each is a per-model `scale` with a filter (filters match the input tensor's name; `o_proj` matches
the bias too, `down_proj` a mixture's stacked experts and its shared expert). The factors are the float32 numbers
the fold used, written exactly. A `scale` multiplies the stored tensor, so a factor on a (1 + w) gain (Gemma)
other than 1 has no recipe: `passthrough_recipe` then returns None and says why.
"""
from __future__ import annotations

from jaxmerge.arch import ArchSpec
from jaxmerge.dfs.fold import fold_factors, used_steps
from jaxmerge.dfs.layout import DecodedPath, DFSLayout
from jaxmerge.families import family_of
from jaxmerge.params import LEAVES

FILTERS = {"o_bias": "o_proj", "experts_down": "down_proj"}  # leaves another leaf's filter already matches
NO_RECIPE = ("its (1 + w) norm gains would need factors other than 1, which a passthrough `scale` (a product "
             "with the stored w) cannot express")


def _filters(leaves) -> list[str]:
    return list(dict.fromkeys(FILTERS.get(leaf, leaf) for leaf in leaves))


def _scale(spec: ArchSpec, inverse: float, sign: float, last_sign: float | None) -> list[dict] | None:
    """A step's `scale` setting, or None when every factor is 1 (passthrough's default)."""
    family = family_of(spec)
    rules = [{"filter": "model.norm", "value": last_sign}] if last_sign is not None and last_sign != 1 else []
    if inverse != 1:
        rules += [{"filter": f, "value": inverse} for f in _filters(family.residual_writers)]
    if sign != 1:
        rules += [{"filter": f, "value": sign} for f in _filters(family.pre_norms)]
    return rules + [{"value": 1.0}] if rules else None


def expressible(spec: ArchSpec, path: DecodedPath) -> bool:
    """Whether a passthrough recipe can carry the fold: no factor but 1 on a (1 + w) gain."""
    if not spec.norm_offset:
        return True
    inverse, sign = fold_factors(path)
    norm_writers = any(LEAVES[leaf].group == "norm" for leaf in family_of(spec).residual_writers)
    return bool((sign == 1).all() and (not norm_writers or (inverse == 1).all()))


def passthrough_recipe(layout: DFSLayout, path: DecodedPath, names: list[str], out_dtype: str,
                       spec: ArchSpec | None = None) -> dict | None:
    """The recipe of the folded path (host `path`, as `fold` takes it), or None (see the module doc); `spec`:
    model A's (None: the Llama family's norms)."""
    spec = spec or ArchSpec("llama", 1, 1, 1, 1, 1, 1, 1)
    if not expressible(spec, path):
        return None
    inverse, sign = fold_factors(path)
    steps = used_steps(path)
    slices = []
    for k, step in enumerate(steps):
        model, layer = layout.step_source(int(step))
        source = {"model": names[model], "layer_range": [layer, layer + 1]}
        scale = _scale(spec, float(inverse[k]), float(sign[k]), float(sign[-1]) if k == len(steps) - 1 else None)
        if scale is not None:
            source["parameters"] = {"scale": scale}
        slices.append({"sources": [source]})
    return {"merge_method": "passthrough", "slices": slices, "dtype": "float32", "out_dtype": out_dtype}
