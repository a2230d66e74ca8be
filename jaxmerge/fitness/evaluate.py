"""Host-driven evaluation of one model: the fitness's own chunk functions, one jitted call per item chunk.

Used by `jaxmerge eval` (and for reporting a winner): the same `outputs`/`scores` the fitness compiles, so an
evaluated number is the number evolution saw, plus per-item records (completion, log-likelihoods) for JSONL.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from jaxmerge.fitness.chunking import chunks
from jaxmerge.fitness.fitness import Fitness, aggregate, completion


def evaluate(fit: Fitness, params, tokenizer=None, on_chunk: Callable[[int], None] | None = None):
    """-> (metric value as float, list of per-item record dicts). `on_chunk(items_done)` reports progress."""
    run = jax.jit(lambda p, chunk: (lambda out: (out, fit.scores(out, chunk)))(fit.outputs(p, chunk)))
    data = chunks(fit.prepared)
    outs, scores = [], []
    for group in data.groups:
        for c in range(next(iter(group.values())).shape[0]):
            out, score = jax.device_get(run(params, {k: v[c] for k, v in group.items()}))
            outs.append(out)
            scores.append(score)
            if on_chunk is not None:
                on_chunk(min(len(scores) * fit.prepared.item_batch, fit.prepared.n))
    outs = jax.tree.map(lambda *xs: np.concatenate(xs)[data.slot], *outs)
    scores = np.concatenate(scores)[data.slot]
    value = float(aggregate(fit.prepared.task.metric, scores, fit.prepared.counts, fit.weights))
    return value, records(fit, tokenizer, outs, scores)


def records(fit: Fitness, tokenizer, outs, scores: np.ndarray) -> list[dict]:
    prepared = fit.prepared
    rows = []
    for i, item in enumerate(prepared.items):
        row = {"index": i, "prompt": item.prompt, "answer": item.answer, "score": float(scores[i])}
        if prepared.task.generative:
            row["completion"] = completion(tokenizer, prepared, outs.tokens[i], int(outs.lengths[i]))
        elif prepared.task.metric == "choice":
            k = len(item.choices)
            row["choices"] = list(item.choices)
            row["logliks"] = [float(x) for x in outs.logprob[i, :k]]
            row["prediction"] = item.choices[int(np.argmax(outs.logprob[i, :k]))]
        else:
            row.update(loglik=float(outs.logprob[i, 0]), tokens=int(outs.count[i, 0]))
        rows.append(row)
    return rows
