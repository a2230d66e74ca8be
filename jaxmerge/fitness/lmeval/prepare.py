"""An lm-eval task's requests -> fixed-shape host arrays, once: what the compiled fitness reads.

loglikelihood requests (a multiple-choice document makes one per choice) become left-padded rows [R, S] of
context + continuation tokens with the continuation marked in `target`, scored teacher-forced; generate_until
requests become left-padded prompts [G, P], decoded greedily for max_gen_toks. Both are padded up to a whole
number of `item_batch` chunks by repeating the last row (the copies are never read back). The documents keep
lm-eval's Instance objects, which its filters and process_results read on the host (results.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxmerge.errors import expect
from jaxmerge.fitness.lmeval import encode
from jaxmerge.fitness.prepare import stop_patterns
from jaxmerge.fitness.tokenize import eos_ids, left_pad, pad_id, padded_length


class LmEvalPrepared(NamedTuple):
    task: object                    # the lm-eval Task: its filters and process_results score the responses
    name: str
    metric: str
    filter: str
    sign: float                     # +1, or -1 for a metric where lower is better (fitness is higher-is-better)
    instances: tuple                # lm-eval Instances, in request order
    docs: tuple                     # (doc, request indices in instances order) per document
    loglik: dict[str, np.ndarray]   # tokens / mask / target [chunks, b, S]; rows: instances[loglik_rows]
    loglik_rows: tuple[int, ...]
    generate: dict[str, np.ndarray]  # tokens / mask [chunks, b, P]; rows: instances[generate_rows]
    generate_rows: tuple[int, ...]
    gen: encode.Generation | None
    item_batch: int
    pad: int
    eos: tuple[int, ...]
    split: str
    stops: np.ndarray | None = None  # the until strings as token ids (see fitness.prepare.stop_patterns)

    @property
    def n(self) -> int:
        return len(self.docs)


def _chunked(arrays: dict[str, np.ndarray], rows: int, batch: int) -> dict[str, np.ndarray]:
    """[rows, ...] -> [chunks, b, ...] with b = min(batch, rows), the last row repeated to fill the last chunk."""
    b = min(batch, rows)
    take = np.minimum(np.arange(-(-rows // b) * b), rows - 1)
    return {k: v[take].reshape(-1, b, *v.shape[1:]) for k, v in arrays.items()}


def loglik_arrays(tokenizer, requests: list, max_length: int, pad: int, batch: int) -> dict[str, np.ndarray]:
    rows, targets = [], []
    for context, continuation in (r.args for r in requests):
        row, n_cont = encode.loglikelihood_row(tokenizer, context, continuation, max_length)
        rows.append(row)
        targets.append([0] * (len(row) - n_cont) + [1] * n_cont)
    length = padded_length(max(map(len, rows)))
    tokens, mask = left_pad(rows, length, pad)
    target, _ = left_pad(targets, length, 0)
    return _chunked({"tokens": tokens, "mask": mask, "target": target}, len(rows), batch)


def generate_arrays(tokenizer, requests: list, max_length: int, pad: int, batch: int, name: str):
    gens = {encode.generation(tokenizer, r.args[1], f"lm_eval task {name}") for r in requests}
    expect(len(gens) == 1, f"lm_eval task {name}: expected one set of generation_kwargs, found {len(gens)}")
    gen = gens.pop()
    rows = [encode.generation_context(tokenizer, r.args[0], max_length, gen.max_gen_toks) for r in requests]
    tokens, mask = left_pad(rows, padded_length(max(map(len, rows))), pad)
    return _chunked({"tokens": tokens, "mask": mask}, len(rows), batch), gen


def pick(task, metric: str | None, filter_key: str | None) -> tuple[str, str, float]:
    """The metric and filter the fitness reads, each checked to exist; a metric must aggregate by the mean."""
    from lm_eval.api.metrics import mean
    name, aggregations = task.config.task, task.aggregation()
    metric = metric or next(iter(aggregations))
    expect(metric in aggregations, f"lm_eval task {name}: expected metric in {sorted(aggregations)}, found "
                                   f"{metric!r}")
    expect(aggregations[metric] is mean, f"lm_eval task {name}: expected metric {metric} to be aggregated by "
                                         f"the mean (a per-document fitness), found {aggregations[metric].__name__}")
    filters = [f.name for f in getattr(task, "_filters", [])] or ["none"]
    filter_key = filter_key or filters[0]
    expect(filter_key in filters, f"lm_eval task {name}: expected filter in {filters}, found {filter_key!r}")
    return metric, filter_key, 1.0 if task.higher_is_better().get(metric, True) else -1.0


def prepare(task, instances: list, tokenizer, *, max_length: int, metric: str | None, filter_key: str | None,
            item_batch: int, split: str) -> LmEvalPrepared:
    name = task.config.task
    metric, filter_key, sign = pick(task, metric, filter_key)
    by_doc: dict[int, list[int]] = {}
    for i, inst in enumerate(instances):
        by_doc.setdefault(inst.doc_id, []).append(i)
    docs = tuple((instances[rows[0]].doc, tuple(sorted(rows, key=lambda i: instances[i].idx)))
                 for _, rows in sorted(by_doc.items()))
    pad, batch = pad_id(tokenizer), max(1, item_batch)
    ll = tuple(i for i, r in enumerate(instances) if r.request_type == "loglikelihood")
    gen_rows = tuple(i for i, r in enumerate(instances) if r.request_type == "generate_until")
    loglik = loglik_arrays(tokenizer, [instances[i] for i in ll], max_length, pad, batch) if ll else {}
    generate, gen = (generate_arrays(tokenizer, [instances[i] for i in gen_rows], max_length, pad, batch, name)
                     if gen_rows else ({}, None))
    stops = stop_patterns(tokenizer, gen.until) if gen else None
    return LmEvalPrepared(task, name, metric, filter_key, sign, tuple(instances), docs, loglik, ll, generate,
                          gen_rows, gen, batch, pad, eos_ids(tokenizer), split, stops)
