"""What a PS run leaves beside best.json and history.jsonl: model/ (the winner), recipe.yml (it, rebuildable),
plots/genes_*.png.

The winner is merged from its genes with its own merge key by the same code that scored it (so DARE/DELLA
masks included, the exported model is the scored one); model/ is written through `jaxmerge.io.save`'s atomic
directory and recipe.yml through a temporary name and a rename, so an interrupted export never leaves
something that looks finished.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxmerge.atomic import atomic_write_text
from jaxmerge.distributed import is_primary
from jaxmerge.evolve.mesh import jax_to_numpy
from jaxmerge.ps.genome import GeneSpec
from jaxmerge.ps.recipe import recipe_text, to_recipe


def make_export(cfg, genome: GeneSpec, winner_params, dtype: str, facts: dict, tokenizer_dir, data):
    """The space's export: (raw, key, out, record) -> what it adds to best.json. `winner_params(raw, key, data)`
    is the space's own candidate merge (pure), jitted here."""
    merge = jax.jit(winner_params)

    def export(raw, key, out: Path, record: dict) -> dict:
        params = jax_to_numpy(merge(raw, key, data))  # every process: a collective gather
        if not is_primary():
            return {}
        genes = {name: np.asarray(v) for name, v in genome.decode(jax.numpy.asarray(raw)).items()}
        recipe = to_recipe(genome, genes, cfg.merge_method, facts["models"], cfg.base_model, dtype)
        write_winner(genome.spec, params, out, tokenizer_dir)
        atomic_write_text(out / "recipe.yml", recipe_text(recipe, key))
        from jaxmerge.ps.plots import plot_genes
        plot_genes(out / "plots", genome, record["genes"], facts["models"])
        return {"recipe": "recipe.yml"}
    return export


def write_winner(spec, params, out: Path, tokenizer_dir) -> None:
    from jaxmerge.io import Model, save
    save(Model(spec, params, None), out / "model", tokenizer_from=tokenizer_dir, overwrite=True)
