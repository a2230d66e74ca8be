"""DFS export: the folded plain model, loaded by transformers with no custom code, gives the engine's path logits
within 1e-4 relative (max |diff| / max |logit|, float32); path.json and plots/path.png are written.

The fold is exact up to RMSNorm's eps (see jaxmerge/dfs/fold.py). So the parity is checked where it is claimed:
eps = 0 with arbitrary scales (the fold's algebra), any eps when every |cumulative scale| is 1, and any eps with
a stream much larger than eps (as in real models after their first layer).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import DecodedPath, forward, path_spec, with_path
from jaxmerge.dfs.export import export_path
from jaxmerge.dfs.fold import fold
from jaxmerge.dfs.sources import pool_params, layout_for
from jaxmerge.errors import JaxmergeError
from jaxmerge.io import Model, load
from tests.tiny import hf_logits, make_tiny_model

RTOL = 1e-4
# slots of a (3, 3)-layer layout with r = 2: A0 A1 A2 B0 B1 B2 | A0 A1 A2 B0 B1 B2 | tail A2 (step 12)
INDICATOR = np.array([1, 1, -1, 1, -1, 1, 1, 1, -1, -1, -1, -1], np.float32)  # A0 A1 B0 B2 A0 A1, tail A2


def pair(root, family, eps, **overrides):
    a = make_tiny_model(root / f"{family}-a", family, seed=0, rms_norm_eps=eps, **overrides)
    b = make_tiny_model(root / f"{family}-b", perturb_from=a, seed=1, scale=0.05)
    return load(a), load(b)


def engine_logits(space, models, genes, tokens):
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    return np.asarray(jax.jit(lambda g: forward(spec, with_path(pool, space.decode(g)), tokens))(genes))


def check_parity(space, models, genes, out):
    tokens = np.random.default_rng(0).integers(3, 97, (2, 9)).astype(np.int32)
    want = engine_logits(space, models, genes, tokens)
    got = hf_logits(export_path(space, models, genes, out), tokens)
    return float(np.abs(got - want).max() / np.abs(want).max())


def scales(seed, signs_only=False):
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], (6, 6))
    return jnp.asarray(sign if signs_only else sign * rng.uniform(0.6, 1.6, (6, 6)), jnp.float32)


@pytest.mark.parametrize("family, overrides", [("llama", dict(attention_bias=True)), ("qwen3", {})])
def test_fold_algebra_exact_with_eps_zero(tmp_path, family, overrides):
    models = pair(tmp_path, family, 0.0, **overrides)
    space = layout_for(models, 2)
    assert check_parity(space, models, {"indicator": INDICATOR, "scales": scales(1)}, tmp_path / "out") < RTOL


def test_sign_flips_exact_with_default_eps(tmp_path):
    models = pair(tmp_path, "llama", 1e-5)
    space = layout_for(models, 2, "per_slot")
    genes = {"indicator": INDICATOR, "scales": jnp.asarray(np.resize([1.0, -1.0, -1.0], 13), jnp.float32)}
    assert check_parity(space, models, genes, tmp_path / "out") < RTOL


def test_scales_with_default_eps_and_realistic_stream(tmp_path):
    a, b = pair(tmp_path, "qwen2", 1e-5)
    a = Model(a.spec, {**a.params, "embed": a.params["embed"] * 30}, a.path)  # mean(h^2) ~ 0.4 >> eps, as in LLMs
    space = layout_for([a, b], 2)
    assert check_parity(space, [a, b], {"indicator": INDICATOR, "scales": scales(2)}, tmp_path / "out") < RTOL


def test_path_json_and_picture(tmp_path):
    models = pair(tmp_path, "llama", 1e-5)
    space = layout_for(models, 2)
    genes = {"indicator": INDICATOR, "scales": scales(3, signs_only=True)}
    out = export_path(space, models, genes, tmp_path / "out")
    record = json.loads((out / "path.json").read_text())
    steps = [(s["model"], s["layer"]) for s in record["path"]]
    assert steps == [(0, 0), (0, 1), (1, 0), (1, 2), (0, 0), (0, 1), (0, 2)]
    assert [s["slot"] for s in record["path"]] == [0, 1, 3, 5, 6, 7, 12]
    assert record["num_layers"] == 7 and record["fold"]["exact"] is True
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 7
    assert (out / "plots" / "path.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".out.tmp-*"))  # the atomic temp dir is gone


def test_fold_refuses_empty_path_and_zero_scale(tmp_path):
    models = pair(tmp_path, "llama", 1e-5)
    pool, layer = pool_params(models), layout_for(models, 2).layers()
    with pytest.raises(JaxmergeError, match="at least one used step"):
        fold(pool, DecodedPath(np.zeros(13), np.ones(13), layer))
    with pytest.raises(JaxmergeError, match="nonzero finite path scales") as err:
        fold(pool, DecodedPath(np.ones(13), np.where(np.arange(13) == 4, 0.0, 1.0), layer))
    assert "\n" not in str(err.value)


def test_export_gathers_only_the_layers_the_path_uses(tmp_path):
    """used_pool (what a run's export gathers to each host) keeps A0 A1 A2 B0 B2 of the pool's 6 layers and
    folds to exactly the model the whole pool folds to."""
    from jaxmerge.dfs.export import decoded_path, used_pool
    models = pair(tmp_path, "llama", 1e-5)
    space = layout_for(models, 2)
    pool = pool_params(models)
    path = decoded_path(space, {"indicator": INDICATOR, "scales": scales(4)}, np.float32)
    host, short = used_pool(jax.tree.map(jnp.asarray, pool), path)
    rows = np.unique(np.asarray(path.layer)[np.asarray(path.included) > 0])
    assert len(rows) == 5 and all(x.shape[0] == 5 for x in host["pool"].values())
    for leaf, x in host["pool"].items():
        np.testing.assert_array_equal(x, np.asarray(pool["pool"][leaf])[rows])
    whole, part = fold(jax.tree.map(np.asarray, pool), path), fold(host, short)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(part)):
        np.testing.assert_array_equal(a, b)
