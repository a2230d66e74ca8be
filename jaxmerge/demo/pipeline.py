"""`jaxmerge demo`: the paper's experiment in miniature, through the same files and commands a user has.

1. the world (base, specialists, task files: one per single skill and the composed target), shipped or cached;
2. every source scored on the held-out test splits (the target: cipher(sort(x)) at 5 letters, which no source
   was trained on and none solves; and each single skill);
3. hand-made merges (uniform task arithmetic, TIES, DARE-TIES) written as mergekit recipes, run by `jaxmerge merge`;
4. evolution: a hybrid run (its PS stage is the PS row, its DFS stage the PS+DFS row) and a DFS run over the
   sort then the cipher specialist, written as run configs that `jaxmerge evolve` re-runs as they are;
5. the table (rows: sources, untuned, evolved; columns: target and each skill on the test splits), results.json,
   and the best evolved model copied to DIR/winner.
The search only ever sees the target's dev split; every number in the table is on test splits. `quick` runs the
same world, splits and scorer with a smaller search budget (BUDGETS). Every score is the task's greedy_match:
exact match of greedy decoding, decided teacher-forced in one forward pass (jaxmerge.fitness; equal item by item
to decoding, tests/test_fitness_greedy_match.py), so the compiled programs have no host callback and a second
run loads them all from the persistent compilation cache.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from jaxmerge.atomic import atomic_dir, atomic_write_text, claimed_dir
from jaxmerge.demo.world import World, build_world


def untuned_recipes(world: World) -> dict[str, dict]:
    return hand_made_recipes(str(world.base), [str(p) for p in world.specialists.values()])


def hand_made_recipes(base: str, models: list[str]) -> dict[str, dict]:
    """Hand-made merges with the usual defaults: what a user would try before searching (both demos')."""
    ta = {"merge_method": "task_arithmetic", "base_model": base,
          "models": [{"model": m, "parameters": {"weight": 0.5}} for m in models]}
    ties = {"merge_method": "ties", "base_model": base, "parameters": {"normalize": True},
            "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.5}} for m in models]}
    dare = {**ties, "merge_method": "dare_ties"}
    return {"task_arithmetic": ta, "ties": ties, "dare_ties": dare}


# Search budgets (times in benchmarks/RESULTS.md). Every candidate is scored teacher-forced (greedy_match: one
# forward pass, no decode loop), so every search affords the target's whole dev split (512 composed rows; with
# fewer, dev misjudged skills by up to 20 points and searches that won on dev lost on test). A DFS candidate
# costs only the steps its path uses (a repeats-1 path over two 4-layer models: at most 9 layers, about twice a
# plain model). The hybrid's DFS stage shares the PS fitness (one fitness section).
BUDGETS = {False: {"ps_generations": 20, "dfs_generations": 3},
           True: {"ps_generations": 8, "dfs_generations": 1}}


def evolve_configs(world: World, quick: bool, search_seed: int = 0) -> dict[str, dict]:
    """PS (task arithmetic with a weight per model per layer: 16 genes, deterministic, so the search is not
    fighting DARE's mask noise), DFS over the sort then the cipher specialist, and hybrid (PS, then DFS with
    A = the PS winner). `search_seed` seeds every search (the world and its splits stay the same): how the
    spread over seeds is measured."""
    models = [str(p) for p in world.specialists.values()]
    budget = BUDGETS[quick]
    search = {"strategy": "CMA_ES", "population": 8, "generations": budget["ps_generations"], "sigma": 0.2,
              "seed": search_seed}
    fitness = {"tasks": [{"task": str(world.target), "split": "dev", "subset": 0}], "item_batch": 128}
    ps = {"models": models, "base_model": str(world.base), "merge_method": "task_arithmetic",
          "evolve": {"weight": {"init": 0.5, "bounds": [0.0, 1.0]}},
          "parameters": {"lambda": 1.0}, "granularity": {"layers_per_group": 1, "param_groups": False},
          "search": search, "fitness": fitness}
    dfs_section = {"repeats": 1, "w_mode": "per_slot", "generations": budget["dfs_generations"], "sigma": 0.1}
    dfs = {"mode": "dfs", "models": dfs_models(world),
           "search": {**search, "generations": budget["dfs_generations"], "sigma": 0.1},
           "fitness": fitness,
           "dfs": {k: v for k, v in dfs_section.items() if k in ("repeats", "w_mode")}}
    hybrid = {**ps, "mode": "hybrid", "dfs": dfs_section}
    return {"ps": ps, "dfs": dfs, "hybrid": hybrid}


class Scorer:
    """Scores of any model on one split: the target's (the composed op) and, with `skills`, each single skill's
    task, as per-item results of one prepared batch (every task shares the template, metric and stop). One compiled
    scorer per model shape, so every source and merge shares one compile."""

    def __init__(self, world: World, split: str = "test", skills: bool = True):
        from jaxmerge.fitness import load_items, load_task, load_tokenizer, prepare
        self.tokenizer = load_tokenizer(world.base)
        tasks = {"target": world.target, **(world.tasks if skills else {})}
        parts = {name: load_items(load_task(path), split) for name, path in tasks.items()}
        items = [item for rows in parts.values() for item in rows]
        self.prepared = prepare(load_task(world.target), items, self.tokenizer, item_batch=min(125, len(items)))
        self.labels = np.array([name for name, rows in parts.items() for _ in rows])
        self.compiled = {}

    def __call__(self, model_dir: Path) -> dict[str, float]:
        from jaxmerge.fitness import make_fitness
        from jaxmerge.io import load
        model = load(model_dir)
        if model.spec not in self.compiled:
            self.compiled[model.spec] = jax.jit(make_fitness(model.spec, self.prepared, self.tokenizer).per_item)
        return self.summary(np.asarray(self.compiled[model.spec](model.params)))

    def summary(self, per_item: np.ndarray) -> dict[str, float]:
        """{"target": mean over the target's items, skill: mean over that skill's items} of per-item scores."""
        return {name: float(per_item[self.labels == name].mean()) for name in dict.fromkeys(self.labels)}


def dfs_models(world: World) -> list[str]:
    """DFS's models in the order the composition runs: A = the sort specialist (embeddings, head, first and last
    layers: it reads the letters and orders them), B = the cipher specialist (writes them in the cipher)."""
    return [str(world.specialists["sort"]), str(world.specialists["cipher"])]


def run_demo(out: Path, seed: int = 0, quick: bool = False, progress: bool = True, log=print,
             search_seed: int = 0) -> dict:
    """The demo in DIR `out`: new, empty or an earlier demo's (a user's directory is refused, never cleared);
    a DIR this call created is removed again if the demo fails (a full disk, Ctrl-C)."""
    with claimed_dir(out, "demo") as out:
        return _demo(out, seed, quick, progress, log, search_seed)


# What the searches found, as pictures in DIR/plots (name -> the run's own plot, written by jaxmerge evolve):
# the PS winner's weight per model and layer, and each DFS winner's layer path with its scales.
PLOTS = {"ps_genes.png": "hybrid/ps/plots/genes_weight.png", "dfs_path.png": "dfs/model/plots/path.png",
         "ps_dfs_path.png": "hybrid/dfs/model/plots/path.png"}


def _demo(out: Path, seed: int, quick: bool, progress: bool, log, search_seed: int) -> dict:
    from jaxmerge.config import parse_config
    from jaxmerge.modes import evolve
    started = time.perf_counter()
    world = build_world(out / "world", seed=seed, quick=quick)
    configs = clear_outputs(out) / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(world)
    sources = {"base": world.base, **world.specialists}
    rows = [score_row(name, "source", path, scorer) for name, path in sources.items()]
    for name, merged in hand_made(untuned_recipes(world), configs, out / "merges", log).items():
        rows.append(score_row(name, "untuned", merged, scorer))
    runs = out / "runs"
    docs = evolve_configs(world, quick, search_seed=search_seed)
    for name, doc in docs.items():
        atomic_write_text(configs / f"evolve_{name}.yml", yaml.safe_dump(doc, sort_keys=False))
    for name in ("hybrid", "dfs"):
        log(f"evolution: {name}")
        doc = docs[name]
        evolve(parse_config(doc, configs, str(configs / f"evolve_{name}.yml")), runs / name, progress=progress)
    for name, model in (("PS", runs / "hybrid/ps/model"), ("DFS", runs / "dfs/model"),
                        ("PS+DFS", runs / "hybrid/dfs/model")):
        rows.append(score_row(name, "evolved", model, scorer))
    plots = copy_plots(runs, out / "plots")
    results = {"rows": rows, "metric": "exact match", "plots": plots, "seconds": time.perf_counter() - started,
               "quick": quick, "seed": seed, "search_seed": search_seed}
    export_winner(out, rows)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


# What a demo writes into DIR besides its world, results.json and winner/ (both demos: the same names)
OUTPUTS = ("configs", "merges", "runs", "plots")


def clear_outputs(out: Path) -> Path:
    """DIR without an earlier demo's OUTPUTS (this one's or the other demo's: DIR is a claimed demo directory),
    so a rerun never leaves a run, config or plot the new results.json does not describe; returns DIR."""
    for name in OUTPUTS:
        shutil.rmtree(out / name, ignore_errors=True)
    return out


def hand_made(recipes: dict[str, dict], configs: Path, merges: Path, log) -> dict[str, Path]:
    """Each recipe written to CONFIGS/merge_NAME.yml (re-runnable with `jaxmerge merge`) and merged into
    MERGES/NAME; name -> the merged model's directory (the text and the VLM demo's hand-made rows)."""
    from jaxmerge.merge.build import merge_recipe
    from jaxmerge.merge.recipe import parse_recipe
    out = {}
    for name, recipe in recipes.items():
        atomic_write_text(configs / f"merge_{name}.yml", yaml.safe_dump(recipe, sort_keys=False))
        log(f"hand-made merge: {name}")
        out[name] = merge_recipe(parse_recipe(recipe, configs), merges / name, overwrite=True)
    return out


def score_row(name: str, kind: str, model_dir: Path, scorer: Scorer) -> dict:
    scores = scorer(model_dir)
    return {"name": name, "kind": kind, "model": str(model_dir), "target_test": scores.pop("target"),
            **{f"{skill}_test": value for skill, value in scores.items()}}


def copy_plots(runs: Path, plot_dir: Path, plots: dict[str, str] = PLOTS) -> dict[str, str]:
    """DIR/plots/{plots}: the searches' pictures in one place (name -> the run's own plot); returns name -> path."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, source in plots.items():
        shutil.copyfile(runs / source, plot_dir / name)
    return {name: str(plot_dir / name) for name in plots}


def export_winner(out: Path, rows: list[dict]) -> None:
    """DIR/winner: a copy of the best evolved model, replacing an earlier demo's winner in one step."""
    best = max((r for r in rows if r["kind"] == "evolved"), key=lambda r: r["target_test"])
    with atomic_dir(out / "winner", overwrite=True) as tmp:
        shutil.copytree(best["model"], tmp, dirs_exist_ok=True)
