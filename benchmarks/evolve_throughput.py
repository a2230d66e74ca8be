"""Evolution throughput: jaxmerge's one-compiled-step generation vs a mergekit-evolve-style loop.

Same sources (a random Llama base + fine-tunes), same task batch (teacher-forced log-likelihood), same genome
(per-model weight and density of dare_ties), same population size, one run on one machine:

- jaxmerge: `make_step` from the engine (ask -> decode -> merge every candidate -> score -> tell), timed per
  generation after the first (which compiles; its time and the compilations after it are reported too).
- the loop, as mergekit-evolve does it minus its disk and Ray overheads (so the baseline is generous): for each
  candidate, mergekit 0.1.5 merges in memory (`merge_state_dicts`), transformers loads the merged state dict
  into a Llama and scores the same items. Fitness agreement between the two is checked on a deterministic
  method (ties), so the loop provably does the same work.
- the on-disk loop, mergekit-evolve's default: mergekit's `run_merge` writes each candidate to a directory and
  transformers loads it from there; reported beside the in-memory loop (the goal is set against the latter).
- bare forward: the population's forward passes alone (logits for every item of every candidate, no merge, no
  log-softmax, no ask/tell) in one jitted call, one candidate at a time like the step (on CPU that is also the
  fastest way: vmapping candidates' forwards together was slower): what the step would cost if merging were free.

Run: python -m benchmarks.evolve_throughput [--quick]   (prints its Markdown section)
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks.common import Timing, module_main, repeat, result
from benchmarks.world import World, build_world
from jaxmerge.params import stack

SETTINGS = {  # the world and the population of each mode
    False: dict(hidden=256, layers=4, vocab=2048, items=32, population=16, generations=5, loop_candidates=4),
    True: dict(hidden=64, layers=2, vocab=256, items=16, population=8, generations=3, loop_candidates=2),
}


class InMemory(NamedTuple):
    """A PS search space over an in-memory world (jaxmerge.ps.space.build reads paths; the pieces are the same)."""
    space: object
    genome: object
    population: int


def problem_for(world: World, method: str, population: int) -> InMemory:
    from jaxmerge.config import EvolvedParam, Fitness, EvolveConfig
    from jaxmerge.evolve.space import SearchSpace
    from jaxmerge.fitness import make_fitness
    from jaxmerge.io import Model
    from jaxmerge.merge import METHODS, Sources, init_state
    from jaxmerge.ps.space import build_genome, candidate_params
    names = [f"m{i}" for i in range(len(world.sources))]
    evolve = {"weight": EvolvedParam(0.5, 0.0, 1.0)}
    if method != "task_arithmetic":
        evolve["density"] = EvolvedParam(0.7, 0.1, 1.0)
    cfg = EvolveConfig(models=tuple(names), fitness=Fitness(()), base_model="base", merge_method=method,
                       evolve=evolve)
    models = [Model(world.spec, p, None) for p in world.sources]
    sources = Sources(world.spec, world.base, stack([m.params for m in models]), tuple(names))
    method_def = METHODS[method]
    fitness = make_fitness(world.spec, world.prepared, world.tokenizer).fitness
    genome = build_genome(cfg, method_def, world.spec, len(names))
    data = {"merge": init_state(method_def, sources)}
    candidate = lambda raw, key, d: fitness(candidate_params(method_def, genome, "float32", raw, key, d))  # noqa
    space = SearchSpace("ps", genome.size, np.asarray(genome.initial_raw()), data, candidate, list, genome.describe,
                        None, {})
    return InMemory(space, genome, population)


def run_generations(problem: InMemory, generations: int) -> tuple[float, Timing, int]:
    """(first generation seconds incl. compile, timing of the later ones, compilations of the step)."""
    import jax

    from jaxmerge.evolve.engine import compiled
    from jaxmerge.evolve.mesh import build_mesh, data_shardings, place, replicated
    from jaxmerge.evolve.space import RunSettings, Search
    from jaxmerge.evolve.step import initial_state
    mesh = build_mesh(0, 1, problem.population)
    settings = RunSettings(Search(population=problem.population, sigma=0.2), 1, mesh)
    search, step, evaluate = compiled(problem.space, settings)  # as the engine, but from in-memory sources
    data = place(problem.space.data, data_shardings(mesh, problem.space.data))
    state = initial_state(search, jax.numpy.asarray(problem.space.initial), jax.random.PRNGKey(0),
                          lambda pop, keys: evaluate(pop, keys, data))
    state = place(jax.tree.map(np.asarray, state), replicated(mesh))
    start = time.perf_counter()
    state = jax.block_until_ready(step(state, data))[0]
    first = time.perf_counter() - start
    runs = []
    for _ in range(generations):
        start = time.perf_counter()
        state = jax.block_until_ready(step(state, data))[0]
        runs.append(time.perf_counter() - start)
    return first, Timing(tuple(runs)), step._cache_size()


def bare_forward(world: World, population: int, runs: int) -> Timing:
    """Logits of every item for `population` stacked models in one jitted call (forward passes only)."""
    import jax

    from jaxmerge import model
    from jaxmerge.fitness.chunking import chunks
    (group,) = chunks(world.prepared).groups  # a teacher-forced task: one group in item order
    data = {k: v.reshape(v.shape[0], -1, v.shape[-1]) for k, v in group.items() if k in ("tokens", "mask")}
    stacked = stack([world.sources[i % len(world.sources)] for i in range(population)])

    def one(params):
        logits = jax.lax.map(lambda c: model.forward(world.spec, params, c["tokens"], c["mask"],
                                                     model.default_positions(c["mask"])), data)
        return logits.sum()  # every logit is computed; a scalar per candidate keeps the output small
    fn = jax.jit(lambda p: jax.lax.map(one, p))  # one candidate at a time, as the step (memory.batch_size 1)
    stacked = jax.device_put(stacked)
    return repeat(lambda: jax.block_until_ready(fn(stacked)), runs)


class MergekitLoop:
    """One candidate at a time: mergekit merges in memory, transformers scores the merged model."""

    def __init__(self, world: World, genome, method: str):
        import torch
        import transformers

        from jaxmerge.params import to_hf_tensors
        torch.set_grad_enabled(False)
        self.genome, self.method = genome, method
        hf = {"base": world.base, **{f"m{i}": p for i, p in enumerate(world.sources)}}
        self.state_dicts = {k: {n: torch.from_numpy(np.ascontiguousarray(t))
                                for n, t in to_hf_tensors(world.spec, p).items()} for k, p in hf.items()}
        config = transformers.LlamaConfig(**world.spec.to_hf_config())
        self.model = transformers.LlamaForCausalLM(config).eval()
        arrays = world.prepared.arrays
        n = world.prepared.n
        self.tokens, self.mask, self.target = (torch.from_numpy(arrays[k][:n, 0].astype(np.int64))
                                               for k in ("tokens", "mask", "target"))
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)

    def parameters(self, raw) -> dict:
        genes = self.genome.decode(np.asarray(raw, np.float32))
        return {name: {f"m{i}": float(v[i, 0, 0]) for i in range(v.shape[0])} for name, v in genes.items()}

    def fitness(self, raw) -> float:
        from mergekit.merge_methods.api import merge_state_dicts
        merged = merge_state_dicts(self.state_dicts, self.method, parameters=self.parameters(raw), base="base")
        self.model.load_state_dict(merged)
        return self.score(self.model)

    def score(self, model) -> float:
        import torch
        logits = model(self.tokens, attention_mask=self.mask, position_ids=self.positions).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, self.tokens[:, 1:, None])[..., 0]
        weight = self.target[:, 1:].float()
        per_item = (logp * weight).sum(-1) / weight.sum(-1).clamp(min=1)
        return float(per_item.mean())


class OnDiskLoop(MergekitLoop):
    """mergekit-evolve's default path per candidate: `run_merge` writes the merged model to a directory, and
    transformers loads it from there (`from_pretrained`) to score it. Still without Ray or lm-eval's per-task
    setup, so it is a lower bound of that loop's cost."""

    def __init__(self, world: World, genome, method: str, work: Path):
        super().__init__(world, genome, method)
        import transformers

        from jaxmerge.io import Model, save
        transformers.utils.logging.disable_progress_bar()
        self.work = work
        self.paths = {}
        for name, params in {"base": world.base, **{f"m{i}": p for i, p in enumerate(world.sources)}}.items():
            self.paths[name] = str(save(Model(world.spec, params, None), work / name))

    def fitness(self, raw) -> float:
        import transformers
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
        values = self.parameters(raw)
        models = [{"model": self.paths[f"m{i}"], "parameters": {k: v[f"m{i}"] for k, v in values.items()}}
                  for i in range(len(self.paths) - 1)]
        config = MergeConfiguration.model_validate({"merge_method": self.method, "base_model": self.paths["base"],
                                                    "models": models, "dtype": "float32"})
        out = self.work / "candidate"
        run_merge(config, str(out), MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
        model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
        return self.score(model)


def fitness_agreement(world: World, raws: np.ndarray) -> float:
    """max |jaxmerge fitness - loop fitness| over `raws` with ties (deterministic: no random masks)."""
    import jax
    problem = problem_for(world, "ties", len(raws))
    ours = jax.jit(problem.space.candidate)
    loop = MergekitLoop(world, problem.genome, "ties")
    key = jax.random.PRNGKey(0)
    return max(abs(float(ours(raw, key, problem.space.data)) - loop.fitness(raw)) for raw in raws)


def measure(quick: bool = False, out=None) -> tuple[list[dict], str]:
    """(results.json rows, Markdown section). `out` (for plots) is unused here."""
    s = SETTINGS[quick]
    world = build_world(s["hidden"], s["layers"], s["vocab"], items=s["items"])
    problem = problem_for(world, "dare_ties", s["population"])
    first, steps, compiles = run_generations(problem, s["generations"])
    bare = bare_forward(world, s["population"], s["generations"])
    raws = np.random.default_rng(1).uniform(0, 1, (s["loop_candidates"] + 1, problem.genome.size)).astype(np.float32)
    loop = MergekitLoop(world, problem.genome, "dare_ties")
    it = iter(raws)
    per_candidate = repeat(lambda: loop.fitness(next(it)), s["loop_candidates"])
    with tempfile.TemporaryDirectory(prefix="jaxmerge-disk-loop-") as tmp:
        disk = OnDiskLoop(world, problem.genome, "dare_ties", Path(tmp))
        it = iter(raws)
        on_disk = repeat(lambda: disk.fitness(next(it)), s["loop_candidates"])
    agreement = fitness_agreement(world, raws[:2])
    ours_eps, loop_eps = s["population"] / steps.median, 1 / per_candidate.median
    results = [
        result("evolve: candidate evaluations/s (jaxmerge vs mergekit+transformers loop)", ours_eps, "evals/s",
               baseline=loop_eps, goal="ratio >= 20", noise=steps.noise,
               note=f"loop noise {per_candidate.noise:.2f}; fitness agreement (ties) {agreement:.1e}"),
        result("evolve: candidate evaluations/s (jaxmerge vs mergekit-evolve's on-disk loop)", ours_eps, "evals/s",
               baseline=1 / on_disk.median, noise=steps.noise,
               note=f"run_merge to disk + from_pretrained per candidate; noise {on_disk.noise:.2f}"),
        result("evolve: generation step / bare forward passes", steps.median, "s", baseline=bare.median,
               goal="ratio <= 1.5", noise=steps.noise, note=f"bare forward noise {bare.noise:.2f}"),
        result("evolve: first generation (compile + run)", first, "s", baseline=steps.median,
               note="cold: no persistent compilation cache"),
        result("evolve: recompilations after the first generation", compiles - 1, "compiles",
               goal="value == 0", note=f"{s['generations']} more generations"),
    ]
    return results, section(world, s, first, steps, bare, per_candidate, on_disk, agreement, compiles)


def section(world, s, first, steps, bare, per_candidate, on_disk, agreement, compiles) -> str:
    spec, n_params = world.spec, sum(x.size for x in __import__("jax").tree.leaves(world.base))
    ours, loop = s["population"] / steps.median, 1 / per_candidate.median
    return f"""Sources: random Llama base (hidden {spec.hidden_size}, {spec.num_layers} layers, vocab {spec.vocab_size},
{n_params / 1e6:.1f}M params, float32) + {len(world.sources)} fine-tunes (base + N(0, 0.01)). Task: {world.prepared.n}
items, teacher-forced log-likelihood, rows padded to {world.prepared.arrays['tokens'].shape[-1]} tokens. Genome:
dare_ties weight + density per model; CMA_ES, population {s['population']}. Medians over warm runs, with
spread = (max - min) / median.

| what | time | evaluations/s |
|---|---|---|
| jaxmerge generation step (ask, merge {s['population']}, score, tell) | {steps.text()} | {ours:.1f} |
| bare forward passes of the same population and batch | {bare.text()} | {s['population'] / bare.median:.1f} |
| loop: mergekit merge_state_dicts + transformers forward, per candidate | {per_candidate.text()} | {loop:.2f} |
| on-disk loop: mergekit run_merge to disk + from_pretrained + forward, per candidate | {on_disk.text()} | {1 / on_disk.median:.2f} |

Throughput ratio: {ours / loop:.1f}x over the in-memory loop (goal >= 20x), {ours * on_disk.median:.1f}x over the on-disk loop. Step / bare forward: {steps.median / bare.median:.2f}
(goal <= 1.5). First generation (cold compile + run): {first:.2f} s; compilations of the step after
{1 + s['generations']} generations: {compiles} (recompiles: {compiles - 1}, goal 0). The loop's fitness equals
jaxmerge's within {agreement:.1e} on ties (deterministic; dare_ties masks are random on both sides)."""


if __name__ == "__main__":
    module_main(measure, __doc__)
