"""`jaxmerge demo --vlm`: EvoVLM-JP in miniature, through the same files and commands a user has.

1. the world (base, VLM-E = a LLaVA answering in E, text-J = a text model answering in J; the target task:
   three-object pictures named in J; the skill task: other three-object pictures named in E), shipped or cached;
2. every source scored on the test splits, text models through the VLM's vision tower and projector (the
   features a merge of them would read);
3. hand-made merges (task arithmetic, TIES, DARE-TIES with the usual defaults) run by `jaxmerge merge`: a VLM;
4. a PS search (task arithmetic with a weight per model per layer) on the target's dev split, run by
   `jaxmerge evolve` from a config written to DIR/configs, exported as a VLM;
5. the table (word ROUGE-L of greedy answers on the test splits), results.json, the winner in DIR/winner.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from jaxmerge.atomic import atomic_write_text, claimed_dir
from jaxmerge.demo.vlm.world import VLMWorld, build_vlm_world
from jaxmerge.errors import expect

BUDGETS = {False: {"generations": 30}, True: {"generations": 12}}


def evolve_config(world: VLMWorld, quick: bool, search_seed: int = 0) -> dict:
    """Task arithmetic with a weight per model per layer (deterministic: no DARE mask noise), on the target's
    dev split."""
    return {"models": [str(world.models["vlm_e"]), str(world.models["text_j"])],
            "base_model": str(world.models["base"]), "merge_method": "task_arithmetic",
            "evolve": {"weight": {"init": 0.5, "bounds": [0.0, 1.5]}}, "parameters": {"lambda": 1.0},
            "granularity": {"layers_per_group": 1, "param_groups": False},
            "search": {"strategy": "CMA_ES", "population": 8, "generations": BUDGETS[quick]["generations"],
                       "sigma": 0.2, "seed": search_seed},
            "fitness": {"tasks": [{"task": str(world.target), "split": "dev"}], "item_batch": 200}}


class Scorer:
    """Word ROUGE-L of any language model on the test splits of the target and the skill task, reading the
    VLM's cached image features; one compiled scorer per task for every source and merge."""

    def __init__(self, world: VLMWorld):
        from jaxmerge.fitness.suite import TaskSpec, prepare_tasks, task_fitness
        from jaxmerge.vlm.checkpoint import load_tower
        tower = load_tower(world.models["vlm_e"])
        tasks = {"target": world.target, "skill": world.skill}
        specs = [TaskSpec(path, "test", 1.0, 0) for path in tasks.values()]
        prepared = prepare_tasks(specs, world.models["vlm_e"], allow_test=True, item_batch=400, seed=0,
                                 tower=tower)
        self.fitness = {name: jax.jit(task_fitness(tower.spec.text, part, prepared.tokenizer,
                                                   image_token=prepared.image_token).per_item)
                        for name, (_, part) in zip(tasks, prepared.parts)}

    def __call__(self, model_dir: Path) -> dict[str, float]:
        from jaxmerge.io import load
        params = load(model_dir).params
        return {name: float(np.mean(np.asarray(score(params)))) for name, score in self.fitness.items()}


def check_extra() -> None:
    """Pictures and ROUGE-L need the `vlm` extra: one line before anything is written."""
    import importlib.util
    missing = [m for m in ("PIL", "rouge_score") if importlib.util.find_spec(m) is None]
    expect(not missing, f"expected pillow and rouge-score for `jaxmerge demo --vlm` (pip install -e \".[vlm]\"), "
                        f"found {', '.join(missing)} missing")


def run_vlm_demo(out: Path, seed: int = 0, quick: bool = False, progress: bool = True, log=print,
                 search_seed: int = 0) -> dict:
    """The VLM demo in DIR `out` (new, empty or an earlier demo's; removed again if this call made it and fails)."""
    check_extra()
    with claimed_dir(out, "demo") as out:
        return _demo(out, seed, quick, progress, log, search_seed)


def _demo(out: Path, seed: int, quick: bool, progress: bool, log, search_seed: int) -> dict:
    from jaxmerge.config import parse_config
    from jaxmerge.demo.pipeline import (clear_outputs, copy_plots, export_winner, hand_made, hand_made_recipes,
                                        score_row)
    from jaxmerge.modes import evolve
    started = time.perf_counter()
    world = build_vlm_world(out / "world", seed=seed, progress=log)
    configs = clear_outputs(out) / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(world)
    names = {"base": "base", "vlm_e": "VLM-E", "text_j": "text-J"}
    rows = [score_row(names[m], "source", path, scorer) for m, path in world.models.items()]
    recipes = hand_made_recipes(str(world.models["base"]), [str(world.models[m]) for m in ("vlm_e", "text_j")])
    for name, merged in hand_made(recipes, configs, out / "merges", log).items():  # each a VLM (the tower kept)
        rows.append(score_row(name, "untuned", merged, scorer))
    doc = evolve_config(world, quick, search_seed)
    atomic_write_text(configs / "evolve_ps.yml", yaml.safe_dump(doc, sort_keys=False))
    log("evolution: PS")
    run_dir = out / "runs" / "ps"
    evolve(parse_config(doc, configs, str(configs / "evolve_ps.yml")), run_dir, progress=progress)
    rows.append(score_row("PS", "evolved", run_dir / "model", scorer))
    plots = copy_plots(out / "runs", out / "plots", {"ps_genes.png": "ps/plots/genes_weight.png"})
    results = {"rows": rows, "metric": "ROUGE-L", "seconds": time.perf_counter() - started, "quick": quick,
               "seed": seed, "search_seed": search_seed, "plots": plots}
    export_winner(out, rows)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results
