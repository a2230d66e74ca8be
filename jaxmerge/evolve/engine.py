"""The engine: run any `SearchSpace` (see space.py) — score the baselines, loop over generations (one compiled
step each), checkpoint, export.

The host only logs: each generation it reads a handful of scalars back for the history and the progress line.
After every generation the whole `EvolveState` is checkpointed and best.json / history.jsonl are rewritten, so a
run killed at any point resumes from the last completed generation and, with the same seed, ends bit-identical
to an uninterrupted run. The engine knows no search space: it imports neither jaxmerge.ps nor jaxmerge.dfs.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge import interrupt
from jaxmerge.leftovers import sweep_leftovers
from jaxmerge.distributed import is_primary
from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.evolve import checkpoint, records, rundir
from jaxmerge.evolve.board import Board, require as require_tensorboard
from jaxmerge.evolve.mesh import POP, place, pop_map, replicated
from jaxmerge.evolve.progress import Progress
from jaxmerge.evolve.space import RunSettings, SearchSpace
from jaxmerge.evolve.step import evaluate_population, initial_state, make_step
from jaxmerge.evolve.strategy import make_search


def make_scorer(fn, mesh):
    """jit of `fn(*args) -> f32`, computed as the step computes a candidate (one program per pop shard, the
    result replicated): host-callback metrics need that fully manual layout."""
    def run(*args):
        shards = jnp.zeros((mesh.shape[POP],), jnp.int32)
        return pop_map(lambda _: fn(*args), shards, 1, mesh)[0]
    return jax.jit(run, out_shardings=replicated(mesh))


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def score_baselines(space: SearchSpace, mesh) -> dict:
    """Fitness of the starting point (merge key zero) and of every source, on the search's own fitness data
    (with several objectives also each one's objective values, under "objectives")."""
    start = make_scorer(space.candidate, mesh)(jnp.asarray(space.initial), jnp.zeros((2,), jnp.uint32), space.data)
    scorers, scores = {}, {"start": np.asarray(start)}
    for name, fitness, load_params in space.baselines():
        scorer = scorers.setdefault(id(fitness), make_scorer(fitness, mesh))  # one compile per fitness function
        scores[name] = np.asarray(scorer(load_params()))
    out = {"start": _finite_or_none(scores["start"].reshape(-1)[0]),
           "sources": {name: _finite_or_none(v.reshape(-1)[0]) for name, v in scores.items() if name != "start"}}
    if scores["start"].ndim:
        out["objectives"] = {name: [_finite_or_none(x) for x in v[1:]] for name, v in scores.items()}
    return out


def candidates_in_flight(settings: RunSettings) -> int:
    share = settings.search.population // settings.mesh.shape[POP]
    batch = settings.batch_size or share
    expect(share % batch == 0, f"expected memory.batch_size to divide the candidates per pop shard "
                               f"({settings.search.population} / {settings.mesh.shape[POP]} = {share}), found {batch}")
    return batch


def compiled(space: SearchSpace, settings: RunSettings):
    """(search, step, evaluate): the generation step and the population evaluator, jitted once."""
    s, mesh = settings.search, settings.mesh
    search = make_search(s.strategy, s.population, space.size, s.sigma, s.learning_rate)
    batch = candidates_in_flight(settings)
    step = make_step(search, space.candidate, batch, mesh)
    evaluate = jax.jit(lambda pop, keys, data: evaluate_population(space.candidate, pop, keys, data, batch, mesh),
                       out_shardings=replicated(mesh))
    return search, step, evaluate


def start_or_resume(space: SearchSpace, settings: RunSettings, search, evaluate, mgr, resume: bool):
    """(state, history, baselines): the last checkpoint's on --resume, else a fresh start seeded with the
    scored starting point."""
    key = jax.random.PRNGKey(settings.search.seed)
    initial = jnp.asarray(space.initial)
    score = lambda pop, keys: evaluate(pop, keys, space.data)  # noqa: E731
    if resume:
        restored = checkpoint.restore_latest(mgr, initial_state(search, initial, key, score, jnp.float32(0)))
        if restored is not None:
            return restored[0], restored[1]["history"], restored[1]["baselines"]
    baselines = score_baselines(space, settings.mesh)
    if is_primary():
        for line in records.baseline_lines(baselines):
            records.say(line)
    start = jnp.float32(np.nan if baselines["start"] is None else baselines["start"])
    return initial_state(search, initial, key, score, start), [], baselines


def run_search(build_space, settings: RunSettings, out: Path, *, identity: dict, config: dict,
               info: dict | None = None, resume: bool = False, progress: bool = True, allow_changed: bool = False,
               stop_after: int | None = None, tensorboard: bool = False) -> dict:
    """Run (or resume, or extend) a search in DIR and export the winner. `build_space()` -> SearchSpace is
    called once DIR is known usable (loading sources takes long; a refusal must come first). `stop_after` ends
    early after that many generations in this process (tests of resumption); the winner is exported only when
    the run completes. Resuming a finished run with the same generation count returns its best.json.
    `tensorboard`: also write TensorBoard event files to DIR/tensorboard (tensorboardX). `info` is recorded in
    run.json beside the config (what rebuilds the space later, e.g. for `jaxmerge export`)."""
    out = Path(out)
    if tensorboard:
        require_tensorboard()
    if is_primary():  # every process runs this same function; only process 0 reads and writes DIR
        rundir.check(out, identity, resume, allow_changed)
        if resume:
            sweep_leftovers(out)  # what a killed writer left half-written
    space = build_space()
    search, step, evaluate = compiled(space, settings)
    check_objectives(space, search)
    if is_primary() and not resume:
        rundir.start(out, identity, config, info)
    mgr = checkpoint.manager(out / "checkpoints")
    state, history, baselines = start_or_resume(space, settings, search, evaluate, mgr, resume)
    state = place(jax.tree.map(np.asarray, state), replicated(settings.mesh))
    total = settings.search.generations
    board = Board(out / "tensorboard" if tensorboard and is_primary() else None)
    if not history:
        board.baselines(baselines)
    with Progress(total, bar=progress) as bar:
        bar.start(int(state.generation))
        done_here = 0
        while int(state.generation) < total and (stop_after is None or done_here < stop_after):
            interrupt.check()  # a signal caught during the last step ends the run here, checkpoints intact
            state = _generation(step, state, space, settings, (history, baselines), mgr, out)
            done_here += 1
            if is_primary():
                records.write(out, history, records.best_record(space, state, baselines, "running"))
                write_front(out, space, search, state)
            bar.update(history[-1])
            board.row(history[-1])
    board.close()
    if int(state.generation) < total:
        return {"stopped_at": int(state.generation)}
    if resume and done_here == 0 and _agreed(is_primary() and records.finished(out, total)):
        return records.read_best(out) if is_primary() else {}
    return finish(space, search, jax.tree.map(np.asarray, state), history, baselines, out)


def check_objectives(space: SearchSpace, search) -> None:
    """A space scoring several objectives needs a several-objective strategy, and one scoring a single fitness
    a single-objective one (the config pairs them; this guards any other caller)."""
    several = bool(space.facts.get("objectives"))
    wanted = "NSGA2" if several else "a single-objective strategy"
    expect(several == (search.family == "pareto"), f"expected {wanted} for a search with "
           f"{'several objectives' if several else 'one fitness'}, found {search.name}")


def write_front(out: Path, space: SearchSpace, search, state) -> None:
    """front.json of a several-objective run (process 0), from the strategy's parents."""
    if search.family == "pareto":
        from jaxmerge.evolve.pareto import front_record, write_front as write
        front = jax.tree.map(np.asarray, search.front(state.strategy))
        write(out, front_record(front, list(space.facts["objectives"]), space.describe, int(state.generation)))


def _generation(step, state, space: SearchSpace, settings: RunSettings, log: tuple[list, dict], mgr, out: Path):
    """One step, its history row, and the checkpoint of the whole state with the run's log (history, baselines)."""
    history, baselines = log
    t0 = time.perf_counter()
    state, stats = step(state, space.data)
    jax.block_until_ready(state)
    row = records.history_row(state, stats, time.perf_counter() - t0, settings.search.population)
    if stats.front is not None:
        from jaxmerge.evolve.pareto import hypervolume
        front = jax.tree.map(np.asarray, stats.front)
        row["front_size"] = int(front["front"].sum())
        row["hypervolume"] = hypervolume(front["f"][front["front"]], front["ref"])
    _check_finite(stats, state, out)
    history.append(row)
    checkpoint.save(mgr, int(state.generation), state, {"history": history, "baselines": baselines})
    return state


def _agreed(flag: bool) -> bool:
    """Process 0's `flag` on every process (only process 0 reads DIR; every process must take the same branch)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def _check_finite(stats, state, out: Path) -> None:
    if int(stats.nonfinite) == int(stats.fitness.shape[0]):
        raise JaxmergeError(f"expected at least one candidate with a finite fitness in generation "
                            f"{int(state.generation)}, found all NaN/Inf; the last good checkpoint in "
                            f"{out / 'checkpoints'} can be resumed after fixing the cause")


def finish(space: SearchSpace, search, state, history: list[dict], baselines: dict, out: Path) -> dict:
    """Export the winner (every process: the gather is collective) and write the final records (process 0):
    with several objectives also front.json and plots/front.png (members are exported on demand:
    `jaxmerge export DIR --member N`)."""
    best = records.best_record(space, state, baselines, "finished")
    extra = space.export(state.best_raw, state.best_key, out, best)
    if is_primary() and search.family == "pareto":
        from jaxmerge.evolve.pareto import front_record, plot_front
        write_front(out, space, search, state)
        front = jax.tree.map(np.asarray, search.front(state.strategy))
        plot_front(out / "plots", front_record(front, list(space.facts["objectives"]), space.describe,
                                               int(state.generation)), baselines)
    if not is_primary():
        return {"fitness": best["fitness"], "generation": best["generation"]}
    best.update(extra)
    records.write(out, history, best)
    from jaxmerge.evolve.plots import plot_fitness
    plot_fitness(out / "plots", history, baselines)
    records.say(records.ending_line(best))
    return best
