"""One generation as one compiled function: ask -> decode -> merge + score every candidate -> tell.

The step is a pure function of (`EvolveState`, `data`): `data` holds the arrays the candidates read (the merge
state of the sources, or a DFS layer pool), passed as an argument so nothing large is baked into the program as
a constant; the task items are small host constants closed over by the fitness.
Candidates are evaluated with `lax.map(..., batch_size=b)`: b = population is a plain vmap; smaller b bounds how
many merged models are alive at once. Each candidate gets its own merge key, recorded with the best genes, so the
exported winner is the model that earned its fitness: the same genes and the same DARE masks, its values equal up
to float32 rounding (the step merges every candidate in one whole-tree program, the export tensor by tensor, and
XLA sums and fuses each program its own way; tests/test_merge_key.py bounds the difference). The export and
`jaxmerge merge` of its recipe run the same programs and agree bit for bit.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge.evolve.strategy import Search

WORST = -jnp.finfo(jnp.float32).max  # what a NaN/Inf candidate scores: finite, so every strategy ranks it last


class EvolveState(NamedTuple):
    """Everything a run needs to continue; checkpointed whole each generation."""
    strategy: Any
    key: jax.Array           # raw uint32[2] PRNG key (plain array: checkpoints and compares bit-exactly)
    generation: jax.Array    # int32, generations completed
    best_fitness: jax.Array  # float32
    best_raw: jax.Array      # [D] unit-cube genome of the best candidate so far
    best_key: jax.Array      # uint32[2] merge key of that candidate
    best_generation: jax.Array
    evaluations: jax.Array   # int32, candidates scored so far
    nonfinite: jax.Array     # int32, candidates whose fitness was NaN/Inf so far


class GenerationStats(NamedTuple):
    fitness: jax.Array  # [P] raw fitness (NaN kept, for the record)
    best: jax.Array
    mean: jax.Array
    std: jax.Array
    nonfinite: jax.Array
    front: Any = None   # several objectives: the strategy's parents and which are on the front (nsga2.py)


CandidateFitness = Callable[[jax.Array, jax.Array, Any], jax.Array]  # (raw [D], key, data) -> scalar, or
# [1 + K] with several objectives: the weighted fitness first, then the objectives (a "pareto" strategy's)


def scalar(fitness: jax.Array) -> jax.Array:
    """[P] weighted fitness of a population's [P] or [P, 1 + K] scores (the ndim is static)."""
    return fitness if fitness.ndim == 1 else fitness[:, 0]


def evaluate_population(candidate_fitness: CandidateFitness, population, keys, data, batch_size: int, mesh=None):
    """Fitness [P] of every candidate; at most `batch_size` candidates in flight (per pop shard with a `mesh`:
    candidates split over its "pop" axis, see jaxmerge.evolve.mesh)."""
    from jaxmerge.evolve.mesh import map_candidates, pop_map
    if mesh is not None:
        return pop_map(lambda xk: candidate_fitness(xk[0], xk[1], data), (population, keys), batch_size, mesh)
    return map_candidates(lambda xk: candidate_fitness(xk[0], xk[1], data), (population, keys), batch_size)


def initial_state(search: Search, mean: jax.Array, key: jax.Array, evaluate, start_fitness=None) -> EvolveState:
    """State before generation 1. The best so far starts as the starting point `mean` (merge key zero) with its
    `start_fitness`, so a search that never beats its start returns the start. `evaluate(population, keys) ->
    fitness` is only called for population-based strategies, which start from an evaluated population (scored
    with all-zero merge keys; its first member is `mean`)."""
    k_search, k_run = jax.random.split(key)
    zero_keys = jnp.zeros((search.population, 2), jnp.uint32)
    strategy, population, fitness = search.init(k_search, mean, lambda pop: evaluate(pop, zero_keys))
    start = WORST if start_fitness is None else jnp.where(jnp.isfinite(start_fitness), start_fitness, WORST)
    state = EvolveState(strategy, k_run, jnp.int32(0), jnp.float32(start), mean.astype(jnp.float32),
                        jnp.zeros((2,), jnp.uint32), jnp.int32(0), jnp.int32(0), jnp.int32(0))
    if population is not None:
        state = _record_best(state, population, fitness, zero_keys)
    return strongly_typed(state)


