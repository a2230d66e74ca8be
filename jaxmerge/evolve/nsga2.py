"""NSGA-II (Deb et al. 2002) as a search strategy over the same spaces: several objectives, one compiled step.

A candidate's fitness is a vector [1 + K]: column 0 the run's usual weighted fitness (what best.json, the
baselines and the winner are about), columns 1.. the K objectives, all higher-is-better. The strategy keeps a
parent population of P genomes with their objectives and merge keys; `ask` breeds P children (binary
tournaments on rank then crowding, simulated binary crossover, polynomial mutation, in the unit cube the spaces
decode from); `tell` ranks parents + children by non-dominated sorting, breaks ties by crowding distance and
keeps the best P. Everything is fixed-shape device math (a domination matrix of the 2P candidates, a
fixed-length peeling loop, segment max/min per front), so it runs inside the generation step, is checkpointed
with the run and resumes bit-identically. A candidate with a NaN/Inf objective counts as worst in all of them.
The front is the parents of rank 0; `ref` (per objective, the worst value of the scored initial population)
is the fixed reference point of the hypervolume reported per generation.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

WORST = -jnp.finfo(jnp.float32).max
ETA_CROSS, ETA_MUTATE, P_CROSS = 15.0, 20.0, 0.9


class ParetoState(NamedTuple):
    x: jax.Array       # [P, D] parent genomes (unit cube)
    f: jax.Array       # [P, K] their objectives (non-finite already mapped to WORST)
    keys: jax.Array    # [P, 2] their merge keys (uint32)
    rank: jax.Array    # [P] non-domination rank (0: the front)
    crowd: jax.Array   # [P] crowding distance within the rank
    ref: jax.Array     # [K] hypervolume reference point
    score: jax.Array   # [P] their weighted fitness (column 0, as scored: NaN kept)


def clean(objectives: jax.Array) -> jax.Array:
    """Rows with any non-finite objective become WORST in every objective (dominated by any finite row)."""
    ok = jnp.all(jnp.isfinite(objectives), axis=-1, keepdims=True)
    return jnp.where(ok, objectives, WORST).astype(jnp.float32)


def ranks(f: jax.Array) -> jax.Array:
    """[N] non-domination rank of each row of f [N, K] (maximisation), peeled front by front."""
    n = f.shape[0]
    dominates = jnp.all(f[:, None] >= f[None], -1) & jnp.any(f[:, None] > f[None], -1)  # [i, j]: i dominates j

    def peel(r, carry):
        rank, left = carry
        front = left & ~jnp.any(dominates & left[:, None], axis=0)
        return jnp.where(front, r, rank), left & ~front

    rank, _ = jax.lax.fori_loop(0, n, peel, (jnp.full((n,), n, jnp.int32), jnp.ones((n,), bool)))
    return rank


def crowding(f: jax.Array, rank: jax.Array) -> jax.Array:
    """[N] crowding distance: per objective, the normalised gap between a row's neighbours in its own front;
    the ends of a front are infinitely far (always kept first)."""
    n = f.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    for k in range(f.shape[1]):
        order = jnp.lexsort((f[:, k], rank))
        fs, rs = f[order, k], rank[order]
        prev_same = jnp.concatenate([jnp.array([False]), rs[1:] == rs[:-1]])
        next_same = jnp.concatenate([rs[:-1] == rs[1:], jnp.array([False])])
        span = (jax.ops.segment_max(fs, rs, n) - jax.ops.segment_min(fs, rs, n))[rs]
        gap = (jnp.roll(fs, -1) - jnp.roll(fs, 1)) / jnp.where(span > 0, span, 1.0)
        d = jnp.where(prev_same & next_same, gap, jnp.inf)
        total = total.at[order].add(d)
    return total


def duplicates(f: jax.Array) -> jax.Array:
    """[N] whether a row repeats the objectives of an earlier row (a parent kept beside its unchanged child)."""
    same = jnp.all(f[:, None] == f[None], axis=-1)
    return jnp.any(jnp.tril(same, k=-1), axis=1)


def survivors(f: jax.Array, count: int):
    """(indices of the `count` best rows: rank ascending, then crowding descending; their rank; crowding).
    A repeated objective vector is ranked as worst, so the front holds distinct trade-offs and copies take a
    slot only when nothing else is left."""
    f = jnp.where(duplicates(f)[:, None], WORST, f)
    rank = ranks(f)
    crowd = crowding(f, rank)
    keep = jnp.lexsort((-crowd, rank))[:count]
    return keep, rank[keep], crowd[keep]


def tournament(key, rank, crowd, count: int) -> jax.Array:
    a, b = jax.random.randint(key, (2, count), 0, rank.shape[0])
    a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowd[a] >= crowd[b]))
    return jnp.where(a_wins, a, b)


def sbx(key, p1, p2):
    """Simulated binary crossover of parent pairs [P, D] in [0, 1] (two children per pair, the first kept)."""
    k_u, k_do = jax.random.split(key)
    u = jax.random.uniform(k_u, p1.shape)
    beta = jnp.where(u <= 0.5, (2 * u) ** (1 / (ETA_CROSS + 1)), (1 / (2 * (1 - u))) ** (1 / (ETA_CROSS + 1)))
    child = 0.5 * ((1 + beta) * p1 + (1 - beta) * p2)
    cross = jax.random.uniform(k_do, p1.shape[:1] + (1,)) < P_CROSS
    return jnp.where(cross, child, p1)


def mutate(key, x):
    """Polynomial mutation, each gene with probability 1/D, kept in [0, 1]."""
    k_u, k_do = jax.random.split(key)
    u = jax.random.uniform(k_u, x.shape)
    delta = jnp.where(u < 0.5, (2 * u) ** (1 / (ETA_MUTATE + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (ETA_MUTATE + 1)))
    do = jax.random.uniform(k_do, x.shape) < 1.0 / x.shape[1]
    return jnp.clip(jnp.where(do, x + delta, x), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class NSGA2:
    """The Search interface of jaxmerge.evolve.strategy for several objectives (hashable: a static argument)."""
    population: int
    num_dims: int
    sigma: float
    name: str = "NSGA2"
    family: str = "pareto"

    def init(self, key, mean, evaluate):
        """Parents: a cloud of sigma around `mean` (its first member `mean` itself), scored by `evaluate`."""
        noise = jax.random.normal(key, (self.population, self.num_dims)) * self.sigma
        population = jnp.clip(mean + noise.at[0].set(0.0), 0.0, 1.0).astype(jnp.float32)
        fitness = evaluate(population)
        f = clean(fitness[:, 1:])
        keep, rank, crowd = survivors(f, self.population)
        keys = jnp.zeros((self.population, 2), jnp.uint32)
        state = ParetoState(population[keep], f[keep], keys[keep], rank, crowd, jnp.min(f, axis=0),
                            fitness[keep, 0])
        return state, population, fitness

    def ask(self, key, state: ParetoState):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        p1 = state.x[tournament(k1, state.rank, state.crowd, self.population)]
        p2 = state.x[tournament(k2, state.rank, state.crowd, self.population)]
        return mutate(k4, sbx(k3, p1, p2)), state

    def tell(self, key, population, fitness, state: ParetoState, keys):
        x = jnp.concatenate([state.x, population])
        f = jnp.concatenate([state.f, clean(fitness[:, 1:])])
        both = jnp.concatenate([state.keys, keys])
        score = jnp.concatenate([state.score, fitness[:, 0]])
        keep, rank, crowd = survivors(f, self.population)
        return ParetoState(x[keep], f[keep], both[keep], rank, crowd, state.ref, score[keep])

    def front(self, state: ParetoState) -> dict:
        """The parents with their objectives, merge keys and whether they are on the front (rank 0)."""
        return {"x": state.x, "f": state.f, "keys": state.keys, "front": state.rank == 0, "ref": state.ref,
                "score": state.score}
