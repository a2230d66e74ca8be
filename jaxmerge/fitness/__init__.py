"""Fitness: tasks, tokenisation, jitted greedy decoding and teacher-forced scoring, metrics, subset fitness.

Typical use (the evolution engine):

    task = load_task("arith.yml")
    items = load_items(task, "dev", allow_test=False)          # evolving on `test` is refused
    tok = load_tokenizer(model_dir)
    prepared = prepare(task, items, tok, fewshot_pool=..., item_batch=16)
    fit = make_fitness(spec, prepared, tok)                    # fit.fitness(params, key=None) -> f32
    scores = jax.vmap(fit.fitness)(population_params)          # or lax.map(..., batch_size=b)

See fitness.py (the fitness contract), generate.py (`Decoder`, `greedy`), score.py, subset.py.
"""
from jaxmerge.fitness.fitness import Fitness, aggregate, make_fitness
from jaxmerge.fitness.generate import Decoder, Generated, greedy, greedy_jit
from jaxmerge.fitness.prepare import Prepared, prepare
from jaxmerge.fitness.score import Scored, score, score_jit
from jaxmerge.fitness.tasks import Item, Task, load_items, load_task
from jaxmerge.fitness.tokenize import load_tokenizer

__all__ = ["Decoder", "Fitness", "Generated", "Item", "Prepared", "Scored", "Task", "aggregate", "greedy",
           "greedy_jit", "load_items", "load_task", "load_tokenizer", "make_fitness",
           "prepare", "score", "score_jit"]
