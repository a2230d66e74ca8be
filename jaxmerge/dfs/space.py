"""The data-flow-space search (the paper's DFS, `mode: dfs`): a `SearchSpace` over layer paths.

    mode: dfs                 # models: [A, B, ...] (A gives embeddings, final norm and head)
    dfs: {repeats: 3, w_mode: matrix}

`DFSGenome` is the flat view of a `DFSLayout`'s genes (indicator, then scales). Scoring goes through the fitness
package with the DFS `Decoder`, so generation and teacher-forced scores of a path are the same code as for a
plain model. The pool of source layers is the step's `data`, never a constant baked into it. The starting point
is model A itself (its own layers in order, scale 1), and the baselines are every source model alone.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from jaxmerge.atomic import atomic_write_text
from jaxmerge.card import write_card
from jaxmerge.config import EvolveConfig
from jaxmerge.merge.reconcile import EVOLVE_HINT, check_sources
from jaxmerge.dfs.decoder import DFS_DECODER
from jaxmerge.dfs.export import decoded_path, used_pool, write_export
from jaxmerge.dfs.layout import DFSLayout
from jaxmerge.dfs.path import path_spec, pool_types, with_path
from jaxmerge.dfs.recipe import NO_RECIPE, passthrough_recipe
from jaxmerge.dfs.sources import pool_layout
from jaxmerge.distributed import is_primary
from jaxmerge.errors import expect
from jaxmerge.evolve.records import card_sections
from jaxmerge.evolve.sliced import load_table, open_checkpoint
from jaxmerge.evolve.space import SearchSpace
from jaxmerge.fitness.suite import prepare_tasks, weighted_fitness

REBUILD = """From this directory, `jaxmerge merge mergekit_config.yml OUT` writes these exact tensors: the path as a
passthrough of its layers, the path's scales folded into o_proj / down_proj and the norm gains (path.json lists
the steps). `mergekit-yaml mergekit_config.yml OUT` gives the same tensors up to float32 rounding."""
VLM_REBUILD = """No recipe rebuilds this VLM path: the vision tower and projector are A's, unchanged, and the language
model is the path's layers with its scales folded (path.json lists the steps)."""
MAX_STEPS = 4096  # path steps (T + 1): beyond this the compiled path forward itself becomes the bomb


@dataclasses.dataclass(frozen=True)
class DFSGenome:
    """A DFSLayout's genes as one flat vector: the indicator [T], then the scales (matrix or per step)."""
    layout: DFSLayout

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.layout.gene_template().items()}

    @property
    def size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes.values())

    def genes(self, raw: jax.Array) -> dict[str, jax.Array]:
        """Flat raw vector -> the layout's gene pytree (static slices: pure, jittable)."""
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[name], offset = raw[offset:offset + n].reshape(shape), offset + n
        return out

    def initial_raw(self) -> jax.Array:
        return jnp.concatenate([v.ravel() for v in self.layout.initial_genes().values()])

    def describe(self, raw) -> dict[str, list]:
        return {k: np.asarray(v).tolist() for k, v in self.genes(jnp.asarray(raw)).items()}


def layout_of(cfg: EvolveConfig, models) -> DFSLayout:
    check_sources({str(m.path): m for m in models}, False, EVOLVE_HINT, same_depth=False)
    layout = DFSLayout(tuple(m.spec.num_layers for m in models), cfg.dfs.repeats, cfg.dfs.w_mode)
    expect(layout.num_steps <= MAX_STEPS, f"expected a DFS layout of at most {MAX_STEPS} steps, found "
                                          f"{layout.num_steps} ({layout.num_layers} layers x {layout.repeats} repeats)")
    return layout


def path_params(genome: DFSGenome, raw: jax.Array, data: dict) -> dict:
    """A candidate's path params: pure, the same code scores and exports."""
    return with_path(data["pool"], genome.layout.decode(genome.genes(raw)))


