"""The generation step on a synthetic problem: find the hidden merge weights of a target merge.

Fitness = -(mean squared distance between the candidate's merge and a target merge made with hidden weights),
so the optimum is known and every strategy can be checked for progress, compile-once and NaN handling without
any model forward pass.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.arch import ArchSpec
from jaxmerge.ps.genome import Gene, GeneSpec
from jaxmerge.evolve.step import initial_state, make_step
from jaxmerge.evolve.strategy import STRATEGIES, make_search
from jaxmerge.merge import METHODS, Sources, init_state, merge_params
from jaxmerge.params import param_shapes

SPEC = ArchSpec("llama", vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=4, num_heads=2,
                num_kv_heads=1, head_dim=4)
METHOD = METHODS["task_arithmetic"]


def random_params(rng, shapes):
    return {k: random_params(rng, v) if isinstance(v, dict) else rng.normal(size=v).astype(np.float32)
            for k, v in shapes.items()}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    shapes = param_shapes(SPEC)
    base = random_params(rng, shapes)
    models = jax.tree.map(lambda *xs: np.stack(xs), *[random_params(rng, shapes) for _ in range(3)])
    state = init_state(METHOD, Sources(SPEC, base, models, ("a", "b", "c")))
    genome = GeneSpec(SPEC, 3, (Gene("weight", True, 0.5, 0.0, 1.0),), layers_per_group=2,
                      fixed=(("lambda", 1.0, False), ("normalize", 0.0, False)))
    hidden = jnp.asarray(np.random.default_rng(1).uniform(0.1, 0.9, genome.size), jnp.float32)
    key = jax.random.PRNGKey(0)
    target = merge_params(METHOD, state, genome.hparams(hidden), key)
    return genome, {"merge": state, "target": target}, hidden


def distance_fitness(genome):
    def fitness(raw, key, data):
        merged = merge_params(METHOD, data["merge"], genome.hparams(raw), key)
        sq = jax.tree.map(lambda a, b: jnp.mean((a - b) ** 2), merged, data["target"])
        return -sum(jax.tree.leaves(sq)) / len(jax.tree.leaves(sq))
    return fitness


def run(genome, data, name, generations, population=8, sigma=0.2, fitness=None, batch=None):
    search = make_search(name, population, genome.size, sigma)
    fitness = fitness or distance_fitness(genome)
    step = make_step(search, fitness, batch or population)
    evaluate = jax.jit(lambda pop, keys: jax.vmap(lambda x, k: fitness(x, k, data))(pop, keys))
    state = initial_state(search, genome.initial_raw(), jax.random.PRNGKey(42), evaluate)
    history = []
    for _ in range(generations):
        state, stats = step(state, data)
        history.append(stats)
    return state, history, step


def test_cma_es_finds_the_hidden_weights(problem):
    genome, data, hidden = problem
    state, history, _ = run(genome, data, "CMA_ES", 40, population=12)
    start = float(history[0].best)
    assert float(state.best_fitness) > 0.02 * start  # error shrunk at least 50x from the first generation
    np.testing.assert_allclose(np.asarray(state.best_raw), np.asarray(hidden), atol=0.08)


def test_step_compiles_once(problem):
    genome, data, _ = problem
    state, history, step = run(genome, data, "CMA_ES", 4)
    assert step._cache_size() == 1
    assert int(state.generation) == 4 and int(state.evaluations) == 4 * 8


def gene_distance_fitness(raw, key, data):
    """Cheap stand-in (no merge) so the strategy sweep tests the adapters, not the compiler."""
    return -jnp.mean((raw - data["hidden"]) ** 2)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_three_generations(problem, name):
    genome, _, hidden = problem
    state, history, step = run(genome, {"hidden": hidden}, name, 3, fitness=gene_distance_fitness)
    assert int(state.generation) == 3
    assert np.isfinite(float(state.best_fitness))
    assert float(state.best_fitness) >= max(float(h.best) for h in history) - 1e-6
    assert step._cache_size() == 1


def test_same_seed_same_run_and_lax_map_batches_agree(problem):
    genome, data, _ = problem
    a, _, _ = run(genome, data, "CMA_ES", 3)
    again, _, _ = run(genome, data, "CMA_ES", 3)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # lax.map in batches of 2 vectorises differently from one vmap of 8: equal up to float rounding
    b, _, _ = run(genome, data, "CMA_ES", 3, batch=2)
    np.testing.assert_allclose(np.asarray(b.best_raw), np.asarray(a.best_raw), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(b.best_fitness), float(a.best_fitness), rtol=1e-4)


def test_nonfinite_candidates_score_worst_and_are_counted(problem):
    genome, data, _ = problem
    base = distance_fitness(genome)

    def fitness(raw, key, data):  # NaN for about half of the candidates
        return jnp.where(raw[0] > 0.5, jnp.nan, base(raw, key, data))

    state, history, _ = run(genome, data, "CMA_ES", 3, fitness=fitness)
    assert int(state.nonfinite) == sum(int(h.nonfinite) for h in history) > 0
    assert np.isfinite(float(state.best_fitness))
    assert float(state.best_raw[0]) <= 0.5
