"""mergekit's own recipes in float16 / bfloat16 give mergekit's tensors: the merge is computed in the recipe's
dtype (task vectors, sign election, sums), as mergekit 0.1.5 computes it; without a dtype in the sources' dtype
(bf16 in -> bf16 out); `math_dtype: float32` is the explicit float32 option.

Recipes from mergekit's files on tiny models: examples/bio-merge.yml, examples/ties.yml (its gradients and
filter), and tests/test_basic_merges.py's two-model configs (TIES, slerp, model_stock, linear, with the `weight`s
mergekit accepts and ignores on slerp / model_stock). Oracle: mergekit in-process with stable sorts (see
tests.merge_oracle.stable_sorts; stock mergekit differs from it only in which elements tied at the TIES cut it
keeps, never in how many, tests/test_merge_count.py).

Tolerances (per method family, fixed): the task-vector methods, model_stock, nuslerp and passthrough are torch ops
on the 16-bit dtype, reproduced op by op: bit-identical. linear and slerp compute in float32 and round once, and
mergekit's float32 uses fused multiply-adds, which XLA has no op for: at most one 16-bit unit in the last place.
Of the methods mergekit 0.1.5 added: nearswap, ram, ramplus_tl, sce and multislerp are bit-identical too;
arcee_fusion is bit-identical but at its cut (tests.merge_oracle.assert_cut_family). karcher is not: its float32
norms come from torch's vectorised reduction, whose order (and fused multiply-adds) XLA does not reproduce, so
they differ in the last float32 bit; in float16 that moves results by a unit or two, and in bfloat16 mergekit's
iteration never converges (each step is ~1 bf16 unit long, rounding noise) and amplifies it. Its family: within
KARCHER_EPS units of the dtype's epsilon, relative to the tensor's largest value.
ramplus_tl and arcee_fusion multiply by a float32 coefficient tensor, which promotes mergekit's result to float32,
and with no out_dtype mergekit writes those float32 tensors (its config.json says the recipe's dtype); jaxmerge
writes the recipe's dtype: mergekit's tensors rounded once to it.
"""
from __future__ import annotations

import json

import pytest
import torch

import numpy as np

from tests.merge_oracle import (PROMOTED, ROUNDED_ONCE, assert_cut_family, assert_karcher_close, jaxmerge_merge,
                                make_family, mergekit_merge, read_tensors, stable_sorts, ulps)


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("family16"))


def _two(p, method, dtype, **params):
    """test_basic_merges' two_model_config: weights 0.6 / 0.4 on models a, b; the base is c, or a for slerp."""
    recipe = dict(merge_method=method, dtype=dtype, models=[
        dict(model=p["ft0"], parameters=dict(weight=0.6)), dict(model=p["ft1"], parameters=dict(weight=0.4))])
    if method != "linear":
        recipe["base_model"] = p["ft0"] if method == "slerp" else p["base"]
    return {**recipe, **({"parameters": params} if params else {})}


RECIPES = {
    "bio-merge.yml": lambda p: dict(
        merge_method="ties", base_model=p["base"], dtype="float16", parameters=dict(normalize=False, int8_mask=True),
        models=[dict(model=p["ft0"], parameters=dict(density=0.5, weight=0.5)),
                dict(model=p["ft1"], parameters=dict(density=0.5, weight=0.5))]),
    "ties.yml": lambda p: dict(
        merge_method="ties", base_model=p["base"], dtype="float16", parameters=dict(normalize=True, int8_mask=True),
        models=[dict(model=p["ft0"], parameters=dict(density=[1, 0.7, 0.1], weight=1.0)),
                dict(model=p["ft1"], parameters=dict(density=0.5, weight=[0, 0.3, 0.7, 1])),
                dict(model=p["ft2"], parameters=dict(density=0.33, weight=[{"filter": "mlp", "value": 0.5},
                                                                           {"value": 0}]))]),
    "test_ties_merge": lambda p: _two(p, "ties", "bfloat16", density=0.3),
    "test_slerp_merge": lambda p: _two(p, "slerp", "bfloat16", t=0.35),
    "test_model_stock_merge": lambda p: _two(p, "model_stock", "float16"),
    "test_linear_merge": lambda p: _two(p, "linear", "float16"),
}
NEW = {  # the methods mergekit 0.1.5 added, each in one 16-bit dtype
    "nearswap": lambda p: dict(merge_method="nearswap", base_model=p["base"], dtype="bfloat16",
                               models=[dict(model=p["ft0"])], parameters=dict(t=[0.002, 0.03])),
    "ram": lambda p: dict(merge_method="ram", base_model=p["base"], dtype="float16", models=[
        dict(model=p["ft0"]), dict(model=p["ft1"]), dict(model=p["ft2"])], parameters=dict(epsilon=0.02)),
    "ramplus_tl": lambda p: dict(merge_method="ramplus_tl", base_model=p["base"], dtype="bfloat16", models=[
        dict(model=p["ft0"]), dict(model=p["ft1"]), dict(model=p["ft2"])], parameters=dict(epsilon=0.02, r=0.5)),
    "sce": lambda p: dict(merge_method="sce", base_model=p["base"], dtype="float16", models=[
        dict(model=p["ft0"]), dict(model=p["ft1"]), dict(model=p["ft2"])], parameters=dict(select_topk=[0.3, 0.9])),
    "multislerp": lambda p: dict(merge_method="multislerp", base_model=p["base"], dtype="bfloat16", models=[
        dict(model=p["ft0"], parameters=dict(weight=0.6)), dict(model=p["ft1"], parameters=dict(weight=[0.2, 1]))]),
    "arcee_fusion": lambda p: dict(merge_method="arcee_fusion", base_model=p["base"], dtype="float16",
                                   models=[dict(model=p["ft0"])]),
    "karcher_float16": lambda p: dict(merge_method="karcher", dtype="float16", models=[
        dict(model=p["ft0"]), dict(model=p["ft1"]), dict(model=p["ft2"])]),
    "karcher_bfloat16": lambda p: dict(merge_method="karcher", base_model=p["base"], dtype="bfloat16", models=[
        dict(model=p["ft0"]), dict(model=p["ft1"])]),
}


