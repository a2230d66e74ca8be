"""From a run config to the pieces of a search: sources, merge method and its state, genome, fitness.

Everything here runs once. The result, `Problem`, splits cleanly into static parts (method, genome, fitness
closures: hashable or closed over small constants) and `data` (the big arrays: the merge state of the sources),
which the jitted step takes as an argument. `data` is born on the run's mesh: the sources are loaded sliced
(jaxmerge.evolve.sliced, each process reading only what its devices hold) and the merge state is computed there.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.evolve.config import EvolveConfig
from jaxmerge.evolve.genome import Gene, GeneSpec
from jaxmerge.evolve.mesh import data_shardings
from jaxmerge.evolve.sliced import Checkpoint, load_table, open_checkpoint, run_mesh
from jaxmerge.io import DTYPES
from jaxmerge.params import stack


class Problem(NamedTuple):
    config: EvolveConfig
    spec: Any                 # ArchSpec of the sources (and of the merged model)
    method: Any               # MergeMethod
    genome: GeneSpec
    data: dict                # {"merge": merge state}: arrays passed to the jitted step
    fitness: Callable         # params -> f32 scalar (weighted sum over tasks), higher is better
    task_fitness: tuple       # per task: params -> f32 (for reporting)
    tokenizer_dir: Any        # where the exported model's tokenizer comes from
    names: tuple[str, ...]


def open_sources(cfg: EvolveConfig) -> tuple[list[Checkpoint], Checkpoint | None]:
    """Every source (and the base) checked from its headers; refuse models whose architecture differs."""
    models = [open_checkpoint(m) for m in cfg.models]
    base = open_checkpoint(cfg.base_model) if cfg.base_model else None
    first = models[0]
    for other in models[1:] + ([base] if base else []):
        _same_shape(first, other)
    return models, base


def load_sources(models: list[Checkpoint], base: Checkpoint | None, mesh, dtype: str = "float32"):
    """`Sources` as global arrays on `mesh`, each process reading only the slices its devices hold."""
    from jaxmerge.merge import Sources
    spec = models[0].spec
    stacked = load_table(stack([m.table for m in models]), spec, mesh, dtype)
    base_params = load_table(base.table, spec, mesh, dtype) if base else None
    return Sources(spec, base_params, stacked, tuple(str(m.path) for m in models))


def merge_state(method, sources, mesh) -> dict:
    """`init_state` run on the mesh, its outputs laid out as the step's data (`data_shardings`)."""
    from jaxmerge.merge import init_state

    def init(base, models):
        return init_state(method, sources._replace(base=base, models=models))
    shapes = jax.eval_shape(init, sources.base, sources.models)
    shardings = data_shardings(mesh, {"merge": shapes})["merge"]
    return jax.jit(init, out_shardings=shardings)(sources.base, sources.models)


def _same_shape(a: Checkpoint, b: Checkpoint) -> None:
    fields = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
              "num_kv_heads", "head_dim", "tie_word_embeddings", "qkv_bias", "o_bias", "qk_norm")
    for f in fields:
        expect(getattr(a.spec, f) == getattr(b.spec, f),
               f"expected every model to share {f} = {getattr(a.spec, f)!r} (from {a.path}), "
               f"found {getattr(b.spec, f)!r} in {b.path}")


def build_genome(cfg: EvolveConfig, method, spec, num_models: int) -> GeneSpec:
    from jaxmerge.merge.methods import REQUIRED, defaults
    known = (*method.model_hparams, *method.global_hparams)
    for name in (*cfg.evolve, *cfg.parameters):
        expect(name in known, f"expected hyper-parameters of {cfg.merge_method} in {list(known)}, found {name!r}")
    genes = tuple(Gene(n, n in method.model_hparams, p.init, p.lo, p.hi) for n, p in cfg.evolve.items())
    fixed = []
    for name, default in defaults(cfg.merge_method).items():
        if name in cfg.evolve:
            continue
        value = cfg.parameters.get(name, default)
        expect(value is not REQUIRED, f"expected {name} of {cfg.merge_method} under 'evolve' or 'parameters', "
                                      "found neither")
        expect(isinstance(value, (int, float)), f"expected a number for parameters.{name}, found {value!r}")
        fixed.append((name, float(value), name in method.model_hparams))
    return GeneSpec(spec, num_models, genes, cfg.layers_per_group, cfg.param_groups, tuple(fixed))


