"""A search's fitness data: its tasks read, subset and tokenised ONCE, and the weighted fitness over them for any
decoder (a merged model, a fused recipe, a DFS path, a plain source scored as a baseline).

Preparing once means every fitness a run builds (the candidates', and the plain one its baselines are scored
with) reads the very same items, so the numbers in best.json compare like with like.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import jax.numpy as jnp

from jaxmerge.errors import expect
from jaxmerge.fitness.fitness import make_fitness
from jaxmerge.fitness.generate import Decoder
from jaxmerge.fitness.lmeval.load import LmEvalRef
from jaxmerge.fitness.prepare import Prepared, prepare
from jaxmerge.fitness.tasks import load_items, load_task
from jaxmerge.fitness.tokenize import load_tokenizer


class TaskSpec(NamedTuple):
    """One fitness task as a run config names it: a jaxmerge task file, or an lm-eval task (`lm_eval`, then
    `task` is its YAML file or its name and `split` None means the task's own evaluation split)."""
    task: Path
    split: str | None
    weight: float
    subset: int  # 0: every item
    lm_eval: LmEvalRef | None = None


class Objective(NamedTuple):
    """One objective of a several-objective search: a task's fitness, or its mean answer length (negated)."""
    name: str   # as search.objectives names it: TASK or length:TASK
    part: int   # index into TaskSet.parts
    kind: str   # "score" | "length"


class TaskSet(NamedTuple):
    parts: tuple[tuple[float, Prepared], ...]  # (weight, prepared items) per task
    tokenizer: object
    specs: tuple[TaskSpec, ...] = ()
    objectives: tuple[Objective, ...] = ()
    image_token: int | None = None  # a VLM run's image token id (its image tasks carry cached features)

    def objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def describe(self) -> list[dict]:
        """The tasks as best.json and the model card name them."""
        return [{"split": s.split, **summary(p), "file": str(s.task), "weight": w}
                for s, (w, p) in zip(self.specs, self.parts)]


def summary(part) -> dict:
    """What best.json and the model card say about one prepared task."""
    if isinstance(part, Prepared):
        return {"task": part.task.name, "items": part.n, "metric": part.task.metric}
    return {"task": part.name, "split": part.split, "items": part.n, "metric": part.metric, "filter": part.filter,
            "source": "lm-eval"}


def prepare_tasks(specs: list[TaskSpec], tokenizer_dir, *, allow_test: bool, item_batch: int, seed: int,
                  objectives: tuple[str, ...] = (), tower=None) -> TaskSet:
    """Every task read, subset and tokenised once; `objectives` (search.objectives) resolved against them.
    `tower`: the vision tower of a VLM among the models (jaxmerge.vlm.checkpoint.Tower), which image tasks need;
    their image features are computed here, once."""
    tokenizer = load_tokenizer(tokenizer_dir)
    parts = []
    for ref in specs:
        if ref.lm_eval is not None:
            from jaxmerge.fitness.lmeval.suite import prepare_lmeval
            parts.append((ref.weight, prepare_lmeval(ref, tokenizer, tokenizer_dir, allow_test=allow_test,
                                                     item_batch=item_batch, seed=seed)))
            continue
        task = load_task(ref.task)
        items = fixed_subset(load_items(task, ref.split, allow_test=allow_test), ref.subset, seed)
        if task.images is not None:
            parts.append((ref.weight, image_task(task, items, tower, min(item_batch, len(items)))))
            continue
        pool = load_items(task, task.fewshot_split) if task.fewshot else None
        parts.append((ref.weight, prepare(task, items, tokenizer, fewshot_pool=pool,
                                          item_batch=min(item_batch, len(items)))))
    return TaskSet(tuple(parts), tokenizer, tuple(specs), resolve_objectives(objectives, parts),
                   None if tower is None else tower.spec.image_token)


def image_task(task, items, tower, item_batch: int) -> Prepared:
    """An image task prepared through the VLM's processor, its vision features cached (jaxmerge.vlm.tasks)."""
    expect(tower is not None, f"task {task.name}: expected a vision-language model among the models for this "
                              "image task, found only text models")
    expect(not task.fewshot, f"task {task.name}: expected fewshot 0 on an image task, found {task.fewshot}")
    from jaxmerge.vlm.processor import load_processor
    from jaxmerge.vlm.tasks import prepare_images
    return prepare_images(task, items, load_processor(tower.path), tower, item_batch=item_batch)


def resolve_objectives(names: tuple[str, ...], parts: list) -> tuple[Objective, ...]:
    """Each objective's task by name (a task file's `name`, an lm-eval task's name); an unknown name, or an
    answer length of a task that generates no answers, is one line."""
    known = [summary(p)["task"] for _, p in parts]
    out = []
    for name in names:
        kind, _, task = name.partition(":") if name.startswith("length:") else ("score", "", name)
        expect(task in known, f"search.objectives: expected task names among the fitness tasks {known}, found "
                              f"{task!r}")
        part = parts[known.index(task)][1]
        generates = part.task.generative if isinstance(part, Prepared) else bool(part.generate_rows)
        expect(kind == "score" or generates, f"search.objectives: expected {name} on a task that generates "
                                             f"answers, found {task} scored teacher-forced")
        out.append(Objective(name, known.index(task), kind))
    return tuple(out)


def task_fitness(spec, part, tokenizer, decoder: Decoder = Decoder(), image_token: int | None = None):
    """The fitness record of one prepared task (a jaxmerge task, an image task, or an lm-eval task)."""
    if isinstance(part, Prepared) and "features" in part.arrays:
        from jaxmerge.arch import ArchSpec
        from jaxmerge.vlm.model import LanguageSpec, image_decoder
        expect(isinstance(spec, ArchSpec) and image_decoder(decoder) is not None,
               f"task {part.task.name}: expected image tasks to score merged models or layer paths (memory.mode: "
               "materialize), found the fused decoder")
        return make_fitness(LanguageSpec(spec, image_token), part, tokenizer, decoder=image_decoder(decoder))
    if isinstance(part, Prepared):
        return make_fitness(spec, part, tokenizer, decoder=decoder)
    from jaxmerge.fitness.lmeval.fitness import make_lmeval_fitness
    return make_lmeval_fitness(spec, part, tokenizer, decoder=decoder)


def task_inputs(ref: TaskSpec) -> list[tuple[str, Path]]:
    """The files a task reads ("task" / "split", path): what `--resume` fingerprints."""
    if ref.lm_eval is not None:
        from jaxmerge.fitness.lmeval.load import input_files
        return input_files(ref.lm_eval)
    task = load_task(ref.task)
    found = [("task", Path(ref.task))] + [("split", split) for _, split in task.splits
                                          if isinstance(split, Path) and split.exists()]
    if task.images is not None:  # an image task reads its images too
        from jaxmerge.vlm.tasks import image_path
        images = (image_path(task, it, i) for split, _ in task.splits for i, it in enumerate(load_items(task, split)))
        found += [("image", p) for p in images if p.is_file()]  # a missing one is named when the task is prepared
    return found


def fixed_subset(items: list, n: int, seed: int) -> list:
    """A fixed uniform subset of n items shared by every candidate of every generation (0: all items)."""
    from jaxmerge.fitness.subset import random_subset, subset_items
    if n <= 0 or n >= len(items):
        return items
    return subset_items(items, random_subset(len(items), n, seed))


def weighted_fitness(spec, tasks: TaskSet, decoder: Decoder = Decoder()) -> Callable:
    """params -> f32: the weighted mean of the tasks' fitness (each pure; text metrics call back to the host).
    With objectives: params -> f32[1 + K], that mean first, then each objective (higher is better; an answer
    length negated), every task scored once."""
    parts = [(w, task_fitness(spec, p, tasks.tokenizer, decoder, tasks.image_token).measures)
             for w, p in tasks.parts]
    total = sum(w for w, _ in parts)

    def fitness(params):
        measured = [m(params) for _, m in parts]
        value = sum(w * v for (w, _), (v, _) in zip(parts, measured)) / total
        if not tasks.objectives:
            return value
        objectives = [measured[o.part][0] if o.kind == "score" else -measured[o.part][1] for o in tasks.objectives]
        return jnp.stack([value, *objectives]).astype(jnp.float32)

    return fitness
