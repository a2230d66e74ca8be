"""`jaxmerge evolve` over sources whose vocabularies disagree (PS): `tokenizer_source` / `tokenizer:` in the run
config align embed / lm_head rows by token once at load, as `jaxmerge merge` does. The exported winner carries
the output tokenizer, its recipe.yml rebuilds it bit for bit with `jaxmerge merge`, and mergekit 0.1.5 (the
oracle) gives the same tensors by token from that recipe."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from jaxmerge.cli import main
from jaxmerge.merge.recipe import read_recipe
from tests.merge_oracle import mergekit_merge, read_tensors
from tests.tiny import make_tiny_model
from tests.tiny_vocab import BASE_TOKENS, SPECIALS, add_tokenizer, compare_by_token, tokenizer_of, vocab_variant

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evolve_vocab")
    base = add_tokenizer(make_tiny_model(root / "base", "llama", seed=0), BASE_TOKENS)
    vocab_variant(root / "ft1", base, BASE_TOKENS, seed=1)
    order = list(np.random.default_rng(5).permutation([t for t in BASE_TOKENS[3:] if t != "t9"]))
    vocab_variant(root / "ft2", base, SPECIALS + order + ["n0", "n1"], seed=2)
    rows = [{"prompt": f"t{a} t{b}", "answer": f" t{a + b}"} for a in range(5) for b in range(4)]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "sum.yml").write_text("name: sum\nsplits: {dev: dev.jsonl}\ntemplate: '{prompt}'\nmetric: loglik\n")
    return root


def _config(root, **extra):
    doc = {"models": ["ft1", "ft2"], "base_model": "base", "merge_method": "task_arithmetic",
           "evolve": {"weight": {"init": 0.5, "bounds": [0.0, 1.0]}},
           "search": {"strategy": "CMA_ES", "population": 4, "generations": 2, "sigma": 0.2, "seed": 0},
           "fitness": {"tasks": [{"task": "sum.yml"}], "item_batch": 8}, **extra}
    path = root / f"evolve_{len(extra)}.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_union_vocabulary_evolves_exports_and_rebuilds(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["evolve", _config(world, tokenizer_source="union"), "--out", str(run), "--no-progress"]) == 0
    union = tokenizer_of(run / "model").get_vocab()
    assert {"n0", "n1", "t9"} <= set(union) and len(union) == 97 + 2
    assert json.loads((run / "model/config.json").read_text())["vocab_size"] == len(union)
    assert read_recipe(run / "recipe.yml").tokenizer.source == "union"
    # jaxmerge merge on the recipe: the same bits and the same tokenizer files
    assert main(["merge", str(run / "recipe.yml"), str(tmp_path / "rebuilt")]) == 0
    ours, again = read_tensors(run / "model"), read_tensors(tmp_path / "rebuilt")
    assert sorted(ours) == sorted(again)
    for name in ours:
        np.testing.assert_array_equal(ours[name], again[name], err_msg=name)
    assert (run / "model/tokenizer.json").read_bytes() == (tmp_path / "rebuilt/tokenizer.json").read_bytes()
    # mergekit 0.1.5 on the same recipe: the same rows, token by token
    recipe = yaml.safe_load((run / "recipe.yml").read_text())
    mergekit_merge(recipe, tmp_path / "mergekit", copy_tokenizer=True)
    compare_by_token(run / "model", tmp_path / "mergekit")
    best = json.loads((run / "best.json").read_text())
    assert np.isfinite(best["fitness"]) and set(best["baselines"]["sources"]) == {str(world / "ft1"),
                                                                                  str(world / "ft2"),
                                                                                  str(world / "base")}


def test_tokenizer_settings_outside_ps_are_refused(world, tmp_path, capsys):
    cfg = _config(world, tokenizer_source="union", mode="dfs")
    assert main(["evolve", cfg, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "only with mode: ps" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