def build_fitness(cfg: EvolveConfig, spec, tokenizer_dir, decoder=None) -> tuple[Callable, tuple]:
    """Weighted mean of the tasks' fitness functions (each pure; text metrics call back to the host).
    `decoder` runs the candidates' params (default: the plain decoder; DFS passes its layer-path decoder)."""
    from jaxmerge.fitness import Decoder, load_items, load_task, load_tokenizer, make_fitness, prepare
    tokenizer = load_tokenizer(tokenizer_dir)
    parts = []
    for ref in cfg.tasks:
        task = load_task(ref.task)
        items = load_items(task, ref.split, allow_test=cfg.allow_test_split)
        items = fixed_subset(items, ref.subset, cfg.seed)
        pool = load_items(task, task.fewshot_split) if task.fewshot else None
        prepared = prepare(task, items, tokenizer, fewshot_pool=pool, item_batch=min(cfg.item_batch, len(items)))
        fit = make_fitness(spec, prepared, tokenizer, decoder=decoder or Decoder())
        parts.append((ref.weight, fit.fitness))
    total = sum(w for w, _ in parts)

    def fitness(params):
        return sum(w * f(params) for w, f in parts) / total

    return fitness, tuple(f for _, f in parts)


def fixed_subset(items: list, n: int, seed: int) -> list:
    """A fixed uniform subset of n items shared by every candidate of every generation (0: all items)."""
    from jaxmerge.fitness.subset import random_subset, subset_items
    if n <= 0 or n >= len(items):
        return items
    return subset_items(items, random_subset(len(items), n, seed))


def build_problem(cfg: EvolveConfig, mesh=None) -> Problem:
    """The PS problem, its merge state computed on `mesh` (default: the config's) from sources loaded sliced."""
    from jaxmerge.merge import METHODS
    if cfg.merge_method not in METHODS or cfg.merge_method == "passthrough":
        raise JaxmergeError(f"expected an evolvable merge_method in {sorted(set(METHODS) - {'passthrough'})}, "
                            f"found {cfg.merge_method!r}")
    expect(cfg.dtype in DTYPES, f"expected dtype in {sorted(DTYPES)}, found {cfg.dtype!r}")
    method = METHODS[cfg.merge_method]
    expect(not method.needs_base or cfg.base_model, f"expected base_model: {cfg.merge_method} merges task vectors "
                                                    "against a base, found none")
    models, base = open_sources(cfg)
    spec = models[0].spec
    mesh = mesh if mesh is not None else run_mesh(cfg, spec)
    state = merge_state(method, load_sources(models, base, mesh), mesh)
    genome = build_genome(cfg, method, spec, len(models))
    tokenizer_dir = (base or models[0]).path
    fitness, parts, cfg = memory_mode_fitness(cfg, spec, method, state, tokenizer_dir)
    return Problem(cfg, spec, method, genome, {"merge": state}, fitness, parts, tokenizer_dir, tuple(cfg.models))


def memory_mode_fitness(cfg: EvolveConfig, spec, method, state, tokenizer_dir):
    """(fitness, per-task fitness, cfg with memory.mode resolved): fused fitness takes a candidate's recipe
    (see jaxmerge.evolve.fused), materialized fitness its merged params."""
    import dataclasses

    from jaxmerge.evolve.fused import FusedSpec, choose_mode, fused_decoder, tree_bytes
    mode = choose_mode(cfg.memory_mode, spec, tree_bytes(state), cfg.batch_size or cfg.population)
    cfg = dataclasses.replace(cfg, memory_mode=mode)
    if mode == "fused":
        return (*build_fitness(cfg, FusedSpec(spec, method, cfg.dtype), tokenizer_dir, fused_decoder()), cfg)
    return (*build_fitness(cfg, spec, tokenizer_dir), cfg)


def candidate_params(problem: Problem, raw: jax.Array, key: jax.Array, data: dict) -> dict:
    """The merged model of one candidate: genes -> hparams -> merge. Pure; the same code scores and exports."""
    from jaxmerge.merge import merge_params
    hparams = problem.genome.hparams(raw)
    return merge_params(problem.method, data["merge"], hparams, key, jnp.dtype(DTYPES[problem.config.dtype]))


def candidate_fitness(problem: Problem) -> Callable:
    if problem.config.memory_mode == "fused":
        from jaxmerge.evolve.fused import recipe
        return lambda raw, key, data: problem.fitness(recipe(data["merge"], problem.genome.hparams(raw), key))

    def fitness(raw, key, data):
        return problem.fitness(candidate_params(problem, raw, key, data))
    return fitness
