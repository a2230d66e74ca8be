"""A DFS winner as a mergekit `passthrough` recipe: one slice per used step of the path, the fold's factors as
`scale` filters, so `jaxmerge merge recipe.yml` writes exactly the exported model (and mergekit-yaml the same
tensors up to its own float32 rounding).

Step k of the path is layer l of model m: a slice `{model: m, layer_range: [l, l + 1]}`. The fold (fold.py)
multiplies that layer's o_proj / o_proj bias / down_proj by 1 / C_k and its two norm gains by sign(C_k), and
the final norm by sign(C_last): each is a per-model `scale` with a filter (filters match the input tensor's
name; `o_proj` matches the bias too). The factors are the float32 numbers the fold used, written exactly.
"""
from __future__ import annotations

from jaxmerge.dfs.fold import NORM_GAINS, fold_factors, used_steps
from jaxmerge.dfs.layout import DecodedPath, DFSLayout


def _scale(inverse: float, sign: float, last_sign: float | None) -> list[dict] | None:
    """A step's `scale` setting, or None when every factor is 1 (passthrough's default)."""
    rules = [{"filter": "model.norm", "value": last_sign}] if last_sign is not None and last_sign != 1 else []
    if inverse != 1:
        rules += [{"filter": f, "value": inverse} for f in ("o_proj", "down_proj")]
    if sign != 1:
        rules += [{"filter": f, "value": sign} for f in NORM_GAINS]
    return rules + [{"value": 1.0}] if rules else None


def passthrough_recipe(layout: DFSLayout, path: DecodedPath, names: list[str], out_dtype: str) -> dict:
    """The recipe of the folded path (host `path`, as `fold` takes it)."""
    inverse, sign = fold_factors(path)
    steps = used_steps(path)
    slices = []
    for k, step in enumerate(steps):
        model, layer = layout.step_source(int(step))
        source = {"model": names[model], "layer_range": [layer, layer + 1]}
        scale = _scale(float(inverse[k]), float(sign[k]), float(sign[-1]) if k == len(steps) - 1 else None)
        if scale is not None:
            source["parameters"] = {"scale": scale}
        slices.append({"sources": [source]})
    return {"merge_method": "passthrough", "slices": slices, "dtype": "float32", "out_dtype": out_dtype}

