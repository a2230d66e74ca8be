"""DFS genes inside the evolution engine's compiled generation step: flat genome round trip, one compile for
every generation, and a search that moves toward a hidden path (synthetic fitness: distance to its logits)."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import forward
from jaxmerge.dfs.search import DFSGenome, dfs_candidate_fitness, dfs_settings, path_params
from jaxmerge.dfs.sources import pool_params, space_for
from jaxmerge.dfs.space import DFSSpace
from jaxmerge.dfs.path import path_spec
from jaxmerge.errors import JaxmergeError
from jaxmerge.evolve.step import initial_state, make_step
from jaxmerge.evolve.strategy import make_search
from jaxmerge.io import load
from tests.tiny import make_tiny_model


@pytest.mark.parametrize("w_mode", ["matrix", "slot"])
def test_flat_genome_round_trip(w_mode):
    genome = DFSGenome(DFSSpace((3, 2), 2, w_mode))
    raw = jnp.arange(genome.size, dtype=jnp.float32)
    genes = genome.genes(raw)
    assert genes["indicator"].shape == (10,)
    assert genes["scales"].shape == ((5, 5) if w_mode == "matrix" else (10,))
    np.testing.assert_array_equal(jnp.concatenate([v.ravel() for v in genes.values()]), raw)
    initial = genome.genes(genome.initial_raw())
    np.testing.assert_array_equal(initial["indicator"], genome.space.initial_genes()["indicator"])


@pytest.mark.slow
def test_generation_step_compiles_once_and_approaches_a_hidden_path(tmp_path):
    a = make_tiny_model(tmp_path / "a", "llama", seed=0)
    b = make_tiny_model(tmp_path / "b", perturb_from=a, seed=1, scale=0.3)
    models = [load(a), load(b)]
    space = space_for(models, 2)
    genome = DFSGenome(space)
    spec = path_spec(models[0].spec, space)
    tokens = np.random.default_rng(0).integers(3, 97, (2, 6)).astype(np.int32)
    problem = types.SimpleNamespace(genome=genome, fitness=None)
    data = {"pool": pool_params(models)}
    hidden = genome.initial_raw().at[3].set(1.0).at[1].set(-1.0)  # A0 B0 A2 instead of A0 A1 A2
    target = jax.jit(lambda raw: forward(spec, path_params(problem, raw, data), tokens))(hidden)
    problem.fitness = lambda params: -jnp.mean((forward(spec, params, tokens) - target) ** 2)
    fitness = dfs_candidate_fitness(problem)
    score = jax.jit(lambda raw: fitness(raw, None, data))
    search = make_search("Sep_CMA_ES", 8, genome.size, 0.6)
    step = make_step(search, fitness, 8)
    state = initial_state(search, genome.initial_raw(), jax.random.PRNGKey(0), None)
    start = float(score(genome.initial_raw()))
    for _ in range(6):
        state, _ = step(state, data)
    assert step._cache_size() == 1
    assert float(state.best_fitness) > start  # the search left model A toward the hidden path
    assert float(score(hidden)) == 0.0


def test_dfs_section_checked():
    cfg = types.SimpleNamespace(dfs={"repeats": 0}, generations=3, sigma=0.1)
    with pytest.raises(JaxmergeError, match="repeats"):
        dfs_settings(cfg)
    cfg.dfs = {"repeat": 2}
    with pytest.raises(JaxmergeError, match="unknown key"):
        dfs_settings(cfg)
    cfg.dfs = {"w_mode": "row"}
    with pytest.raises(JaxmergeError, match="w_mode"):
        dfs_settings(cfg)
    cfg.dfs = {"repeats": 2}
    assert dfs_settings(cfg) == {"repeats": 2, "w_mode": "matrix", "generations": 3, "sigma": 0.1}


TASK = """name: arith
splits: {dev: dev.jsonl}
template: "Q: {prompt}\\nA:"
metric: loglik
"""


@pytest.mark.slow
def test_dfs_problem_end_to_end_export_scores_like_the_path(tmp_path):
    """build_dfs_problem -> two compiled generations -> write_dfs_outputs; the exported plain model loads in
    transformers with the path's logits and gets the path's fitness. RMSNorm eps is 1e-10 here so the pipeline
    is checked at the fold's exact limit: eps is the fold's one inexact part (see fold.py), and its effect is
    measured in test_dfs_export.py. (eps = 0 would turn the all-zero pad embedding into NaN.)"""
    from jaxmerge import model
    from jaxmerge.evolve.config import parse_config
    from jaxmerge.evolve.problem import build_fitness
    from jaxmerge.dfs.search import build_dfs_problem, write_dfs_outputs
    from tests.fitness_tiny import add_char_tokenizer
    from tests.tiny import hf_logits
    a = add_char_tokenizer(make_tiny_model(tmp_path / "a", "llama", seed=0, rms_norm_eps=1e-10))
    make_tiny_model(tmp_path / "b", perturb_from=a, seed=1, scale=0.2)
    rows = [{"prompt": f"{x}+{y}", "answer": str(x + y)} for x in range(3) for y in range(2)]
    (tmp_path / "dev.jsonl").write_text("".join(f'{{"prompt": "{r["prompt"]}", "answer": "{r["answer"]}"}}\n'
                                                for r in rows))
    (tmp_path / "arith.yml").write_text(TASK)
    cfg = parse_config({"models": ["a", "b"], "mode": "dfs", "dfs": {"repeats": 2},
                        "fitness": {"tasks": [{"task": "arith.yml"}], "item_batch": 3},
                        "search": {"strategy": "Sep_CMA_ES", "population": 4, "generations": 2, "sigma": 0.5}},
                       tmp_path)
    problem = build_dfs_problem(cfg)
    search = make_search("Sep_CMA_ES", 4, problem.genome.size, 0.5)
    step = make_step(search, dfs_candidate_fitness(problem), 4)
    state = initial_state(search, problem.genome.initial_raw(), jax.random.PRNGKey(0), None)
    for _ in range(2):
        state, _ = step(state, problem.data)
    best = write_dfs_outputs(problem, state, [], tmp_path / "run")
    exported = load(tmp_path / "run" / "model")
    assert exported.spec.num_layers == len(best["path"])
    plain_fitness, _ = build_fitness(cfg, exported.spec, tmp_path / "run" / "model")
    assert float(jax.jit(plain_fitness)(exported.params)) == pytest.approx(best["fitness"], rel=1e-4)
    tokens = np.random.default_rng(0).integers(3, 97, (2, 8)).astype(np.int32)
    path = jax.jit(lambda raw: forward(problem.spec, path_params(problem, raw, problem.data), tokens))
    want = np.asarray(path(state.best_raw))
    got = hf_logits(tmp_path / "run" / "model", tokens)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    np.testing.assert_allclose(np.asarray(model.forward_jit(exported.spec, exported.params, tokens)), got,
                               rtol=0, atol=1e-4 * np.abs(want).max())
