"""Responses of one model -> lm-eval's per-document metric values, on the host, by lm-eval's own code.

The responses are what lm-eval's `hf` backend returns: (summed log-probability, is_greedy) per loglikelihood
request and the cut completion text per generate_until request. They are put on the task's own Instances, the
task's filter ensembles run (`task.apply_filters()`: regex, take_first, ...), and `task.process_results(doc,
filtered responses)` gives each document's metrics, exactly as lm_eval.evaluator does. The Instances are shared
by every candidate, so one lock serialises the calls (callbacks of several devices may run at once).
"""
from __future__ import annotations

import math
import threading

import numpy as np

from jaxmerge.fitness.lmeval import encode
from jaxmerge.fitness.lmeval.prepare import LmEvalPrepared

LOCK = threading.Lock()


def responses(prepared: LmEvalPrepared, tokenizer, logprob, greedy, tokens, lengths) -> list:
    """One response per instance, in instance order."""
    out: list = [None] * len(prepared.instances)
    for j, i in enumerate(prepared.loglik_rows):
        out[i] = (float(logprob[j]), bool(greedy[j]))
    for j, i in enumerate(prepared.generate_rows):
        out[i] = encode.completion(tokenizer, tokens[j][:int(lengths[j])], prepared.gen.until)
    return out


def doc_metrics(prepared: LmEvalPrepared, resps: list) -> list[dict]:
    """Every document's metrics (all of the task's) under the prepared filter."""
    with LOCK:
        for inst, resp in zip(prepared.instances, resps):
            inst.resps = [resp]
            inst.filtered_resps = {}
        prepared.task.apply_filters()
        return [prepared.task.process_results(doc, [prepared.instances[i].filtered_resps[prepared.filter]
                                                    for i in rows]) for doc, rows in prepared.docs]


def as_number(value) -> float:
    """A metric value as a float; anything else (None, a string) is NaN: the candidate scores like NaN fitness."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def doc_scores(prepared: LmEvalPrepared, tokenizer, logprob, greedy, tokens, lengths) -> np.ndarray:
    """[D] float32: the fitness metric per document (sign applied: higher is better)."""
    metrics = doc_metrics(prepared, responses(prepared, tokenizer, logprob, greedy, tokens, lengths))
    return np.asarray([prepared.sign * as_number(m[prepared.metric]) for m in metrics], np.float32)
