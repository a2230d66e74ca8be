"""evosax strategies behind one small interface, picked by their evosax name.

evosax has two families with different `init` signatures (distribution-based: init from a mean; population-based:
init from an evaluated population) and three ways to set the search scale (a `std_init` param, a `std_schedule`
constructor argument, or none). One explicit table says which is which, so adding a strategy is one line and
nothing is discovered by introspection. evosax minimises: `Search.tell` takes our higher-is-better fitness and
negates it once, here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxmerge.errors import JaxmergeError, expect

# name -> (family, how sigma is set, minimum population)
STRATEGIES: dict[str, tuple[str, str | None, int]] = {
    "CMA_ES": ("distribution", "std_init", 4),
    "Sep_CMA_ES": ("distribution", "std_init", 4),
    "LM_MA_ES": ("distribution", "std_init", 4),
    "MA_ES": ("distribution", "std_init", 4),
    "SNES": ("distribution", "std_init", 4),
    "xNES": ("distribution", "std_init", 4),
    "CR_FM_NES": ("distribution", "std_init", 4),
    "PGPE": ("distribution", "std_init", 4),
    "Open_ES": ("distribution", "std_schedule", 4),
    "ARS": ("distribution", "std_schedule", 4),
    "SimpleGA": ("population", "std_schedule", 4),
    "DifferentialEvolution": ("population", None, 4),
    "PSO": ("population", None, 4),
}
OPTIMIZER_STRATEGIES = ("Open_ES", "ARS", "PGPE", "SNES")


@dataclasses.dataclass(frozen=True)
class Search:
    """A configured evosax strategy over flat genomes; hashable, so jitted steps take it as a static argument."""
    name: str
    population: int
    num_dims: int
    sigma: float
    learning_rate: float = 0.05

    @property
    def family(self) -> str:
        return STRATEGIES[self.name][0]

    def built(self):
        """(evosax algorithm, its params), built once on the host (some strategies compute their defaults with
        Python ints, which must not happen under a trace)."""
        return _build(self)

    def init(self, key: jax.Array, mean: jax.Array, evaluate) -> tuple[Any, jax.Array, jax.Array]:
        """Strategy state. Population-based strategies start from an evaluated cloud of sigma around `mean`
        (its first member is `mean` itself); returns (state, that population or None, its fitness or None)."""
        algorithm, params = self.built()
        k_init, k_pop = jax.random.split(key)
        if self.family == "distribution":
            return algorithm.init(k_init, mean, params), None, None
        noise = jax.random.normal(k_pop, (self.population, self.num_dims)) * self.sigma
        population = (mean + noise.at[0].set(0.0)).astype(jnp.float32)
        fitness = evaluate(population)
        return algorithm.init(k_init, population, -fitness, params), population, fitness

    def ask(self, key: jax.Array, state) -> tuple[jax.Array, Any]:
        algorithm, params = self.built()
        return algorithm.ask(key, state, params)

    def tell(self, key: jax.Array, population: jax.Array, fitness: jax.Array, state) -> Any:
        """Update with higher-is-better `fitness` (NaN already mapped to the worst value by the caller)."""
        algorithm, params = self.built()
        state, _ = algorithm.tell(key, population, -fitness, state, params)
        return state


@functools.lru_cache(maxsize=None)
def _build(search: Search):
    import evosax.algorithms as algorithms
    kwargs: dict[str, Any] = {}
    if STRATEGIES[search.name][1] == "std_schedule":
        kwargs["std_schedule"] = optax.constant_schedule(search.sigma)
    if search.name in OPTIMIZER_STRATEGIES:
        kwargs["optimizer"] = optax.adam(search.learning_rate)
    algorithm = getattr(algorithms, search.name)(search.population, jnp.zeros((search.num_dims,), jnp.float32),
                                                  **kwargs)
    params = algorithm.default_params  # read before init: LM_MA_ES needs it
    if STRATEGIES[search.name][1] == "std_init":
        params = params.replace(std_init=search.sigma)
    return algorithm, params


def make_search(name: str, population: int, num_dims: int, sigma: float, learning_rate: float = 0.05) -> Search:
    """Validate the user's choice on the host (one clear line each) and build the `Search` (NSGA2: the
    several-objective strategy of jaxmerge.evolve.nsga2, same interface)."""
    if name == "NSGA2":
        expect(population >= 4 and population % 2 == 0, f"expected an even population >= 4 for NSGA2, found "
                                                         f"{population}")
        expect(num_dims >= 1, "expected at least one evolved gene, found none (nothing to search)")
        from jaxmerge.evolve.nsga2 import NSGA2
        return NSGA2(population, num_dims, float(sigma))
    if name not in STRATEGIES:
        raise JaxmergeError(f"expected strategy in {sorted([*STRATEGIES, 'NSGA2'])}, found {name!r}")
    minimum = STRATEGIES[name][2]
    expect(population >= minimum, f"expected population >= {minimum} for {name}, found {population}")
    expect(name != "Open_ES" or population % 2 == 0, f"expected an even population for Open_ES, found {population}")
    expect(sigma > 0, f"expected sigma > 0, found {sigma}")
    expect(num_dims >= 1, "expected at least one evolved gene, found none (nothing to search)")
    search = Search(name, population, num_dims, float(sigma), float(learning_rate))
    search.built()  # on the host, now
    return search
