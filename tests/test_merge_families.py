"""`jaxmerge merge` against mergekit 0.1.5 (the oracle) on every family it supports, with the recipes and the
tolerance of tests/test_merge_parity.py (1e-5 relative, float32): fused projections (Phi-3) and stacked experts
(Mixtral, Qwen MoE) are ordinary tensors to every method, as mergekit treats them. Mixing families is refused
with both names."""
from __future__ import annotations

import pytest

from jaxmerge.errors import JaxmergeError
from tests.merge_oracle import jaxmerge_merge, make_family, mergekit_merge, worst_relative
from tests.test_merge_parity import RECIPES, TOL
from tests.tiny import FULL_FEATURES

FAMILIES = sorted(FULL_FEATURES)
# mergekit 0.1.5's Gemma / Gemma 2 definitions have no attention biases (it writes merges without them), and
# Gemma checkpoints have none: merge those families unbiased.
MERGEKIT_CAN = {"gemma": {"attention_bias": False}, "gemma2": {"attention_bias": False}}
CASES = [(f, r) for f in FAMILIES for r in ("linear", "ties", "slerp")] + [
    (f, "passthrough_slices") for f in ("gemma", "phi3", "mixtral")]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    built = {}

    def get(family):
        if family not in built:
            config = {**FULL_FEATURES[family], **MERGEKIT_CAN.get(family, {})}
            built[family] = make_family(tmp_path_factory.mktemp(family), family, **config)
        return built[family]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("family,name", CASES)
def test_matches_mergekit(families, tmp_path, family, name):
    recipe = RECIPES[name](families(family))
    theirs = mergekit_merge(recipe, tmp_path / "mergekit")
    ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    worst, where = worst_relative(ours, theirs)
    assert worst <= TOL, f"{family} {name}: {where} differs by {worst:.2e} relative"


def test_mixing_families_is_refused_with_both_names(families, tmp_path):
    gemma2, mixtral = families("gemma2"), families("mixtral")
    recipe = dict(merge_method="linear", dtype="float32", models=[
        dict(model=gemma2["ft0"], parameters=dict(weight=0.5)), dict(model=mixtral["ft0"], parameters=dict(weight=0.5))])
    with pytest.raises(JaxmergeError, match="gemma2.*mixtral") as err:
        jaxmerge_merge(recipe, tmp_path / "out")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def strangers(tmp_path_factory):
    """A Llama, a windowless Mistral of the same shapes (the same math), and a Qwen2 (q/k/v biases: not)."""
    from tests.tiny import make_tiny_model
    root = tmp_path_factory.mktemp("crimes")
    return {"llama": str(make_tiny_model(root / "llama", "llama", seed=1)),
            "mistral": str(make_tiny_model(root / "mistral", "mistral", seed=2, sliding_window=None)),
            "qwen2": str(make_tiny_model(root / "qwen2", "qwen2", seed=3))}


def _linear(a, b):
    return dict(merge_method="linear", dtype="float32", models=[dict(model=a, parameters=dict(weight=0.3)),
                                                                dict(model=b, parameters=dict(weight=0.7))])


def test_crimes_only_with_the_flag_and_only_where_the_math_agrees(strangers, tmp_path):
    recipe = _linear(strangers["llama"], strangers["mistral"])
    with pytest.raises(JaxmergeError, match="llama.*mistral.*--allow-crimes"):
        jaxmerge_merge(recipe, tmp_path / "refused")
    ours = jaxmerge_merge(recipe, tmp_path / "ours", allow_crimes=True)
    worst, where = worst_relative(ours, mergekit_merge(recipe, tmp_path / "mergekit"))
    assert worst <= TOL, f"{where} differs by {worst:.2e} relative"
    with pytest.raises(JaxmergeError, match="llama.*qwen2") as err:
        jaxmerge_merge(_linear(strangers["llama"], strangers["qwen2"]), tmp_path / "never", allow_crimes=True)
    assert "--allow-crimes" not in str(err.value)


def test_slices_keep_each_layers_attention_type(families, tmp_path):
    """A passthrough of Gemma 2 layers [0, 2) of one model and [1, 3) of another: the output's layer_types are
    its layers' own (sliding, full, full, sliding), and transformers computes what jaxmerge computes for it.
    (mergekit 0.1.5 writes the base's layer_types whatever the slices, so it is no oracle here.)"""
    import json

    import numpy as np

    import jaxmerge
    from tests.tiny import hf_logits
    fam = families("gemma2")
    recipe = dict(merge_method="passthrough", dtype="float32", slices=[
        dict(sources=[dict(model=fam["ft0"], layer_range=[0, 2])]),
        dict(sources=[dict(model=fam["ft1"], layer_range=[1, 3])])])
    jaxmerge_merge(recipe, tmp_path / "out")
    types = json.loads((tmp_path / "out" / "config.json").read_text())["layer_types"]
    assert types == ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    tokens = np.random.default_rng(0).integers(3, 97, (1, 14)).astype(np.int32)
    ours = jaxmerge.logits(jaxmerge.load(tmp_path / "out"), tokens)
    assert np.abs(hf_logits(tmp_path / "out", tokens) - ours).max() <= 1e-4
