"""The commands end to end on tiny checkpoints of the new families: `inspect`, `merge`, `eval` and `evolve` in
PS, DFS and hybrid mode. Every winner is a standard HF model that transformers loads with the logits jaxmerge
computes for it (1e-4, float32); a PS winner's recipe.yml rebuilds its tensors bit for bit (a mixture's
stacked experts included); a DFS winner is the engine's path in transformers (1e-4 relative), its sliding and
full-attention layers in `layer_types`."""
import json

import numpy as np
import pytest
import yaml

import jaxmerge
from jaxmerge.cli import main
from tests.fitness_tiny import add_char_tokenizer
from tests.merge_oracle import read_tensors
from tests.tiny import FULL_FEATURES, hf_logits, make_tiny_model

TASK = "name: arith\nsplits: {dev: dev.jsonl}\ntemplate: \"Q: {prompt}\\nA:\"\nmetric: loglik\n"
ORACLE_TOL = 1e-4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Per family: a base and two fine-tunes of it with a character tokenizer; one task."""
    root = tmp_path_factory.mktemp("families_cli")
    rows = [{"prompt": f"{x}+{y}", "answer": str(x + y)} for x in range(3) for y in range(2)]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "arith.yml").write_text(TASK)
    built = set()

    def get(family, finetunes=True):
        base = root / family / "base"
        if not base.exists():
            add_char_tokenizer(make_tiny_model(base, family, seed=0, rms_norm_eps=1e-10, **FULL_FEATURES[family]))
        if finetunes and family not in built:
            for i in (1, 2):
                add_char_tokenizer(make_tiny_model(root / family / f"ft{i}", perturb_from=base, seed=i, scale=0.1))
            built.add(family)
        return root / family
    return root, get


def write_config(root, family, name, **extra):
    doc = {"models": [f"{family}/ft1", f"{family}/ft2"], "fitness": {"tasks": [{"task": "arith.yml"}], "item_batch": 3},
           "search": {"strategy": "Sep_CMA_ES", "population": 4, "generations": 2, "sigma": 0.3}, **extra}
    (root / name).write_text(yaml.safe_dump(doc))
    return str(root / name)


def same_logits_in_transformers(model_dir):
    tokens = np.random.default_rng(0).integers(3, 97, (2, 11)).astype(np.int32)
    ours = jaxmerge.logits(jaxmerge.load(model_dir), tokens)
    assert np.abs(hf_logits(model_dir, tokens) - ours).max() <= ORACLE_TOL


def rebuilds_exactly(run, out):
    assert main(["merge", str(run / "recipe.yml"), str(out)]) == 0
    ours, theirs = read_tensors(out), read_tensors(run / "model")
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("family", sorted(FULL_FEATURES))
def test_inspect_names_the_family(world, family, capsys):
    _, get = world
    base = get(family, finetunes=False) / "base"
    assert main(["inspect", str(base), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == family and info["parameters"] == jaxmerge.load(base).num_parameters
    assert ("experts" in info) == ("moe" in family or family == "mixtral")
    assert (info["attention"] == "full") == (family == "gemma")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma3_text", "mixtral"])
def test_evolve_ps_merge_and_eval(world, family, capsys):
    root, get = world
    get(family)
    cfg = write_config(root, family, f"{family}-ps.yml", base_model=f"{family}/base", merge_method="dare_ties",
                       evolve={"weight": {"init": 0.5, "bounds": [0.0, 1.0]},
                               "density": {"init": 0.7, "bounds": [0.2, 1.0]}},
                       granularity={"layers_per_group": 1, "param_groups": True})
    run = root / f"{family}-ps"
    assert main(["evolve", cfg, "--out", str(run), "--no-progress"]) == 0
    same_logits_in_transformers(run / "model")
    rebuilds_exactly(run, root / f"{family}-ps-rebuilt")
    capsys.readouterr()
    assert main(["eval", str(run / "model"), str(root / "arith.yml"), "--split", "dev"]) == 0
    assert "arith" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma2", "qwen2_moe"])
def test_evolve_dfs_exports_layer_types(world, family):
    root, get = world
    get(family)
    cfg = write_config(root, family, f"{family}-dfs.yml", mode="dfs", dfs={"repeats": 2, "w_mode": "per_slot"},
                       models=[f"{family}/ft1", f"{family}/ft2"])
    run = root / f"{family}-dfs"
    assert main(["evolve", cfg, "--out", str(run), "--no-progress"]) == 0
    config = json.loads((run / "model" / "config.json").read_text())
    path = json.loads((run / "model" / "path.json").read_text())["path"]
    source_types = [jaxmerge.load(get(family) / f"ft{s['model'] + 1}").spec.attention_types[s["layer"]] for s in path]
    assert config["layer_types"] == source_types and config["num_hidden_layers"] == len(path)
    same_logits_in_transformers(run / "model")
    best = json.loads((run / "best.json").read_text())
    assert (run / "recipe.yml").is_file() == (family != "gemma2") and best["fitness"] >= best["baselines"]["start"]


@pytest.mark.slow
def test_evolve_hybrid_phi3(world):
    root, get = world
    get("phi3")
    cfg = write_config(root, "phi3", "phi3-hybrid.yml", mode="hybrid", merge_method="linear",
                       evolve={"weight": {"init": 0.5, "bounds": [0.0, 1.0]}}, dfs={"repeats": 2, "generations": 1})
    run = root / "phi3-hybrid"
    assert main(["evolve", cfg, "--out", str(run), "--no-progress"]) == 0
    same_logits_in_transformers(run / "model")
    rebuilds_exactly(run, root / "phi3-hybrid-rebuilt")
    rebuilds_exactly(run / "ps", root / "phi3-hybrid-ps-rebuilt")
