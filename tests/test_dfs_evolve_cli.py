"""`jaxmerge evolve` with mode: dfs and mode: hybrid end to end on tiny models. The DFS winner, a plain model,
loads in transformers with the engine's path logits (1e-4 relative) and scores the fitness the search gave it.

RMSNorm eps is 1e-10 here so the pipeline is checked at the fold's exact limit: eps is the fold's one inexact
part (see jaxmerge/dfs/fold.py), measured in test_dfs_export.py. (eps = 0 would turn the all-zero pad
embedding into NaN.)
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxmerge.cli import main
from jaxmerge.dfs import forward
from jaxmerge.config import load_config
from jaxmerge.dfs.path import path_spec
from jaxmerge.dfs.sources import pool_params
from jaxmerge.dfs.space import DFSGenome, layout_of, path_params
from jaxmerge.evolve.sliced import open_checkpoint
from jaxmerge.fitness.suite import prepare_tasks, weighted_fitness
from jaxmerge.io import load
from tests.fitness_tiny import add_char_tokenizer
from tests.merge_oracle import mergekit_merge, read_tensors, worst_relative
from tests.tiny import hf_logits, make_tiny_model

TASK = """name: arith
splits: {dev: dev.jsonl}
template: "Q: {prompt}\\nA:"
metric: loglik
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfs_cli")
    a = add_char_tokenizer(make_tiny_model(root / "a", "llama", seed=0, rms_norm_eps=1e-10))
    make_tiny_model(root / "b", perturb_from=a, seed=1, scale=0.2)
    rows = [{"prompt": f"{x}+{y}", "answer": str(x + y)} for x in range(3) for y in range(2)]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "arith.yml").write_text(TASK)
    return root


def write_config(root, name, **extra):
    doc = {"models": ["a", "b"], "fitness": {"tasks": [{"task": "arith.yml"}], "item_batch": 3},
           "search": {"strategy": "Sep_CMA_ES", "population": 4, "generations": 2, "sigma": 0.3}, **extra}
    (root / name).write_text(yaml.safe_dump(doc))
    return str(root / name)


def rebuilds_exactly(run, out):
    """`jaxmerge merge RUN/recipe.yml OUT` writes RUN/model's tensors, bit for bit."""
    assert main(["merge", str(run / "recipe.yml"), str(out)]) == 0
    ours, theirs = read_tensors(out), read_tensors(run / "model")
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def loads_in_transformers(model_dir):
    tokens = np.random.default_rng(0).integers(3, 97, (1, 6))
    assert np.isfinite(hf_logits(model_dir, tokens)).all()


@pytest.mark.slow
def test_evolve_dfs(root, capsys):
    cfg = write_config(root, "dfs.yml", mode="dfs", dfs={"repeats": 1, "w_mode": "per_slot"})
    assert main(["evolve", cfg, "--out", str(root / "dfs"), "--no-progress"]) == 0
    best = json.loads((root / "dfs" / "best.json").read_text())
    path = json.loads((root / "dfs" / "model" / "path.json").read_text())
    assert best["path"] == path["path"] and path["path"][0]["slot"] == 0
    assert (root / "dfs" / "model" / "plots" / "path.png").is_file()
    assert len((root / "dfs" / "history.jsonl").read_text().splitlines()) == 1 + 2  # baselines, 2 generations
    run = load_config(cfg)
    genome = DFSGenome(layout_of(run, [open_checkpoint(m) for m in run.models]))
    spec, data = path_spec(load(run.models[0]).spec, genome.layout), {"pool": pool_params([load(m) for m in run.models])}
    raw = jnp.asarray(best["raw"], jnp.float32)
    tokens = np.random.default_rng(0).integers(3, 97, (2, 8)).astype(np.int32)
    want = np.asarray(jax.jit(lambda r: forward(spec, path_params(genome, r, data), tokens))(raw))
    got = hf_logits(root / "dfs" / "model", tokens)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    exported = load(root / "dfs" / "model")
    tasks = prepare_tasks(run.fitness.tasks, root / "dfs" / "model", allow_test=False, item_batch=3, seed=0)
    plain_fitness = weighted_fitness(exported.spec, tasks)
    assert float(jax.jit(plain_fitness)(exported.params)) == pytest.approx(best["fitness"], rel=1e-4)
    assert best["fitness"] >= best["baselines"]["start"] == best["baselines"]["sources"][str(root / "a")]
    rebuilds_exactly(root / "dfs", root / "dfs-rebuilt")
    theirs = mergekit_merge(yaml.safe_load((root / "dfs" / "recipe.yml").read_text()), root / "dfs-mergekit")
    assert worst_relative(read_tensors(root / "dfs" / "model"), theirs)[0] <= 1e-5


