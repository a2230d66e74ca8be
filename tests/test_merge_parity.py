"""Every deterministic merge method against mergekit 0.1.5 (the oracle), end to end through `merge_recipe`,
on tiny fine-tunes of one base, with per-layer gradients and filters. Tolerance: 1e-5 relative, float32."""
from __future__ import annotations

import pytest

from tests.merge_oracle import jaxmerge_merge, make_family, mergekit_merge, worst_relative

TOL = 1e-5


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("family"))


def _gta(m, weight_extra=None, **global_params):
    """A task-vector recipe: gradients, filters at model level and global level, a negative weight."""
    return lambda p: dict(merge_method=m, base_model=p["base"], dtype="float32", models=[
        dict(model=p["ft0"], parameters=dict(weight=[0.2, 0.9], density=[0.3, 0.8], **(weight_extra or {}))),
        dict(model=p["ft1"], parameters=dict(weight=[{"filter": "mlp", "value": 0.7}, {"value": -0.4}],
                                             density=0.55)),
        dict(model=p["ft2"], parameters=dict(weight=0.5)),
    ], parameters=dict(density=[{"filter": "self_attn", "value": 0.25}, {"value": 0.6}], **global_params))


RECIPES = {
    "linear": lambda p: dict(merge_method="linear", dtype="float32", models=[
        dict(model=p["ft0"], parameters=dict(weight=[1, 2, 3])),
        dict(model=p["ft1"], parameters=dict(weight=[{"filter": "self_attn", "value": 0.25}, {"value": 1.0}])),
        dict(model=p["ft2"], parameters=dict(weight=0.5))]),
    "linear_unnormalized": lambda p: dict(merge_method="linear", dtype="float32", parameters=dict(
        normalize=False), models=[dict(model=p["ft0"], parameters=dict(weight=0.3)),
                                  dict(model=p["ft1"], parameters=dict(weight=[0.2, 0.9]))]),
    "task_arithmetic": lambda p: {k: v for k, v in _gta("task_arithmetic", **{"lambda": [0.5, 1.5]})(p).items()},
    "ties": _gta("ties", **{"lambda": 1.3}),
    "ties_rescaled_unnormalized": _gta("ties", normalize=False, rescale=True),
    "breadcrumbs": _gta("breadcrumbs", weight_extra=dict(gamma=[0.02, 0.1])),
    "breadcrumbs_ties": _gta("breadcrumbs_ties", weight_extra=dict(gamma=0.05), normalize=True),
    "slerp": lambda p: dict(merge_method="slerp", base_model=p["base"], dtype="float32", models=[
        dict(model=p["base"]), dict(model=p["ft0"])],
        parameters=dict(t=[{"filter": "self_attn", "value": [0, 0.5, 1]}, {"filter": "mlp", "value": [1, 0.3]},
                           {"value": 0.35}])),
    "nuslerp_base": lambda p: dict(merge_method="nuslerp", base_model=p["base"], dtype="float32", models=[
        dict(model=p["ft0"], parameters=dict(weight=[1.0, 0.2])), dict(model=p["ft1"], parameters=dict(weight=0.6))],
        parameters=dict(nuslerp_flatten=[{"filter": "mlp", "value": False}, {"value": True}],
                        nuslerp_row_wise=[{"filter": "up_proj", "value": True}, {"value": False}])),
    "nuslerp_nobase": lambda p: dict(merge_method="nuslerp", dtype="float32", models=[
        dict(model=p["ft0"], parameters=dict(weight=0.3)), dict(model=p["ft1"], parameters=dict(weight=0.6))]),
    "model_stock": lambda p: dict(merge_method="model_stock", base_model=p["base"], dtype="float32", models=[
        dict(model=p["ft0"]), dict(model=p["ft1"]), dict(model=p["ft2"])],
        parameters=dict(filter_wise=[{"filter": "mlp", "value": True}, {"value": False}])),
    "passthrough_slices": lambda p: dict(merge_method="passthrough", dtype="float32", slices=[
        dict(sources=[dict(model=p["ft0"], layer_range=[0, 2])]),
        dict(sources=[dict(model=p["ft1"], layer_range=[1, 3], parameters=dict(
            scale=[{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]))]),
        dict(sources=[dict(model=p["base"], layer_range=[2, 3])])]),
    "ties_slices": lambda p: dict(merge_method="ties", base_model=p["base"], dtype="float32", slices=[
        dict(sources=[dict(model=p["base"], layer_range=[0, 2]),
                      dict(model=p["ft0"], layer_range=[0, 2], parameters=dict(weight=[0.3, 1.0])),
                      dict(model=p["ft1"], layer_range=[1, 3], parameters=dict(weight=0.5))],
             parameters=dict(density=[0.2, 0.9])),
        dict(sources=[dict(model=p["base"], layer_range=[2, 3]),
                      dict(model=p["ft1"], layer_range=[0, 1], parameters=dict(weight=1.0)),
                      dict(model=p["ft2"], layer_range=[2, 3], parameters=dict(weight=0.25))],
             parameters=dict(density=0.4))]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_matches_mergekit(fam, tmp_path, name):
    recipe = RECIPES[name](fam)
    theirs = mergekit_merge(recipe, tmp_path / "mergekit")
    ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    worst, where = worst_relative(ours, theirs)
    assert worst <= TOL, f"{name}: {where} differs by {worst:.2e} relative"
