"""What a PS run leaves beside best.json and history.jsonl: model/ (the winner), recipe.yml (it, rebuildable),
plots/genes_*.png.

The winner is merged from its genes with its own merge key by the same code that scored it (so DARE/DELLA
masks included, the exported model is the scored one); model/ is written through `jaxmerge.io.save`'s atomic
directory and recipe.yml through a temporary name and a rename, so an interrupted export never leaves
something that looks finished.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from jaxmerge.atomic import atomic_write_text
from jaxmerge.card import write_card
from jaxmerge.distributed import is_primary
from jaxmerge.evolve.mesh import jax_to_numpy, on_one_device
from jaxmerge.evolve.records import card_sections
from jaxmerge.io import DTYPES
from jaxmerge.merge.stream import merge_state
from jaxmerge.merge.tokenspec import recipe_keys
from jaxmerge.ps.genome import GeneSpec
from jaxmerge.ps.recipe import recipe_text, to_recipe


REBUILD = """From this directory, `jaxmerge merge mergekit_config.yml OUT` writes these exact tensors (the first line
of the recipe carries the merge key of random methods such as DARE). For deterministic methods,
`mergekit-yaml mergekit_config.yml OUT` gives the same tensors up to float32 rounding."""


def make_export(cfg, method, genome: GeneSpec, dtype: str, facts: dict, tokenizer_dir, data, mesh, tower=None):
    """The space's export: (raw, key, out, record) -> what it adds to best.json. The winner is merged tensor by
    tensor by `jaxmerge merge`'s own kernel program from its hyper-parameters as arrays (on one device where
    the sources are replicated, see mesh.on_one_device), so `jaxmerge merge recipe.yml` on the same machine
    writes these bits; the scored candidate was the same merge inside the step's program, equal up to float
    rounding."""
    def export(raw, key, out: Path, record: dict) -> dict:
        hparams = genome.hparams(jax.numpy.asarray(raw))  # eager: the genome decodes the same bits as in a jit
        merged = merge_state(method, on_one_device(data, mesh)["merge"], hparams, jax.numpy.asarray(key, "uint32"),
                             np.dtype(DTYPES[dtype]), "float32")
        params = jax_to_numpy(merged)  # every process (a collective when the sources are split)
        if not is_primary():
            return {}
        genes = {name: np.asarray(v) for name, v in genome.decode(jax.numpy.asarray(raw)).items()}
        recipe = {**to_recipe(genome, genes, cfg.merge_method, facts["models"], cfg.base_model, dtype),
                  **recipe_keys(cfg.tokenizer)}
        text = recipe_text(recipe, key)
        card = functools.partial(write_card, sources=facts["models"], base=cfg.base_model, method=cfg.merge_method,
                                 recipe=recipe, recipe_text=text, sections=card_sections(record), tags=("evolved",),
                                 rebuild=REBUILD, name=out.absolute().name)
        write_winner(genome.spec, params, out, tokenizer_dir, card, tower)
        atomic_write_text(out / "recipe.yml", text)
        from jaxmerge.ps.plots import plot_genes
        plot_genes(out / "plots", genome, record["genes"], facts["models"])
        return {"recipe": "recipe.yml"}
    return export


def write_winner(spec, params, out: Path, tokenizer_dir, card, tower=None) -> None:
    """model/: the merged model, or with a VLM's `tower` that VLM with the merged language model."""
    from jaxmerge.io import Model, save
    if tower is not None:
        from jaxmerge.vlm.checkpoint import save_vlm
        save_vlm(tower, Model(spec, params, None), out / "model", tokenizer_from=tokenizer_dir, overwrite=True,
                 extra=card)
        return
    save(Model(spec, params, None), out / "model", tokenizer_from=tokenizer_dir, overwrite=True, extra=card)
