"""The host side of a run: set up, loop over generations (one compiled step each), checkpoint, export.

The host only logs: each generation it reads a handful of scalars back for the history and the progress bar.
After every generation the whole `EvolveState` is checkpointed, so a run killed at any point resumes from the
last completed generation and, with the same seed, ends bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxmerge.atomic import atomic_write_text, sweep_leftovers
from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.evolve import checkpoint
from jaxmerge.distributed import is_primary
from jaxmerge.evolve.config import EvolveConfig
from jaxmerge.evolve.mesh import place, replicated
from jaxmerge.evolve.problem import Problem, candidate_params
from jaxmerge.evolve.step import EvolveState, evaluate_population, initial_state, make_step
from jaxmerge.evolve.strategy import make_search


def config_hash(cfg: EvolveConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_out_dir(out: Path, cfg: EvolveConfig, resume: bool) -> None:
    """A new run needs an empty or new DIR; --resume needs DIR to hold this same run. Writes nothing."""
    run_file = out / "run.json"
    if out.exists() and not out.is_dir():
        raise JaxmergeError(f"expected an output directory at {out}, found a file")
    if resume:
        expect(run_file.is_file(), f"expected a run to resume in {out}, found no run.json")
        found = json.loads(run_file.read_text()).get("config_hash")
        expect(found == config_hash(cfg), f"expected {out} to hold a run of this config (hash {config_hash(cfg)}), "
                                          f"found hash {found}: it holds another run")
        return
    expect(not (out.is_dir() and any(out.iterdir())),
           f"expected an empty or new --out directory, found {out} holding "
           + ("another run (use --resume to continue it)" if run_file.exists() else "other files"))


def start_run_dir(out: Path, cfg: EvolveConfig) -> None:
    """Create DIR with its run.json, only once the sources, tasks and search are known good: a refused start
    leaves nothing behind that a second try would need --resume for."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run.json", json.dumps({"config_hash": config_hash(cfg), "config": cfg.raw}, indent=2,
                                                   default=str))


def modes() -> dict:
    """mode -> (build the Problem, its candidate fitness (raw, key, data) -> f32, write DIR's outputs)."""
    from jaxmerge.dfs.search import build_dfs_problem, dfs_candidate_fitness, write_dfs_outputs
    from jaxmerge.evolve.outputs import write_outputs
    from jaxmerge.evolve.problem import build_problem, candidate_fitness
    return {"ps": (build_problem, candidate_fitness, write_outputs),
            "dfs": (build_dfs_problem, dfs_candidate_fitness, write_dfs_outputs)}


def setup(problem: Problem, mesh=None):
    """(search, step, evaluate, mesh): candidates split over the mesh's pop axis (default mesh: the config's),
    `memory.batch_size` of them in flight per pop shard (0: all of the shard's share)."""
    from jaxmerge.evolve.sliced import run_mesh
    cfg = problem.config
    search = make_search(cfg.strategy, cfg.population, problem.genome.size, cfg.sigma, cfg.learning_rate)
    mesh = mesh if mesh is not None else run_mesh(cfg, problem.spec)
    share = cfg.population // mesh.shape["pop"]
    batch = cfg.batch_size or share
    expect(share % batch == 0, f"expected memory.batch_size to divide the candidates per pop shard "
                               f"({cfg.population} / {mesh.shape['pop']} = {share}), found {batch}")
    fit = modes()[cfg.mode][1](problem)
    step = make_step(search, fit, batch, mesh)
    evaluate = jax.jit(lambda pop, keys, data: evaluate_population(fit, pop, keys, data, batch, mesh),
                       out_shardings=replicated(mesh))
    return search, step, evaluate, mesh


def start_or_resume(problem: Problem, search, evaluate, mgr, resume: bool):
    key = jax.random.PRNGKey(problem.config.seed)
    state = initial_state(search, problem.genome.initial_raw(), key,
                          lambda pop, keys: evaluate(pop, keys, problem.data))
    if resume:
        restored = checkpoint.restore_latest(mgr, state)
        if restored is not None:
            return restored[0], restored[1]["history"]
    return state, []


def history_row(state: EvolveState, stats, seconds: float, population: int) -> dict:
    return {"generation": int(state.generation), "best": float(stats.best), "mean": float(stats.mean),
            "std": float(stats.std), "best_so_far": float(state.best_fitness), "nonfinite": int(stats.nonfinite),
            "evals_per_s": population / max(seconds, 1e-9), "seconds": seconds}


def evolve(cfg: EvolveConfig, out: Path, resume: bool = False, progress: bool = True,
           stop_after: int | None = None) -> dict:
    """Run (or resume) the search and write DIR's outputs. `stop_after` ends early after that many generations
    in this process (for tests of resumption); the outputs are written only when the run completes."""
    out = Path(out)
    if cfg.mode == "hybrid":
        from jaxmerge.dfs.search import evolve_hybrid
        return evolve_hybrid(cfg, out, evolve, resume=resume, progress=progress)
    if is_primary():  # every process runs this same function; only process 0 reads and writes DIR
        check_out_dir(out, cfg, resume)
        if resume:
            sweep_leftovers(out)  # what a killed writer left half-written
    from jaxmerge.evolve.sliced import run_mesh
    mesh = run_mesh(cfg)  # first: the sources are loaded straight onto it, each process reading its slices
    problem = modes()[cfg.mode][0](cfg, mesh)
    search, step, evaluate, mesh = setup(problem, mesh)
    if is_primary() and not resume:
        start_run_dir(out, cfg)
    mgr = checkpoint.manager(out / "checkpoints")
    state, history = start_or_resume(problem, search, evaluate, mgr, resume)
    state = place(jax.tree.map(np.asarray, state), replicated(mesh))
    from jaxmerge.evolve.progress import Progress
    with Progress(cfg.generations, enabled=progress) as bar:
        bar.advance_to(int(state.generation), history[-1] if history else None)
        done_here = 0
        while int(state.generation) < cfg.generations:
            if stop_after is not None and done_here >= stop_after:
                return {"stopped_at": int(state.generation)}
            t0 = time.perf_counter()
            state, stats = step(state, problem.data)
            jax.block_until_ready(state)
            row = history_row(state, stats, time.perf_counter() - t0, cfg.population)
            _check_finite(stats, state, out)
            history.append(row)
            checkpoint.save(mgr, int(state.generation), state, {"history": history})
            bar.advance_to(int(state.generation), row)
            done_here += 1
    state = jax.tree.map(np.asarray, state)  # host copy (replicated)
    return modes()[cfg.mode][2](problem, state, history, out)  # every process; only process 0 writes


def secondary_result(state: EvolveState) -> dict:
    """What a process other than 0 returns once the export's collectives are done."""
    return {"fitness": float(state.best_fitness), "generation": int(state.best_generation)}


def _check_finite(stats, state, out: Path) -> None:
    if int(stats.nonfinite) == int(stats.fitness.shape[0]):
        raise JaxmergeError(f"expected at least one candidate with a finite fitness in generation "
                            f"{int(state.generation)}, found all NaN/Inf; the last good checkpoint in "
                            f"{out / 'checkpoints'} can be resumed after fixing the cause")


def winner_params(problem: Problem, state: EvolveState) -> dict:
    """The exported model: the best candidate's genes merged with the best candidate's own key."""
    merge = jax.jit(lambda raw, key, data: candidate_params(problem, raw, key, data))
    return merge(state.best_raw, state.best_key, problem.data)
