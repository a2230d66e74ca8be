"""The merge side of "recipe.yml rebuilds the winner exactly": a recipe carrying `# jaxmerge: {"merge_key": [K0,
K1]}` and float32-exact values merges to tensors bit-identical to what an evolve export writes from that raw key
and hparams of the same values (`merge_state` over the whole state, as the export calls it), DARE and DELLA
included; the candidate the step scored (`merge_params`, one whole-tree program) has the same masks and values
equal up to float32 rounding."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.merge import METHODS, init_state, merge_params
from jaxmerge.merge.numerics import F32
from jaxmerge.merge.stream import merge_state
from jaxmerge.merge.build import build_sources, load_models, merge_recipe
from jaxmerge.merge.recipe import parse_recipe_text, read_recipe
from jaxmerge.params import to_hf_tensors
from tests.merge_oracle import make_family, read_tensors

# whole-tree program vs per-tensor programs: the same float32 operations, reductions (DARE's L1 rescale sums)
# split differently by XLA: a few float32 ulps
SCORED_RTOL = 1e-5
KEY = jax.random.PRNGKey(20261201)  # a raw uint32[2] key, as evolution keeps its candidates' keys
# per model: weight per layer, density; DELLA's epsilon; values are not float32 until written as float32
VALUES = {"weight": [[0.31, 0.72, 0.5], [0.9, 0.2, 0.4]], "density": [[0.45, 0.45, 0.45], [0.7, 0.6, 0.81]],
          "epsilon": [[0.1, 0.1, 0.1], [0.05, 0.05, 0.05]]}


def f32(x) -> float:
    return float(np.float32(x))


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("key"), n=2)


def recipe_text(fam: dict, method: str, key) -> str:
    """What the evolve export writes: the key comment, per-layer gradient lists, values as float32 reprs."""
    names = ["weight", "density"] + (["epsilon"] if method.startswith("della") else [])
    models = []
    for m, ref in enumerate((fam["ft0"], fam["ft1"])):
        params = ", ".join(f"{n}: [{', '.join(repr(f32(v)) for v in VALUES[n][m])}]" for n in names)
        models.append(f"  - model: {ref}\n    parameters: {{{params}}}\n")
    words = np.asarray(key).tolist()
    return (f'# jaxmerge: {{"merge_key": [{words[0]}, {words[1]}]}}\nmerge_method: {method}\n'
            f"base_model: {fam['base']}\nmodels:\n{''.join(models)}dtype: float32\n")


def evolved_hparams(method, state) -> dict:
    """hparams as evolution builds them: [M] per global tensor (layer 0's value, depth t = 0), [M, L] per layer
    tensor; shared hparams at their defaults."""
    out = {}
    for name in (*method.model_hparams, *method.global_hparams):
        if name in method.model_hparams:
            cells = np.asarray([[f32(v) for v in row] for row in VALUES[name]], np.float32)  # [M, L]
            glob, layer = cells[:, 0], cells
        else:
            glob = layer = np.float32(float(method.hparam(name).default))
        tree = {leaf: jnp.asarray(glob) for leaf in state if leaf != "layers"}
        tree["layers"] = {leaf: jnp.asarray(np.broadcast_to(layer, layer.shape if layer.ndim else (3,)))
                          for leaf in state["layers"]}
        out[name] = tree
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method_name", ["dare_ties", "della"])
def test_recipe_with_merge_key_rebuilds_in_process_merge_bit_for_bit(fam, tmp_path, method_name):
    path = tmp_path / "recipe.yml"
    path.write_text(recipe_text(fam, method_name, KEY))
    recipe = read_recipe(path)
    assert recipe.merge_key == tuple(np.asarray(KEY).tolist())
    merge_recipe(recipe, tmp_path / "out")
    rebuilt = read_tensors(tmp_path / "out")

    method = METHODS[method_name]
    columns = build_sources(recipe, load_models(recipe))
    sources = columns.stacked()
    state = init_state(method, sources)
    hp = evolved_hparams(method, state)
    exported = to_hf_tensors(sources.spec, jax.tree.map(np.asarray, merge_state(method, state, hp, KEY, F32)))
    assert sorted(exported) == sorted(rebuilt)
    for name, tensor in exported.items():  # what an evolve export writes: bit for bit
        assert np.array_equal(tensor, rebuilt[name]), name
    scored = jax.jit(merge_params, static_argnums=(0, 4))(method, state, hp, KEY, jnp.float32)
    for name, tensor in to_hf_tensors(sources.spec, jax.tree.map(np.asarray, scored)).items():
        # the candidate the step scored (one whole-tree program): the same masks, values up to float rounding
        assert np.array_equal(tensor == 0, rebuilt[name] == 0), name
        np.testing.assert_allclose(tensor, rebuilt[name], rtol=SCORED_RTOL, atol=0, err_msg=name)
    merge_recipe(dataclasses.replace(recipe, merge_key=None), tmp_path / "seeded", seed=0)
    other = read_tensors(tmp_path / "seeded")
    assert not np.array_equal(other["model.layers.0.mlp.up_proj.weight"], rebuilt["model.layers.0.mlp.up_proj.weight"])
    with pytest.raises(JaxmergeError, match="--seed or the recipe's"):
        merge_recipe(recipe, tmp_path / "both", seed=1)
    assert not (tmp_path / "both").exists()


BAD_COMMENTS = {
    '# jaxmerge: {"merge_key": [1, 2], "seed": 3}': "seed",
    '# jaxmerge: {"merge_key": [1]}': "merge_key",
    '# jaxmerge: {"merge_key": [1, 4294967296]}': "merge_key",
    '# jaxmerge: [1, 2]': "JSON object",
    '# jaxmerge: {merge_key: [1, 2]}': "invalid JSON",
    '# jaxmerge: {"math_dtype": "float64"}': "math_dtype",
    '# jaxmerge: {}\n# jaxmerge: {}': "at most one",
}


@pytest.mark.parametrize("comment", sorted(BAD_COMMENTS))
def test_bad_jaxmerge_comments_are_refused_by_name(comment):
    text = comment + "\nmerge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n"
    with pytest.raises(JaxmergeError, match=BAD_COMMENTS[comment]) as e:
        parse_recipe_text(text)
    assert len(str(e.value).splitlines()) == 1


def test_comment_is_read_and_other_comments_are_not():
    text = '# a note\n#jaxmerge: {"merge_key": [7, 9], "math_dtype": "float32"}\nmerge_method: linear\n' \
           "models: [{model: a, parameters: {weight: 1}}]  # jaxmerge: not at the start of a line\n"
    recipe = parse_recipe_text(text)
    assert recipe.merge_key == (7, 9) and recipe.math_dtype == "float32" and recipe.text == text
    assert parse_recipe_text("merge_method: linear\nmodels: [{model: a}]\n").merge_key is None
