"""`jaxmerge merge` end to end: a recipe with relative paths and a DARE merge, and bad input -> one line, exit 2,
nothing written."""
from __future__ import annotations

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
    recipe = dict(merge_method="dare_ties", base_model="base", tokenizer_source="base", dtype="bfloat16",
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
    "union tokenizer": (dict(merge_method="ties", tokenizer_source="union", models=[dict(model="ft0")]), "union"),
    "unknown key": (dict(merge_method="ties", chat_template="x", models=[dict(model="ft0")]), "chat_template"),
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
    assert "one family and shape" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
