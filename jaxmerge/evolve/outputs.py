"""What a finished run leaves in DIR: model/, recipe.yml, best.json, history.jsonl, plots/.

Every file goes through a temporary name and a rename, and model/ through `jaxmerge.io.save`'s atomic
directory, so an interrupted export never leaves something that looks finished.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from jaxmerge.atomic import atomic_write_text
from jaxmerge.distributed import is_primary
from jaxmerge.evolve.genome import GeneSpec
from jaxmerge.params import GROUPS

# mergekit filters that select each parameter group; the first that matches a tensor name wins, and norms are
# the default (q_norm / k_norm sit inside self_attn, so they fall in the attention group, as in jaxmerge).
GROUP_FILTERS = (("attn", "self_attn"), ("mlp", "mlp"), ("embed", "embed_tokens"), ("embed", "lm_head"))


def per_layer_values(genome: GeneSpec, cells: np.ndarray) -> np.ndarray:
    """[G, C] cells -> [L, C] values, one row per layer."""
    k = genome.layers_per_group if genome.layers_per_group > 0 else genome.spec.num_layers
    return cells[np.arange(genome.spec.num_layers) // k]


def recipe_value(genome: GeneSpec, cells: np.ndarray):
    """A mergekit parameter value meaning exactly these cells: a number, a gradient list of one value per
    layer (mergekit interpolates a list of L values over L layers at its nodes, i.e. exactly), and filters per
    parameter group. Embeddings / final norm / lm_head take depth t = 0 in mergekit, as in our genome."""
    values = per_layer_values(genome, np.asarray(cells, np.float64))

    def column(c):
        col = [round(float(v), 6) for v in values[:, c]]
        return col[0] if len(set(col)) == 1 else col

    if not genome.param_groups:
        return column(0)
    filters = [{"filter": f, "value": column(GROUPS.index(g))} for g, f in GROUP_FILTERS]
    return filters + [{"value": column(GROUPS.index("norm"))}]


def to_recipe(problem, genes: dict) -> dict:
    """The winner as a mergekit recipe (hyper-parameters exactly; DARE/DELLA masks come from our key)."""
    cfg, genome = problem.config, problem.genome
    fixed = {name: value for name, value, _ in genome.fixed}
    per_model = [g.name for g in genome.genes if g.per_model] + [n for n, _, pm in genome.fixed if pm]
    models = []
    for m, name in enumerate(cfg.models):
        params = {}
        for h in per_model:
            params[h] = recipe_value(genome, np.asarray(genes[h])[m]) if h in genes else fixed[h]
        models.append({"model": name, "parameters": params})
    shared = {g.name: recipe_value(genome, np.asarray(genes[g.name])) for g in genome.genes if not g.per_model}
    shared.update({n: v for n, v, pm in genome.fixed if not pm})
    recipe = {"merge_method": cfg.merge_method, "models": models, "dtype": cfg.dtype}
    if cfg.base_model:
        recipe["base_model"] = cfg.base_model
    if shared:
        recipe["parameters"] = shared
    return recipe


def write_outputs(problem, state, history: list[dict], out: Path) -> dict:
    """Called by every process: the winner is merged on the mesh by all of them; only process 0 writes."""
    from jaxmerge.evolve.run import secondary_result, winner_params
    from jaxmerge.io import Model, save
    params = jax_to_numpy(winner_params(problem, state))
    if not is_primary():
        return secondary_result(state)
    genome = problem.genome
    genes = genome.describe(state.best_raw)
    best = {"fitness": float(state.best_fitness), "generation": int(state.best_generation),
            "genes": genes, "raw": np.asarray(state.best_raw).tolist(),
            "merge_key": np.asarray(state.best_key).tolist(), "evaluations": int(state.evaluations),
            "nonfinite": int(state.nonfinite), "models": list(problem.names)}
    save(Model(problem.spec, params, None), out / "model", tokenizer_from=problem.tokenizer_dir, overwrite=True)
    atomic_write_text(out / "recipe.yml", yaml.safe_dump(to_recipe(problem, genes), sort_keys=False))
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    atomic_write_text(out / "best.json", json.dumps(best, indent=2))
    from jaxmerge.evolve.plots import plot_run
    plot_run(out / "plots", history, genome, genes, problem.names)
    return best


def jax_to_numpy(tree):
    """Host copies of (possibly multi-process) global arrays: a collective, every process must call it."""
    import jax
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)
    return jax.tree.map(one, tree)
