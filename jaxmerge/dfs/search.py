"""`mode: dfs` and `mode: hybrid` of `jaxmerge evolve`: the DFS problem, its candidate fitness, its outputs.

    mode: dfs                 # models: [A, B, ...] (A gives embeddings, final norm and head)
    dfs: {repeats: 3, w_mode: matrix}    # hybrid only: generations, sigma of the DFS stage (default: search's)

The evolution engine (jaxmerge.evolve) searches flat genome vectors; `DFSGenome` is the flat view of a
`DFSSpace`'s genes, with the same `size` / `initial_raw` / `describe` the engine reads from a PS genome. Scoring
goes through the fitness package with the DFS `Decoder`, so generation and teacher-forced scores of a path are the
same code as for a plain model. The pool of source layers is `data`, an argument of the compiled step, never a
constant baked into it.

Hybrid (the paper's best recipe) is two runs in one directory: the parameter-space search in DIR/ps, then a DFS
search in DIR/dfs whose model A is the PS winner (DIR/ps/model) and whose other models are the PS sources.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.atomic import atomic_write_text
from jaxmerge.dfs.decoder import DFS_DECODER
from jaxmerge.dfs.export import decoded_path, used_pool, write_export
from jaxmerge.dfs.path import path_spec, with_path
from jaxmerge.dfs.sources import pool_layout, space_for
from jaxmerge.dfs.space import W_MODES, DFSSpace
from jaxmerge.errors import expect
from jaxmerge.evolve.config import DFS_KEYS, is_real
from jaxmerge.io import DTYPES



@dataclasses.dataclass(frozen=True)
class DFSGenome:
    """A DFSSpace's genes as one flat vector: the indicator [T], then the scales (matrix or per step)."""
    space: DFSSpace

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.space.gene_template().items()}

    @property
    def size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes.values())

    def genes(self, raw: jax.Array) -> dict[str, jax.Array]:
        """Flat raw vector -> the space's gene pytree (static slices: pure, jittable)."""
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[name], offset = raw[offset:offset + n].reshape(shape), offset + n
        return out

    def initial_raw(self) -> jax.Array:
        return jnp.concatenate([v.ravel() for v in self.space.initial_genes().values()])

    def describe(self, raw) -> dict[str, list]:
        return {k: np.asarray(v).tolist() for k, v in self.genes(jnp.asarray(raw)).items()}


def dfs_settings(cfg) -> dict:
    """The `dfs:` section, checked: unknown keys, r < 1 and bad modes are one-line errors."""
    where = "dfs"
    unknown = sorted(set(cfg.dfs) - DFS_KEYS)
    expect(not unknown, f"{where}: unknown key(s) {unknown} (allowed: {sorted(DFS_KEYS)})")
    repeats = cfg.dfs.get("repeats", 3)
    expect(is_real(repeats) and float(repeats).is_integer() and repeats >= 1,
           f"{where}: expected repeats to be an integer >= 1, found {repeats!r}")
    w_mode = cfg.dfs.get("w_mode", "matrix")
    expect(w_mode in W_MODES, f"{where}: expected w_mode in {W_MODES}, found {w_mode!r}")
    generations = cfg.dfs.get("generations", cfg.generations)
    expect(is_real(generations) and float(generations).is_integer() and generations >= 1,
           f"{where}: expected generations to be an integer >= 1, found {generations!r}")
    sigma = cfg.dfs.get("sigma", cfg.sigma)
    expect(is_real(sigma) and sigma > 0, f"{where}: expected a finite sigma > 0, found {sigma!r}")
    return {"repeats": int(repeats), "w_mode": w_mode, "generations": int(generations), "sigma": float(sigma)}


