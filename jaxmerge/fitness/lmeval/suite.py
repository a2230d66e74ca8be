"""An lm-eval fitness task of a run config -> its prepared requests (load, configure, subset, build, tokenise)."""
from __future__ import annotations

from pathlib import Path

from jaxmerge.errors import expect
from jaxmerge.fitness.lmeval.load import build, configure, eval_split, load
from jaxmerge.fitness.lmeval.prepare import LmEvalPrepared, prepare


def subset_samples(total: int, n: int, seed: int) -> list[int] | None:
    """The documents of a fixed uniform subset (the same rule as jaxmerge tasks), or None for all of them."""
    if n <= 0 or n >= total:
        return None
    from jaxmerge.fitness.subset import random_subset
    return [int(i) for i in random_subset(total, n, seed).indices]


def prepare_lmeval(spec, tokenizer, model_dir, *, allow_test: bool, item_batch: int, seed: int) -> LmEvalPrepared:
    """`spec` is a suite.TaskSpec whose `lm_eval` is set; the model's max_position_embeddings is lm-eval's
    max_length (HFLM reads it from the same config)."""
    from jaxmerge.arch import ArchSpec
    ref = spec.lm_eval
    task = load(ref)
    configure(task, ref)
    split, name = eval_split(task), task.config.task
    expect(split is not None, f"lm_eval task {name}: expected a test or validation split, found neither")
    expect(allow_test or split != "test", f"lm_eval task {name}: expected a non-test split for evolution, found "
                                          "'test' (name another with split:, or set fitness.allow_test_split: true "
                                          "in the run config to search on it anyway)")
    samples = subset_samples(len(task.eval_docs), spec.subset, seed)
    instances = build(task, samples)
    max_length = ArchSpec.from_dir(Path(model_dir)).max_position_embeddings
    return prepare(task, instances, tokenizer, max_length=max_length, metric=ref.metric, filter_key=ref.filter,
                   item_batch=item_batch, split=split)