def build(cfg: EvolveConfig, mesh, models: tuple[str, ...]) -> SearchSpace:
    """The DFS search space over `models` (A first: cfg.models, or a hybrid's PS winner and its sources); the
    pool is loaded sliced onto `mesh`."""
    models = [open_checkpoint(m) for m in models]
    genome = DFSGenome(layout_of(cfg, models))
    spec_a, dtype = cfg.memory.with_attention(models[0].spec), cfg.dtype or models[0].dtype
    tower = vlm_tower(models, dtype)
    f = cfg.fitness
    tasks = prepare_tasks(f.tasks, models[0].path, allow_test=f.allow_test_split, item_batch=f.item_batch,
                          seed=cfg.search.seed, objectives=cfg.search.objectives, tower=tower)
    types = pool_types([m.spec for m in models])
    fit = weighted_fitness(path_spec(spec_a, genome.layout, types), tasks, DFS_DECODER)
    data = {"pool": load_table(pool_layout([m.table for m in models]), spec_a, mesh, dtype)}
    plain = {}

    def baselines():
        return [(str(m.path), plain.setdefault(m.spec, weighted_fitness(cfg.memory.with_attention(m.spec), tasks)),
                 lambda m=m: load_table(m.table, m.spec, mesh, dtype)) for m in models]
    names = [str(m.path) for m in models]
    facts = {"dtype": dtype, "models": names, "tasks": tasks.describe(),
             **({"objectives": tasks.objective_names()} if tasks.objectives else {}),
             "layout": {"layer_counts": list(genome.layout.layer_counts), "repeats": genome.layout.repeats,
                        "w_mode": genome.layout.w_mode}}
    return SearchSpace("dfs", genome.size, np.asarray(genome.initial_raw()), data,
                       lambda raw, key, d: fit(path_params(genome, raw, d)), baselines, genome.describe,
                       make_export(genome, spec_a, names, dtype, data, types, tower), facts)


def vlm_first(paths) -> bool:
    """Whether model A (paths[0]) is a VLM. The path runs A's embeddings and head, so the image features enter
    where A's own language model reads them; other VLMs among the sources (a hybrid's original VLM beside its PS
    winner) give only their language-model layers. A text A with a VLM among the others is refused: its export
    would drop the vision tower."""
    from jaxmerge.vlm.view import is_vlm_dir
    vlms = [str(p) for p in paths if p is not None and is_vlm_dir(p)]
    first = paths[0] is not None and is_vlm_dir(paths[0])
    expect(first or not vlms, f"expected the vision-language model as model A (models[0]) of evolve mode dfs (A "
                              f"gives the embeddings, head and the exported VLM), found text model "
                              f"{paths[0]} first and the VLM {vlms[0] if vlms else ''} after it")
    return first


def vlm_tower(models, dtype: str):
    """Model A's vision tower and projector when A is a VLM (None: A is a text model; see vlm_first)."""
    from jaxmerge.vlm.checkpoint import load_tower
    return load_tower(models[0].path, dtype) if vlm_first([m.path for m in models]) else None


def make_export(genome: DFSGenome, spec_a, names: list[str], dtype: str, data: dict, types: tuple[str, ...],
                tower=None):
    """DIR/model (a plain HF model, or with A's VLM `tower` that VLM with the path as its language model, with
    path.json and plots/path.png) and recipe.yml (its passthrough recipe; none for a VLM, which mergekit's
    passthrough of the text layers cannot rebuild with the tower). Every process gathers the layers the winner
    uses (a collective); only process 0 writes."""
    def export(raw, key, out: Path, record: dict) -> dict:
        genes = genome.genes(jnp.asarray(raw))
        pool, path = used_pool(data["pool"], decoded_path(genome.layout, genes, data["pool"]["embed"].dtype))
        if not is_primary():
            return {}
        recipe = None if tower is not None else passthrough_recipe(genome.layout, path, names, dtype, spec_a)
        text = None if recipe is None else yaml.safe_dump(recipe, sort_keys=False)
        rebuild = REBUILD if recipe is not None else (VLM_REBUILD if tower is not None else
                                                      f"No recipe rebuilds this {spec_a.model_type} path: {NO_RECIPE}.")
        card = functools.partial(write_card, sources=names, base=None, method="passthrough (a DFS layer path)",
                                 recipe=recipe, recipe_text=text, sections=card_sections(record), rebuild=rebuild,
                                 tags=("evolved", "dfs"), name=out.absolute().name)
        write_export(genome.layout, spec_a, pool, path, genes, out / "model", names=names, tokenizer_from=names[0],
                     overwrite=True, extra=card, types=types, tower=tower)
        if text is None:
            (out / "recipe.yml").unlink(missing_ok=True)  # a resumed run's earlier winner may have had one
        else:
            atomic_write_text(out / "recipe.yml", text)
        return {"path": json.loads((out / "model" / "path.json").read_text())["path"],
                "recipe": None if text is None else "recipe.yml"}
    return export