def strongly_typed(state: EvolveState) -> EvolveState:
    """Every leaf as a committed, strongly typed array. evosax's init leaves Python scalars (weak types) that
    its `tell` returns as int32/float32 arrays; without this the second generation would compile again."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), state)


def _record_best(state: EvolveState, population, fitness, keys) -> EvolveState:
    fitness = scalar(fitness)
    clean = jnp.where(jnp.isfinite(fitness), fitness, WORST)
    i = jnp.argmax(clean)
    improved = clean[i] > state.best_fitness
    return state._replace(
        best_fitness=jnp.where(improved, clean[i], state.best_fitness),
        best_raw=jnp.where(improved, population[i], state.best_raw),
        best_key=jnp.where(improved, keys[i], state.best_key),
        best_generation=jnp.where(improved, state.generation, state.best_generation),
        evaluations=state.evaluations + fitness.shape[0],
        nonfinite=state.nonfinite + jnp.sum(~jnp.isfinite(fitness)).astype(jnp.int32),
    )


def generation_step(search: Search, candidate_fitness: CandidateFitness, batch_size: int,
                    state: EvolveState, data, mesh=None) -> tuple[EvolveState, GenerationStats]:
    """One generation. Pure; jit it with search, candidate_fitness and batch_size static (see `make_step`)."""
    start = state
    key, k_ask, k_merge, k_tell = jax.random.split(state.key, 4)
    population, strategy = search.ask(k_ask, state.strategy)
    keys = jax.random.split(k_merge, search.population)
    if mesh is not None:  # ask and tell run whole on every device: XLA left free would split their matmuls and
        # reductions over "pop", whose cross-device sums round differently with the number of processes
        from jaxmerge.evolve.mesh import replicated
        population, keys = jax.lax.with_sharding_constraint((population, keys), replicated(mesh))
    scores = evaluate_population(candidate_fitness, population, keys, data, batch_size, mesh)
    fitness = scalar(scores)
    finite = jnp.isfinite(fitness)
    clean = jnp.where(finite, fitness, WORST)
    if search.family == "pareto":  # several objectives: the strategy reads them all, and keeps the keys
        strategy = search.tell(k_tell, population, scores, strategy, keys)
    else:
        strategy = search.tell(k_tell, population, clean, strategy)
    state = state._replace(strategy=strategy, key=key, generation=state.generation + 1)
    state = _record_best(state, population, fitness, keys)
    n_finite = jnp.maximum(jnp.sum(finite), 1)
    mean = jnp.sum(jnp.where(finite, fitness, 0.0)) / n_finite
    std = jnp.sqrt(jnp.sum(jnp.where(finite, (fitness - mean) ** 2, 0.0)) / n_finite)
    front = search.front(strategy) if search.family == "pareto" else None
    stats = GenerationStats(fitness, jnp.max(clean), mean, std, jnp.sum(~finite).astype(jnp.int32), front)
    return same_types(state, like=start), stats


def same_types(state, like):
    """Cast every leaf to the dtype of the matching leaf of `like` (strongly typed): a schedule inside a
    strategy may return a Python float, and a weakly typed leaf would make the next call compile again."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(ref.dtype), state, like)


def make_step(search: Search, candidate_fitness: CandidateFitness, batch_size: int, mesh=None):
    """The jitted generation step: compiled once, reused for every generation (state and data are arrays).
    With a `mesh`, candidates are split over its pop axis and state and stats come back replicated, so the
    next generation's inputs have the same shardings as this one's (no second compilation)."""
    fn = lambda state, data: generation_step(search, candidate_fitness, batch_size, state, data, mesh)  # noqa: E731
    if mesh is None:
        return jax.jit(fn)
    from jaxmerge.evolve.mesh import replicated
    return jax.jit(fn, out_shardings=replicated(mesh))
