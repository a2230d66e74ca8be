"""One generative item's score on the host: the task's text metric (built in, or a user's `python:` function),
then the target-language gate. Called by the fitness's host callback for every completion.

A custom metric is `metric: python:package.module:function`, a host function (completion, answer, row) ->
float, where `row` is the split's whole row (a dict: every column, not only prompt and answer). It is imported
when the task file is read (a name that does not import is refused there, in one line). A call that raises or
returns something that is not a real number scores NaN, so the candidate's fitness is NaN and the search
counts it as non-finite (it can never win); the first such error of each metric is printed once on stderr.
"""
from __future__ import annotations

import importlib
import math
import sys
import threading
from typing import Callable

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.fitness.metrics import TEXT_METRICS

PREFIX = "python:"
_REPORTED: set[str] = set()
_LOCK = threading.Lock()


def custom_metric(name: str, where: str) -> Callable:
    """The function a `python:package.module:function` metric names, imported now."""
    target = name[len(PREFIX):]
    module, _, attr = target.partition(":")
    expect(bool(module) and bool(attr), f"{where}: expected metric as python:package.module:function, found {name!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise JaxmergeError(f"{where}: expected metric {name} to import, found {type(e).__name__}: {e}") from None
    expect(callable(fn), f"{where}: expected metric {name} to be a function, found {type(fn).__name__}")
    return fn


def metric_function(task, tokenizer=None) -> Callable:
    """(completion, item) -> the metric's raw value for one item; rouge_l and the metrics of image tasks take the
    best over the item's references (its answer and a row's `answers` list)."""
    if task.metric.startswith(PREFIX):
        fn = custom_metric(task.metric, f"task {task.name}")
        return lambda text, item: fn(text, item.answer, item.row)
    if task.metric == "rouge_l":
        from jaxmerge.fitness.rouge import rouge_l_scorer
        expect(task.rouge_tokens != "model" or tokenizer is not None,
               f"task {task.name}: rouge_tokens: model needs the model's tokenizer, found none")
        rouge = rouge_l_scorer(task.rouge_tokens, tokenizer)
        return lambda text, item: rouge(text, references(item))
    builtin = TEXT_METRICS[task.metric]
    if getattr(task, "images", None) is not None:
        return lambda text, item: max(builtin(text, ref) for ref in references(item))
    return lambda text, item: builtin(text, item.answer)


def references(item) -> list[str]:
    """An item's reference answers: its answer, then the strings of its row's `answers` list."""
    extra = item.row.get("answers", []) if isinstance(item.row, dict) else []
    return [item.answer, *(str(a) for a in extra if isinstance(a, (str, int, float)))]


def report_once(metric: str, message: str) -> None:
    with _LOCK:
        if metric in _REPORTED:
            return
        _REPORTED.add(metric)
    print(f"warning: {message} (scored as NaN: the candidate's fitness is NaN; later errors of this metric are "
          "not shown)", file=sys.stderr, flush=True)


def as_score(value, metric: str, where: str) -> float:
    """A metric's return value as a float; anything but a real number is NaN, reported once."""
    if isinstance(value, (int, float)) and not isinstance(value, complex):
        return float(value)
    report_once(metric, f"{where}: metric {metric} returned {type(value).__name__} {value!r:.60}, not a number")
    return math.nan


def item_scorer(task, tokenizer=None) -> Callable[[str, object, int], float]:
    """(completion, item, index) -> score: the metric, times the language gate when the task names a language."""
    metric, language = metric_function(task, tokenizer), getattr(task, "language", None)
    if language:
        from jaxmerge.fitness.language import in_language

    def score(text: str, item, index: int) -> float:
        where = f"task {task.name}: item {index}"
        try:
            value = as_score(metric(text, item), task.metric, where)
        except Exception as e:  # noqa: BLE001 - a user's function may raise anything: NaN, said once
            report_once(task.metric, f"{where}: metric {task.metric} raised {type(e).__name__}: {e}")
            return math.nan
        return value * float(in_language(text, language)) if language and value == value else value
    return score
