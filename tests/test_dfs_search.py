"""DFS genes inside the evolution engine's compiled generation step: flat genome round trip, one compile for
every generation, and a search that moves toward a hidden path (synthetic fitness: distance to its logits)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import forward
from jaxmerge.dfs.space import DFSGenome, path_params
from jaxmerge.dfs.sources import pool_params, layout_for
from jaxmerge.dfs.layout import DFSLayout
from jaxmerge.dfs.path import path_spec
from jaxmerge.evolve.step import initial_state, make_step
from jaxmerge.evolve.strategy import make_search
from jaxmerge.io import load
from tests.tiny import make_tiny_model


@pytest.mark.parametrize("w_mode", ["matrix", "per_slot"])
def test_flat_genome_round_trip(w_mode):
    genome = DFSGenome(DFSLayout((3, 2), 2, w_mode))
    raw = jnp.arange(genome.size, dtype=jnp.float32)
    genes = genome.genes(raw)
    assert genes["indicator"].shape == (10,)
    assert genes["scales"].shape == ((5, 5) if w_mode == "matrix" else (11,))
    np.testing.assert_array_equal(jnp.concatenate([v.ravel() for v in genes.values()]), raw)
    initial = genome.genes(genome.initial_raw())
    np.testing.assert_array_equal(initial["indicator"], genome.layout.initial_genes()["indicator"])


@pytest.mark.slow
def test_generation_step_compiles_once_and_approaches_a_hidden_path(tmp_path):
    a = make_tiny_model(tmp_path / "a", "llama", seed=0)
    b = make_tiny_model(tmp_path / "b", perturb_from=a, seed=1, scale=0.3)
    models = [load(a), load(b)]
    space = layout_for(models, 2)
    genome = DFSGenome(space)
    spec = path_spec(models[0].spec, space)
    tokens = np.random.default_rng(0).integers(3, 97, (2, 6)).astype(np.int32)
    data = {"pool": pool_params(models)}
    hidden = genome.initial_raw().at[3].set(1.0).at[1].set(-1.0)  # A0 B0 A2 instead of A0 A1 A2
    target = jax.jit(lambda raw: forward(spec, path_params(genome, raw, data), tokens))(hidden)

    def fitness(raw, key, data):
        return -jnp.mean((forward(spec, path_params(genome, raw, data), tokens) - target) ** 2)
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