def _compare(ours: dict, theirs: dict, method: str) -> None:
    assert sorted(ours) == sorted(theirs)
    for name, ref in theirs.items():
        assert ours[name].dtype == ref.dtype, name
        far = ulps(ours[name], ref) > (1 if method in ROUNDED_ONCE else 0)
        assert not far.any(), f"{name}: {far.sum()} elements differ ({ours[name][far][:3]} vs {ref[far][:3]})"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_mergekit_recipes_in_16_bit(fam, tmp_path, monkeypatch, name):
    recipe = RECIPES[name](fam)
    stable_sorts(monkeypatch)
    theirs = mergekit_merge(recipe, tmp_path / "mergekit")
    if recipe["merge_method"] in ("slerp", "model_stock"):
        with pytest.warns(UserWarning, match="weight has no effect"):
            ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    else:
        ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    _compare(ours, theirs, recipe["merge_method"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEW))
def test_new_methods_in_16_bit(fam, tmp_path, monkeypatch, name):
    recipe = NEW[name](fam)
    method, dtype = recipe["merge_method"], recipe["dtype"]
    stable_sorts(monkeypatch)
    theirs = mergekit_merge(recipe, tmp_path / "mergekit")
    ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    assert {t.dtype.name for t in ours.values()} == {dtype}
    if method in PROMOTED:
        assert {t.dtype.name for t in theirs.values()} == {"float32"}
        theirs = {k: v.astype(ours[k].dtype) for k, v in theirs.items()}
    if method == "arcee_fusion":
        base, tuned = read_tensors(fam["base"]), read_tensors(fam["ft0"])
        assert_cut_family(ours, theirs, base, tuned, 0.0, getattr(torch, dtype))
    elif method == "karcher":
        for k, ref in theirs.items():
            assert_karcher_close(ours[k], ref, k)
    else:
        _compare(ours, theirs, method)


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("bf16"), n=2, dtype=torch.bfloat16)


@pytest.mark.slow
def test_bf16_sources_without_dtype_are_merged_and_written_in_bf16(bf16, tmp_path, monkeypatch):
    recipe = _two(bf16, "ties", None, density=0.5)
    del recipe["dtype"]
    stable_sorts(monkeypatch)
    theirs = mergekit_merge(recipe, tmp_path / "mergekit")
    ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    assert {t.dtype.name for t in ours.values()} == {"bfloat16"}
    _compare(ours, theirs, "ties")
    assert json.loads((tmp_path / "jaxmerge" / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.slow
def test_math_dtype_float32_computes_in_float32(bf16, tmp_path, monkeypatch):
    """`math_dtype: float32` on a bfloat16 recipe = mergekit computing in float32 on the same bf16 inputs
    (`dtype: float32`, exact for bf16 sources) and writing bf16; it differs from the bf16-math merge."""
    recipe = _two(bf16, "ties", "bfloat16", density=0.5)
    stable_sorts(monkeypatch)
    theirs = mergekit_merge({**recipe, "dtype": "float32", "out_dtype": "bfloat16"}, tmp_path / "mergekit")
    ours = jaxmerge_merge(recipe, tmp_path / "f32", math_dtype="float32")
    _compare(ours, theirs, "linear")  # float32 math rounded once to bf16: the rounded-once family's tolerance
    in_bf16 = jaxmerge_merge(recipe, tmp_path / "bf16")
    assert any((ulps(ours[k], in_bf16[k]) > 0).any() for k in ours)