def test_evolve_dfs_on_a_generative_task_over_the_pop_mesh(root):
    """Greedy decoding through a layer path under the population's shard_map: the KV-cache entries of unused
    steps pass through `lax.cond` and must be typed like the used steps' (this run once failed to trace). The
    exported winner scores on the task what best.json says."""
    (root / "gen.yml").write_text(TASK.replace("name: arith", "name: gen").replace("loglik", "exact_match")
                                  + "max_new_tokens: 3\n")
    cfg = write_config(root, "dfs_gen.yml", mode="dfs", dfs={"repeats": 1},
                       fitness={"tasks": [{"task": "gen.yml"}], "item_batch": 3},
                       search={"strategy": "Sep_CMA_ES", "population": 8, "generations": 1, "sigma": 0.3})
    assert main(["evolve", cfg, "--out", str(root / "dfs_gen"), "--no-progress"]) == 0
    best = json.loads((root / "dfs_gen" / "best.json").read_text())
    run, exported = load_config(cfg), load(root / "dfs_gen" / "model")
    tasks = prepare_tasks(run.fitness.tasks, root / "dfs_gen" / "model", allow_test=False, item_batch=3, seed=0)
    assert float(jax.jit(weighted_fitness(exported.spec, tasks))(exported.params)) == best["fitness"]


@pytest.mark.slow
def test_evolve_hybrid(root):
    cfg = write_config(root, "hybrid.yml", mode="hybrid", merge_method="linear",
                       evolve={"weight": {"init": 0.5, "bounds": [0.0, 1.0]}}, dfs={"repeats": 2, "generations": 1})
    assert main(["evolve", cfg, "--out", str(root / "hybrid"), "--no-progress"]) == 0
    assert (root / "hybrid" / "ps" / "model" / "config.json").is_file()
    record = json.loads((root / "hybrid" / "dfs" / "model" / "path.json").read_text())
    assert record["models"][0] == str(root / "hybrid" / "ps" / "model")
    assert len((root / "hybrid" / "dfs" / "history.jsonl").read_text().splitlines()) == 1 + 1
    loads_in_transformers(root / "hybrid" / "dfs" / "model")
    top = json.loads((root / "hybrid" / "best.json").read_text())  # the final winner at the top level
    assert top["fitness"] == json.loads((root / "hybrid" / "dfs" / "best.json").read_text())["fitness"]
    assert top["fitness"] >= top["stages"]["ps"]["fitness"]  # the DFS stage starts from the PS winner
    assert (root / "hybrid" / "model" / "model.safetensors").read_bytes() == \
        (root / "hybrid" / "dfs" / "model" / "model.safetensors").read_bytes()
    rebuilds_exactly(root / "hybrid", root / "hybrid-rebuilt")
    rebuilds_exactly(root / "hybrid" / "ps", root / "hybrid-ps-rebuilt")


def test_bad_dfs_section_exit_2(root, capsys):
    cfg = write_config(root, "bad.yml", mode="dfs", dfs={"repeats": 0})
    assert main(["evolve", cfg, "--out", str(root / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "repeats" in err and "\n" not in err
