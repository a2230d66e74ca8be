"""DFS paths on the new families: the folded export, loaded by transformers, gives the engine's path logits
(the fold's algebra, eps = 0, arbitrary scales, as tests/test_dfs_export.py; prompts longer than the windows).
Where a family normalises each block's output (Gemma 2/3), the 1 / C goes into the post-norm's (1 + w) gain;
a path mixing sliding and full-attention layers exports their per-layer `layer_types`."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import forward, path_spec, pool_types, with_path
from jaxmerge.dfs.export import decoded_path, exported_spec, export_path
from jaxmerge.dfs.recipe import passthrough_recipe
from jaxmerge.dfs.sources import layout_for, pool_params
from jaxmerge.errors import JaxmergeError
from jaxmerge.io import load
from tests.test_dfs_export import INDICATOR, RTOL, scales
from tests.tiny import FULL_FEATURES, hf_logits, make_tiny_model

FAMILIES = ["gemma2", "gemma3_text", "phi3", "mixtral", "qwen2_moe"]


def pair(root, family):
    a = make_tiny_model(root / f"{family}-a", family, seed=0, rms_norm_eps=0.0, initializer_range=0.15,
                        **FULL_FEATURES[family])
    b = make_tiny_model(root / f"{family}-b", perturb_from=a, seed=1, scale=0.05)
    return load(a), load(b)


@pytest.mark.parametrize("family", FAMILIES)
def test_folded_path_equals_the_engine_path_in_transformers(tmp_path, family):
    models = pair(tmp_path, family)
    space = layout_for(models, 2)
    genes = {"indicator": INDICATOR, "scales": scales(5)}
    tokens = np.random.default_rng(0).integers(3, 97, (2, 12)).astype(np.int32)
    spec = path_spec(models[0].spec, space, pool_types([m.spec for m in models]))
    pool = pool_params(models)
    want = np.asarray(jax.jit(lambda g: forward(spec, with_path(pool, space.decode(g)), tokens))(genes))
    out = export_path(space, models, genes, tmp_path / "out")
    got = hf_logits(out, tokens)
    assert np.abs(got - want).max() / np.abs(want).max() < RTOL
    used = [models[s["model"]].spec.attention_types[s["layer"]] for s in json.loads((out / "path.json").read_text())["path"]]
    config = json.loads((out / "config.json").read_text())
    if family in ("gemma2", "gemma3_text", "qwen2_moe"):
        assert config["layer_types"] == used and len(set(used)) == 2  # the path mixes both kinds
    recipe = passthrough_recipe(space, decoded_path(space, genes, np.float32), ["a", "b"], "float32", models[0].spec)
    assert (recipe is None) == family.startswith("gemma")  # (1 + w) gains: no passthrough `scale` carries 1 / C


def test_a_family_with_one_window_for_all_layers_refuses_a_mixed_path(tmp_path):
    models = pair(tmp_path, "phi3")
    space = layout_for(models, 1)
    path = decoded_path(space, {"indicator": jnp.ones(space.num_slots), "scales": jnp.ones((6, 6))}, np.float32)
    types = ("sliding_attention", "full_attention", "sliding_attention") * 2
    with pytest.raises(JaxmergeError, match="phi3.*mixing") as err:
        exported_spec(space, models[0].spec, path, types)
    assert "\n" not in str(err.value)
