"""Export a DFS winner as an ordinary Hugging Face model of the source family, plus path.json and a picture.

The folded stack (see fold.py) is a plain decoder: transformers loads it with no custom code, and a layer the path
uses twice is simply written twice. The whole directory (weights, config, tokenizer, path.json, plots/path.png)
is written through one `atomic_dir`, so a crash never leaves a half-exported winner.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxmerge.arch import SLIDING, ArchSpec
from jaxmerge.atomic import atomic_dir
from jaxmerge.dfs.fold import cumulative_scales, fold, used_steps
from jaxmerge.dfs.plot import draw_path
from jaxmerge.dfs.sources import pool_params
from jaxmerge.dfs.layout import DecodedPath, DFSLayout
from jaxmerge.dfs.path import pool_types
from jaxmerge.errors import expect
from jaxmerge.families import family_of
from jaxmerge.io import Model, save
from jaxmerge.params import Params

FORMAT = "jaxmerge-dfs-path/1"


def describe(layout: DFSLayout, names: Sequence[str | None], genes: dict, path: DecodedPath, eps: float,
             writers: Sequence[str] = ("o_proj", "down_proj")) -> dict:
    """The path.json record: the layout, the raw genes, and each step of the exported stack ("slot" T is the
    tail, A's last layer)."""
    cum = cumulative_scales(path)
    steps = []
    for k, step in enumerate(used_steps(path)):
        model, layer = layout.step_source(int(step))
        steps.append({"position": k, "slot": int(step), "model": model, "layer": layer,
                      "scale": float(np.asarray(path.scales)[step]), "cumulative_scale": float(cum[k])})
    return {
        "format": FORMAT, "models": list(names),
        "layer_counts": list(layout.layer_counts), "repeats": layout.repeats, "w_mode": layout.w_mode,
        "num_slots": layout.num_slots, "num_layers": len(steps), "path": steps,
        "genes": {k: np.asarray(v, np.float64).tolist() for k, v in genes.items()},
        "fold": {"rms_norm_eps": eps, "exact": bool(np.all(np.abs(cum) == 1.0)),
                 "note": f"scales folded into {'/'.join(writers)} (1/C) and norm gains (sign C); exact up to "
                         "RMSNorm eps, which acts as eps*C^2 on layers with |C| != 1"},
    }


def export_path(layout: DFSLayout, models: Sequence[Model], genes: dict, out_dir: str | os.PathLike, *,
                overwrite: bool = False, tokenizer_from: str | os.PathLike | None = None,
                max_shard_size: int | str = "5GB") -> Path:
    """Write the path the raw `genes` decode to as a HF model directory (A's family, one layer per step)."""
    names = [str(m.path) if m.path else None for m in models]
    return export_pool(layout, models[0].spec, pool_params(models), genes, out_dir, names=names,
                       tokenizer_from=tokenizer_from if tokenizer_from is not None else models[0].path,
                       overwrite=overwrite, max_shard_size=max_shard_size, types=pool_types([m.spec for m in models]))


def export_pool(layout: DFSLayout, spec_a: ArchSpec, pool: Params, genes: dict, out_dir: str | os.PathLike, *,
                names: Sequence[str | None], tokenizer_from: str | os.PathLike | None, overwrite: bool = False,
                max_shard_size: int | str = "5GB", types: Sequence[str] | None = None) -> Path:
    """`export_path` from an already built pool (host arrays, or global arrays of a one-process run)."""
    host, path = used_pool(pool, decoded_path(layout, genes, pool["embed"].dtype))
    return write_export(layout, spec_a, host, path, genes, out_dir, names=names, tokenizer_from=tokenizer_from,
                        overwrite=overwrite, max_shard_size=max_shard_size, types=types)


def exported_spec(layout: DFSLayout, spec_a: ArchSpec, path: DecodedPath, types: Sequence[str] | None) -> ArchSpec:
    """A's architecture with the used steps' layers, each keeping its pool row's attention type. A family whose
    config.json cannot give layers their own types (one window for all) gets a path that mixes them refused."""
    types = (spec_a.attention_types[0],) * layout.num_layers if types is None else tuple(types)
    used = tuple(types[int(r)] for r in np.asarray(layout.layers())[used_steps(path)])
    mixed = len(set(used)) > 1
    expect(not mixed or family_of(spec_a).layer_types_key,
           f"expected a path that {spec_a.model_type} can express (its config.json gives every layer the same "
           f"attention), found one mixing {used.count(SLIDING)} sliding and {len(used) - used.count(SLIDING)} "
           "full-attention layers")
    return spec_a.with_layers(used)


def decoded_path(layout: DFSLayout, genes: dict, dtype) -> DecodedPath:
    """The path the genes decode to, on the host, its scales in `dtype` (the scales the scored path used)."""
    path = jax.tree.map(np.asarray, jax.jit(layout.decode)(genes))
    return path._replace(scales=path.scales.astype(dtype))


def used_pool(pool: Params, path: DecodedPath) -> tuple[Params, DecodedPath]:
    """Host copies of A's globals and of only the pool rows the path uses, and the path re-indexed into them.
    With global arrays this is a collective (every process calls it) that brings each host the winner's layers,
    not every source's."""
    from jaxmerge.evolve.mesh import jax_to_numpy
    rows = np.unique(np.asarray(path.layer)[used_steps(path)])
    picked = {**pool, "pool": {leaf: x[rows] for leaf, x in pool["pool"].items()}}
    layer = np.minimum(np.searchsorted(rows, np.asarray(path.layer)), len(rows) - 1)  # unused steps: any row
    return jax_to_numpy(picked), path._replace(layer=layer.astype(np.asarray(path.layer).dtype))


def write_export(layout: DFSLayout, spec_a: ArchSpec, pool: Params, path: DecodedPath, genes: dict,
                 out_dir: str | os.PathLike, *, names: Sequence[str | None], tokenizer_from, overwrite: bool = False,
                 max_shard_size: int | str = "5GB", extra=None, types: Sequence[str] | None = None,
                 tower=None) -> Path:
    """Fold the host `pool` along `path` and write the model directory (one process); `extra(tmp)` writes more
    files into it (the model card) before it appears. `types`: the attention type of every pool row. `tower`:
    model A's vision tower (jaxmerge.vlm.checkpoint.Tower): the directory is then that VLM, its language model
    the folded path (text_config.num_hidden_layers = the path's length)."""
    spec = exported_spec(layout, spec_a, path, types)
    params = fold(pool, path, spec)
    model = Model(spec, params, None)
    writers = [w for w in family_of(spec_a).residual_writers if w in pool["pool"]]
    record = describe(layout, names, genes, path, spec_a.rms_norm_eps, writers)
    with atomic_dir(out_dir, overwrite) as tmp:
        if tower is None:
            save(model, tmp, tokenizer_from=tokenizer_from, max_shard_size=max_shard_size, overwrite=True)
        else:
            from jaxmerge.vlm.checkpoint import save_vlm
            save_vlm(tower, model, tmp, tokenizer_from=tokenizer_from, max_shard_size=max_shard_size, overwrite=True)
        (tmp / "path.json").write_text(json.dumps(record, indent=2))
        draw_path(record["path"], layout.layer_counts, tmp / "plots" / "path.png")
        if extra is not None:
            extra(tmp)
    return Path(out_dir)
