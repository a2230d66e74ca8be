"""`jaxmerge merge` end to end: a recipe with relative paths and a DARE merge, its outputs (card, recipe,
tokenizer, shards, mergekit's flags), and bad or silently-wrong input -> one line, exit 2, nothing written."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from jaxmerge.cli import main
from tests.merge_oracle import make_family, read_tensors
from tests.tiny import make_tiny_model


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return root, make_family(root, n=2)


def _write(root, recipe, name="recipe.yml"):
    path = root / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_dare_ties_recipe_with_relative_paths(fam, tmp_path, capsys):
    root, paths = fam
    recipe = dict(merge_method="dare_ties", base_model="base", dtype="bfloat16",
                  models=[dict(model="ft0", parameters=dict(weight=0.6, density=[0.3, 0.9])),
                          dict(model="ft1", parameters=dict(weight=0.4, density=1.0))])
    path = _write(root, recipe)
    assert main(["merge", str(path), str(tmp_path / "a"), "--seed", "3"]) == 0
    assert main(["merge", str(path), str(tmp_path / "b"), "--seed", "3"]) == 0
    a, b = read_tensors(tmp_path / "a"), read_tensors(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["model.embed_tokens.weight"].dtype.name == "bfloat16"
    assert main(["merge", str(path), str(tmp_path / "a")]) == 2  # non-empty without --overwrite


BAD = {
    "unknown method": (dict(merge_method="frankenstein"), "merge_method"),
    "missing weight": (dict(merge_method="ties", models=[dict(model="ft0"), dict(model="ft1")]), "weight"),
    "density > 1": (dict(merge_method="ties", models=[dict(model="ft0", parameters=dict(weight=1, density=1.5))]),
                    "density"),
    "union without tokenizers": (dict(merge_method="ties", tokenizer_source="union", models=[dict(
        model="ft0", parameters=dict(weight=1))]), "tokenizer.json"),
    "unknown key": (dict(merge_method="ties", modules={}, models=[dict(model="ft0")]), "modules"),
    "missing model": (dict(merge_method="ties", models=[dict(model="nope/absent", parameters=dict(weight=1))]),
                      "nope/absent"),
    "bad filter": (dict(merge_method="ties", parameters=dict(weight=[{"filter": "mlpx", "value": 1}]),
                        models=[dict(model="ft0")]), "mlpx"),
    "shared param per model": (dict(merge_method="ties", models=[dict(model="ft0", parameters=dict(
        weight=1, normalize=True))]), "normalize"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipes_exit_2_and_write_nothing(fam, tmp_path, capsys, case):
    root, _ = fam
    recipe, word = BAD[case]
    recipe = {"base_model": "base", **recipe}
    out = tmp_path / "out"
    assert main(["merge", str(_write(root, recipe, f"{case}.yml")), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_models_of_different_shapes_are_refused(fam, tmp_path, capsys):
    root, _ = fam
    make_tiny_model(root / "wide", "llama", seed=9, hidden_size=48, head_dim=12)
    recipe = dict(merge_method="linear", models=[dict(model="ft0", parameters=dict(weight=1)),
                                                 dict(model="wide", parameters=dict(weight=1))])
    assert main(["merge", str(_write(root, recipe, "shapes.yml")), str(tmp_path / "out")]) == 2
    assert "expected every model to share hidden_size = 32" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _linear(*weights, **params):
    models = [dict(model=f"ft{i}", parameters=dict(weight=w)) for i, w in enumerate(weights)]
    return dict(merge_method="linear", dtype="float32", models=models, **({"parameters": params} if params else {}))


REFUSED = {
    "nan weight": (_linear(float("nan"), 1.0), "finite weight"),
    "weights summing to 0": (_linear(1.0, -1.0), "normalised"),
    "non-finite result": (_linear(3e38, 3e38, normalize=False), "finite merged tensors"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_silently_wrong_merges_are_refused(fam, tmp_path, capsys, case):
    root, _ = fam
    recipe, word = REFUSED[case]
    out = tmp_path / "out"
    assert main(["merge", str(_write(root, recipe, f"{case}.yml")), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_relative_paths_resolve_against_the_working_directory(fam, tmp_path, monkeypatch, capsys):
    """mergekit's rule: the working directory. A path found only beside the recipe is used with a warning."""
    root, paths = fam
    recipe = _write(root, _linear(1.0), "relative.yml")  # names "ft0"
    work = tmp_path / "work"
    shutil.copytree(paths["ft1"], work / "ft0")  # another model under the same relative name
    monkeypatch.chdir(work)
    assert main(["merge", str(recipe), str(tmp_path / "cwd")]) == 0
    assert "warning" not in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["merge", str(recipe), str(tmp_path / "beside")]) == 0
    assert "beside the recipe" in capsys.readouterr().err
    cwd, beside = read_tensors(tmp_path / "cwd"), read_tensors(tmp_path / "beside")
    ft0, ft1 = read_tensors(paths["ft0"]), read_tensors(paths["ft1"])
    assert all(np.array_equal(cwd[k], ft1[k]) and np.array_equal(beside[k], ft0[k]) for k in ft0)


def test_outputs_carry_card_recipe_tokenizer_and_shards(fam, tmp_path):
    root, paths = fam
    path = _write(root, _linear(0.3, 0.7), "outputs.yml")
    assert main(["merge", str(path), str(tmp_path / "a")]) == 0
    a = tmp_path / "a"
    assert (a / "mergekit_config.yml").read_text() == path.read_text()
    from mergekit.config import MergeConfiguration
    MergeConfiguration.model_validate(yaml.safe_load((a / "mergekit_config.yml").read_text()))
    card = (a / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "`linear`" in card
    assert (a / "generation_config.json").is_file()  # the tokenizer side files of the donor model
    assert main(["merge", str(path), str(tmp_path / "b"), "--no-copy-tokenizer", "--no-write-model-card",
                 "--out-shard-size", "20k"]) == 0
    b = tmp_path / "b"
    assert not any((b / f).exists() for f in ("README.md", "mergekit_config.yml", "generation_config.json"))
    assert len(list(b.glob("model-*.safetensors"))) > 1 and (b / "model.safetensors.index.json").is_file()
    ta, tb = read_tensors(a), read_tensors(b)
    assert sorted(ta) == sorted(tb) and all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_parameters_mergekit_ignores_are_accepted_with_one_warning(fam, tmp_path, capsys):
    root, _ = fam
    recipe = dict(merge_method="slerp", base_model="ft0", dtype="float32", parameters=dict(t=0.35), models=[
        dict(model="ft0", parameters=dict(weight=0.6)), dict(model="ft1", parameters=dict(weight=0.4))])
    assert main(["merge", str(_write(root, recipe, "slerp.yml")), str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "weight" in line]
    assert len(lines) == 1 and "has no effect on slerp" in lines[0]


def test_seed_and_recipe_merge_key_are_not_both_taken(fam, tmp_path, capsys):
    root, _ = fam
    recipe = dict(merge_method="dare_linear", base_model="base", models=[
        dict(model="ft0", parameters=dict(weight=0.5, density=0.5))])
    path = root / "keyed.yml"
    path.write_text('# jaxmerge: {"merge_key": [0, 42]}\n' + yaml.safe_dump(recipe))
    assert main(["merge", str(path), str(tmp_path / "out"), "--seed", "1"]) == 2
    assert "--seed or the recipe's" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["merge", str(path), str(tmp_path / "out")]) == 0