def build_dfs_problem(cfg, mesh=None):
    """The engine's Problem for a DFS search over cfg.models (A first); the pool is loaded sliced onto `mesh`
    (default: the config's)."""
    from jaxmerge.evolve.problem import Problem, build_fitness
    from jaxmerge.evolve.sliced import load_table, open_checkpoint, run_mesh
    settings = dfs_settings(cfg)
    expect(cfg.dtype in DTYPES, f"expected dtype in {sorted(DTYPES)}, found {cfg.dtype!r}")
    models = [open_checkpoint(m) for m in cfg.models]
    space = space_for(models, settings["repeats"], settings["w_mode"])
    spec = path_spec(models[0].spec, space)
    fitness, parts = build_fitness(cfg, spec, models[0].path, decoder=DFS_DECODER)
    mesh = mesh if mesh is not None else run_mesh(cfg, models[0].spec)
    data = {"pool": load_table(pool_layout([m.table for m in models]), models[0].spec, mesh, cfg.dtype)}
    return Problem(cfg, spec, None, DFSGenome(space), data, fitness, parts, models[0].path, tuple(cfg.models))


def path_params(problem, raw: jax.Array, data: dict) -> dict:
    """A candidate's path params: pure, the same code scores and exports."""
    genome: DFSGenome = problem.genome
    return with_path(data["pool"], genome.space.decode(genome.genes(raw)))


def dfs_candidate_fitness(problem):
    """(raw, key, data) -> fitness, as the engine's step takes it (a path needs no randomness: key unused)."""
    def fitness(raw, key, data):
        return problem.fitness(path_params(problem, raw, data))
    return fitness


def write_dfs_outputs(problem, state, history: list[dict], out: Path) -> dict:
    """DIR/model (a plain HF model with path.json and plots/path.png), best.json, history.jsonl. Called by every
    process: the layers the winner uses are gathered to each host (a collective), then only process 0 writes."""
    from jaxmerge.distributed import is_primary
    from jaxmerge.evolve.run import secondary_result
    genome: DFSGenome = problem.genome
    genes = genome.genes(jnp.asarray(state.best_raw))
    pool = problem.data["pool"]
    pool, path = used_pool(pool, decoded_path(genome.space, genes, pool["embed"].dtype))
    if not is_primary():
        return secondary_result(state)
    write_export(genome.space, problem.spec, pool, path, genes, out / "model", names=problem.names,
                 tokenizer_from=problem.tokenizer_dir, overwrite=True)
    best = {"fitness": float(state.best_fitness), "generation": int(state.best_generation),
            "genes": genome.describe(state.best_raw), "raw": np.asarray(state.best_raw).tolist(),
            "evaluations": int(state.evaluations), "nonfinite": int(state.nonfinite), "models": list(problem.names),
            "path": json.loads((out / "model" / "path.json").read_text())["path"]}
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    atomic_write_text(out / "best.json", json.dumps(best, indent=2))
    return best


def evolve_hybrid(cfg, out: Path, evolve, resume: bool = False, progress: bool = True) -> dict:
    """PS search in DIR/ps, then DFS in DIR/dfs with A = the PS winner and the PS sources as B, C, ...

    `evolve(cfg, dir, resume=, progress=)` is the engine's run function. The DFS stage takes its generations and
    sigma from the `dfs:` section (default: the search's). On --resume a finished PS stage is not run again."""
    out = Path(out)
    settings = dfs_settings(cfg)  # refuse a bad dfs section before the PS search, not after
    ps_dir, dfs_dir = out / "ps", out / "dfs"
    if not (resume and (ps_dir / "best.json").is_file()):
        evolve(dataclasses.replace(cfg, mode="ps"), ps_dir, resume=resume and (ps_dir / "run.json").is_file(),
               progress=progress)
    second = dataclasses.replace(cfg, mode="dfs", models=(str((ps_dir / "model").absolute()), *cfg.models),
                                 generations=settings["generations"], sigma=settings["sigma"])
    return evolve(second, dfs_dir, resume=resume and (dfs_dir / "run.json").is_file(), progress=progress)
