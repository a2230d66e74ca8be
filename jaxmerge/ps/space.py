"""The parameter-space search (the paper's PS): a `SearchSpace` over a merge method's hyper-parameters.

Built once from a run config: the sources are opened from their headers, loaded sliced onto the run's mesh
(jaxmerge.evolve.sliced: each process reads only what its devices hold) and turned into the merge state (task
vectors, sorted |delta|), which is the step's `data`; the genome maps raw genes to per-tensor hyper-parameters;
a candidate is `fitness(merge(state, hparams(raw), key))` (materialize) or the fused per-layer merge. The
sources themselves are not kept: for the baselines each is loaded again, scored and dropped.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.config import EvolveConfig
from jaxmerge.evolve.mesh import data_shardings
from jaxmerge.evolve.sliced import Checkpoint, load_table, open_checkpoint
from jaxmerge.evolve.space import SearchSpace
from jaxmerge.fitness.suite import TaskSet, prepare_tasks, weighted_fitness
from jaxmerge.io import DTYPES
from jaxmerge.merge.reconcile import EVOLVE_HINT, check_sources
from jaxmerge.params import stack
from jaxmerge.ps.genome import Gene, GeneSpec
from jaxmerge.ps.vocab import align_sources


def open_sources(cfg: EvolveConfig) -> tuple[list[Checkpoint], Checkpoint | None]:
    """Every source (and the base) checked from its headers; refuse models whose architecture differs."""
    models = [open_checkpoint(m) for m in cfg.models]
    base = open_checkpoint(cfg.base_model) if cfg.base_model else None
    check_sources({str(c.path): c for c in models + ([base] if base else [])}, cfg.tokenizer is not None,
                  EVOLVE_HINT)
    return models, base


def load_sources(models: list[Checkpoint], base: Checkpoint | None, mesh, dtype: str, aligned=None):
    """`Sources` as global arrays on `mesh`, each process reading only the slices its devices hold; with
    `aligned` (jaxmerge.ps.vocab), embed / lm_head are the aligned float32 tables instead."""
    from jaxmerge.merge import Sources
    spec = models[0].spec if aligned is None else models[0].spec.replace(vocab_size=aligned.vocab.size)
    base_params = load_params([base], mesh, dtype, aligned) if base else None
    return Sources(spec, base_params, load_params(models, mesh, dtype, aligned, stacked=True),
                   tuple(str(m.path) for m in models))


def load_params(ckpts: list[Checkpoint], mesh, dtype: str, aligned=None, stacked: bool = False,
                rows_dtype=np.float32) -> dict:
    """The params of `ckpts` (stacked over them, or the one's) on `mesh`; with `aligned`, embed / lm_head are its
    tables in `rows_dtype` instead of the checkpoints' own rows."""
    tables = [c.table if aligned is None else _rowless(c) for c in ckpts]
    params = load_table(stack(tables) if stacked else tables[0], ckpts[0].spec, mesh, dtype)
    if aligned is None:
        return params
    rows = [{k: v.astype(rows_dtype) for k, v in aligned.tables[str(c.path)].items()} for c in ckpts]
    return _with_rows(params, rows, mesh, stacked)


def _rowless(ckpt: Checkpoint) -> dict:
    return {k: v for k, v in ckpt.table.items() if k not in ("embed", "lm_head")}


def _with_rows(params: dict, tables: list[dict], mesh, stacked: bool) -> dict:
    """`params` plus the aligned row leaves, placed on `mesh` as the rules table lays them out."""
    from jax.sharding import NamedSharding
    from jaxmerge.evolve.mesh import tensor_spec
    out = dict(params)
    for leaf in tables[0]:
        host = np.stack([t[leaf] for t in tables]) if stacked else tables[0][leaf]
        sharding = NamedSharding(mesh, tensor_spec(mesh, leaf, host.shape))
        out[leaf] = jax.make_array_from_callback(host.shape, sharding, lambda index, host=host: host[index])
    return out


def merge_state(method, sources, mesh) -> dict:
    """`init_state` run on the mesh, its outputs laid out as the step's data (`data_shardings`)."""
    from jaxmerge.merge import init_state

    def init(base, models):
        return init_state(method, sources._replace(base=base, models=models))
    shapes = jax.eval_shape(init, sources.base, sources.models)
    shardings = data_shardings(mesh, {"merge": shapes})["merge"]
    return jax.jit(init, out_shardings=shardings)(sources.base, sources.models)


def evolvable_method(cfg: EvolveConfig):
    from jaxmerge.merge import METHODS
    # evolvable: a method with a continuous hyper-parameter (arcee_fusion has none); passthrough stacks layers
    names = sorted(n for n, m in METHODS.items()
                   if n != "passthrough" and any(h.evolvable and h.role == "merge" for h in m.hparams))
    if cfg.merge_method not in names:
        raise JaxmergeError(f"expected an evolvable merge_method in {names}, found {cfg.merge_method!r}")
    method = METHODS[cfg.merge_method]
    expect(not method.needs_base or cfg.base_model, f"expected base_model: {cfg.merge_method} merges task vectors "
                                                    "against a base, found none")
    expect(method.base != "none" or not cfg.base_model, f"expected no base_model for {cfg.merge_method} (it merges "
                                                        f"the models themselves), found {cfg.base_model}")
    return method


def build_genome(cfg: EvolveConfig, method, spec, num_models: int) -> GeneSpec:
    """Evolved genes and fixed values from the config, checked by the method's own table (the one rule
    `jaxmerge merge` applies to recipes: kinds, ranges, evolvability)."""
    from jaxmerge.merge.methods import REQUIRED, check_bounds, check_value, hparam
    genes = []
    for name, p in cfg.evolve.items():
        lo, hi = check_bounds(method, name, p.lo, p.hi, f"evolve.{name}.bounds")
        genes.append(Gene(name, hparam(method, name).per_model, p.init, lo, hi))
    for name in cfg.parameters:
        hparam(method, name, f"parameters.{name}")  # an unknown name is refused here
    fixed = []
    for name in (n for n in (*method.model_hparams, *method.global_hparams) if n not in cfg.evolve):
        value = cfg.parameters.get(name, hparam(method, name).default)
        expect(value is not REQUIRED, f"expected {name} of {cfg.merge_method} under 'evolve' or 'parameters', "
                                      "found neither")
        fixed.append((name, check_value(method, name, value, f"parameters.{name}"), hparam(method, name).per_model))
    g = cfg.granularity
    return GeneSpec(spec, num_models, tuple(genes), g.layers_per_group, g.param_groups, tuple(fixed))


def candidate_params(method, genome: GeneSpec, dtype: str, raw, key, data) -> dict:
    """The merged model of one candidate: genes -> hparams -> merge. Pure; the same code scores and exports."""
    from jaxmerge.merge import merge_params
    return merge_params(method, data["merge"], genome.hparams(raw), key, jnp.dtype(DTYPES[dtype]))


def candidate_fitness(method, genome: GeneSpec, dtype: str, tasks: TaskSet, mode: str) -> Callable:
    """(raw, key, data) -> f32 in the resolved memory mode: fused fitness takes the candidate unmerged (see
    jaxmerge.ps.fused), materialized fitness its merged params."""
    from jaxmerge.ps.fused import FusedSpec, fused_decoder, unmerged
    if mode == "fused":
        fit = weighted_fitness(FusedSpec(genome.spec, method, dtype), tasks, fused_decoder())
        return lambda raw, key, data: fit(unmerged(data["merge"], genome.hparams(raw), key))
    fit = weighted_fitness(genome.spec, tasks)
    return lambda raw, key, data: fit(candidate_params(method, genome, dtype, raw, key, data))


def build(cfg: EvolveConfig, mesh) -> SearchSpace:
    """The PS search space of `cfg` on `mesh`: merge state computed there from sources loaded sliced."""
    from jaxmerge.ps.export import make_export
    from jaxmerge.ps.fused import choose_mode, tree_bytes
    from jaxmerge.vlm.checkpoint import the_tower
    method = evolvable_method(cfg)
    models, base = open_sources(cfg)
    dtype = cfg.dtype or models[0].dtype
    tower = the_tower({str(m.path): m.path for m in models + [base] if m is not None}, dtype)  # a VLM: VLM out
    expect(tower is None or cfg.tokenizer is None, "tokenizer_source / tokenizer: expected text models only, found "
                                                   "a VLM among the sources (its vocabulary is not aligned)")
    aligned = None if cfg.tokenizer is None else align_sources(cfg.tokenizer, models, base)
    sources = load_sources(models, base, mesh, dtype, aligned)
    spec = cfg.memory.with_attention(sources.spec)
    state = merge_state(method, sources, mesh)
    del sources
    genome = build_genome(cfg, method, spec, len(models))
    tokenizer_dir = aligned.tokenizer_dir if aligned else tower.path if tower else (base or models[0]).path
    f = cfg.fitness
    tasks = prepare_tasks(f.tasks, tokenizer_dir, allow_test=f.allow_test_split, item_batch=f.item_batch,
                          seed=cfg.search.seed, objectives=cfg.search.objectives, tower=tower)
    mode = choose_mode(cfg.memory.mode, spec, tree_bytes(state), cfg.memory.batch_size or cfg.search.population)
    if tasks.image_token is not None and cfg.memory.mode == "auto":
        mode = "materialize"  # image tasks splice features into a merged model's embeddings
    plain = weighted_fitness(spec, tasks)

    def baselines():
        return [(str(m.path), plain, lambda m=m: load_params([m], mesh, dtype, aligned, rows_dtype=DTYPES[dtype]))
                for m in models + [base] if m is not None]
    facts = {"merge_method": cfg.merge_method, "memory_mode": mode, "dtype": dtype,
             "models": [str(m.path) for m in models], "tasks": tasks.describe(),
             **({"objectives": tasks.objective_names()} if tasks.objectives else {})}
    data = {"merge": state}
    export = make_export(cfg, method, genome, dtype, facts, tokenizer_dir, data, mesh, tower)
    return SearchSpace("ps", genome.size, np.asarray(genome.initial_raw()), data,
                       candidate_fitness(method, genome, dtype, tasks, mode), baselines, genome.describe, export,
                       facts)
