"""What the engine searches: a `SearchSpace` (a record of pure functions, the optax move) and `RunSettings`.

The engine (jaxmerge.evolve.engine) runs any space it is handed and imports none of them: the parameter space
(jaxmerge.ps) and the data-flow space (jaxmerge.dfs) each build one of these from a run config, and a hybrid
run (jaxmerge.modes) composes two runs above both. A space supplies:

  size        genes per candidate (a flat float32 vector, searched in evosax's space)
  initial     the starting point [size]: PS's initial genes, DFS's model A; it is scored and seeds the best,
              so a search never returns less than where it started
  data        the pytree of arrays every candidate reads (merge state, layer pool): the step's argument
  candidate   (raw [size], key, data) -> float32 fitness, higher is better: pure, jittable, one compile
  baselines   () -> [(name, fitness_fn, load_params)]: plain models to score once on the same fitness data
              (the sources); `fitness_fn(params) -> f32` pure, `load_params()` -> params on the run's mesh
  describe    raw -> {gene name: nested lists in real units}, for best.json and the model card
  export      (raw, key, out_dir, record) -> dict: write the winner (DIR/model and the space's own files:
              recipe, plots) from its genes and merge key; `record` is best.json so far (fitness, baselines,
              tasks) for the model card; returns what the space adds to best.json. Called by every process
              (the winner is gathered collectively), writes only on process 0.
  facts       what the space resolved (memory mode, dtype, layout), recorded in best.json; with several
              objectives `facts["objectives"]` names them, and `candidate` returns [1 + K]: the weighted fitness,
              then the objectives (a "pareto" strategy searches them, jaxmerge.evolve.nsga2)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple



@dataclasses.dataclass(frozen=True)
class Search:
    """The search settings of a run (the config's `search:` section) or of one stage of a hybrid."""
    strategy: str = "CMA_ES"
    population: int = 16
    generations: int = 20
    sigma: float = 0.15
    learning_rate: float = 0.05
    seed: int = 0
    objectives: tuple[str, ...] = ()  # several objectives (strategy NSGA2): task names, or length:TASK


class SearchSpace(NamedTuple):
    name: str
    size: int
    initial: Any
    data: Any
    candidate: Callable
    baselines: Callable
    describe: Callable
    export: Callable
    facts: dict


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What one run (or one stage of a hybrid) resolved before it starts; the config itself is never rewritten.

    `search` is the stage's search (a hybrid's DFS stage takes dfs.generations / dfs.sigma), `batch_size` the
    candidates in flight per pop shard (0 in the config: the shard's whole share), `mesh` the one mesh of the
    process, built once."""
    search: Search
    batch_size: int
    mesh: Any
