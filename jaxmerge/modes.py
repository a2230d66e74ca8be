"""`jaxmerge evolve`: a run config's mode -> its search space(s) -> the engine. The one place that names them.

    ps      the parameter space (jaxmerge.ps): a merge method's hyper-parameters
    dfs     the data-flow space (jaxmerge.dfs): layer paths through the models
    hybrid  PS in DIR/ps, then DFS in DIR/dfs with model A = the PS winner and the PS sources as B, C, ...;
            DIR/model, DIR/recipe.yml and DIR/best.json are the final winner's (the DFS stage's, which starts
            from the PS winner and so never ends below it)

Here, above the engine and both spaces, the run's resolved settings are made (the mesh, built once per process;
each stage's search settings) and the run's identity, which `--resume` checks: a hash of the config without its
generation counts (so a finished run can be extended) and of its inputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path

from jaxmerge.atomic import atomic_dir, atomic_write_text
from jaxmerge.config import EvolveConfig
from jaxmerge.distributed import is_primary
from jaxmerge.evolve.engine import run_search
from jaxmerge.evolve.mesh import build_mesh
from jaxmerge.evolve.sliced import open_checkpoint
from jaxmerge.evolve.space import RunSettings, Search


def builders() -> dict:
    """mode -> build(cfg, mesh, models) -> SearchSpace (imported when a run starts: they load JAX code)."""
    from jaxmerge.dfs.space import build as dfs
    from jaxmerge.ps.space import build as ps
    return {"ps": lambda cfg, mesh, models: ps(cfg, mesh), "dfs": dfs}


def identity(cfg: EvolveConfig, models: tuple[str, ...]) -> dict:
    """What `--resume` must find unchanged: the config without its generation counts, and a fingerprint of every
    input (each model's weights and config, each task file and split; jaxmerge.fingerprint: cheap, sampled)."""
    from jaxmerge.fingerprint import fingerprint
    from jaxmerge.fitness.suite import task_inputs
    from jaxmerge.io import resolve
    doc = json.loads(json.dumps(cfg.raw, default=str))
    for section in ("search", "dfs"):
        if isinstance(doc.get(section), dict):
            doc[section].pop("generations", None)
    found = {"config": hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]}
    for model in (*models, *([cfg.base_model] if cfg.base_model else [])):
        found[f"model {model}"] = fingerprint(resolve(model))
    for ref in cfg.fitness.tasks:
        for kind, path in task_inputs(ref):
            found[f"{kind} {path}"] = fingerprint(path)
    return found


def run_mesh(cfg: EvolveConfig):
    """The process's (pop, model) mesh, checked against the first model's architecture (headers only)."""
    return build_mesh(cfg.mesh.pop, cfg.mesh.model, cfg.search.population, open_checkpoint(cfg.models[0]).spec)


def stage(cfg: EvolveConfig, mode: str, search: Search, out: Path, mesh, models: tuple[str, ...], **run) -> dict:
    """One search of `mode` over `models` into `out`."""
    settings = RunSettings(search, cfg.memory.batch_size, mesh)
    return run_search(lambda: builders()[mode](cfg, mesh, models), settings, out, identity=identity(cfg, models),
                      config=cfg.raw, info={"root": cfg.root, "mode": mode, "models": list(models)}, **run)


def evolve(cfg: EvolveConfig, out: Path, *, resume: bool = False, progress: bool = True,
           generations: int | None = None, allow_changed: bool = False, stop_after: int | None = None,
           tensorboard: bool = False) -> dict:
    """Run (or resume) the config's search in `out`; `generations` overrides search.generations (to extend a
    finished run with --resume); `tensorboard` also writes TensorBoard event files."""
    run = {"resume": resume, "progress": progress, "allow_changed": allow_changed, "stop_after": stop_after,
           "tensorboard": tensorboard}
    search = cfg.search if generations is None else dataclasses.replace(cfg.search, generations=generations)
    refuse_vlm_paths(cfg)
    with locked(Path(out)):
        if cfg.mode == "hybrid":
            return hybrid(cfg, Path(out), search, **run)
        return stage(cfg, cfg.mode, search, Path(out), run_mesh(cfg), cfg.models, **run)


def refuse_vlm_paths(cfg: EvolveConfig) -> None:
    """A DFS path runs model A's embeddings and head, and its export is A's kind of model: a VLM among the models
    of mode dfs must be A (models[0]), else its vision tower would be dropped. Checked before the run directory
    is made (the DFS space checks it again for a hybrid's second stage). A hybrid's PS winner is a VLM whenever
    one is among its models, so any position is fine there."""
    from jaxmerge.dfs.space import vlm_first
    from jaxmerge.io import resolve
    if cfg.mode == "dfs":
        vlm_first([resolve(m) for m in cfg.models])


def locked(out: Path):
    """The run directory's lock (process 0 holds it: a second run on DIR is refused naming the holder)."""
    from jaxmerge.lock import dir_lock
    return dir_lock(out, "evolve") if is_primary() else contextlib.nullcontext()


def hybrid(cfg: EvolveConfig, out: Path, search: Search, resume: bool, **run) -> dict:
    """PS into DIR/ps, then DFS into DIR/dfs from the PS winner; the final winner at DIR's top level."""
    mesh, ps_dir, dfs_dir = run_mesh(cfg), out / "ps", out / "dfs"
    ps = stage(cfg, "ps", search, ps_dir, mesh, cfg.models, resume=resume and (ps_dir / "run.json").is_file(),
               **run)
    if "stopped_at" in ps:
        return ps
    dfs_search = dataclasses.replace(cfg.search, generations=cfg.dfs.generations or cfg.search.generations,
                                     sigma=cfg.dfs.sigma or cfg.search.sigma)
    models = (str((ps_dir / "model").absolute()), *cfg.models)
    dfs = stage(cfg, "dfs", dfs_search, dfs_dir, mesh, models, resume=resume and (dfs_dir / "run.json").is_file(),
                **run)
    if "stopped_at" in dfs or not is_primary():
        return dfs
    return top_level(out, ps, dfs)


def top_level(out: Path, ps: dict, dfs: dict) -> dict:
    """DIR/model (hard links to DIR/dfs/model's files), DIR/recipe.yml and DIR/best.json of a hybrid run."""
    with atomic_dir(out / "model", overwrite=True) as tmp:
        for file in sorted((out / "dfs" / "model").rglob("*")):
            target = tmp / file.relative_to(out / "dfs" / "model")
            if file.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                _link_or_copy(file, target)
    recipe = out / "dfs" / "recipe.yml"  # absent where no passthrough recipe can carry the path (Gemma's norms)
    if recipe.is_file():
        atomic_write_text(out / "recipe.yml", recipe.read_text())
    else:
        (out / "recipe.yml").unlink(missing_ok=True)
    best = {"status": "finished", "space": "hybrid", "fitness": dfs["fitness"], "generation": dfs["generation"],
            "improved_on_start": dfs["fitness"] > ps["baselines"]["start"], "baselines": ps["baselines"],
            "stages": {"ps": _summary(ps), "dfs": _summary(dfs)}, "model": "model",
            "recipe": "recipe.yml" if recipe.is_file() else None}
    atomic_write_text(out / "best.json", json.dumps(best, indent=2))
    return best


def _summary(best: dict) -> dict:
    keep = ("fitness", "generation", "improved_on_start", "genes", "merge_key", "baselines", "path")
    return {k: best[k] for k in keep if k in best}


def _link_or_copy(src: Path, dst: Path) -> None:
    import shutil
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
