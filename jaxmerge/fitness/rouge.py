"""ROUGE-L (F-measure, the best over an item's reference answers) from the rouge-score library.

rouge-score's own tokeniser keeps only ASCII letters and digits, so a Japanese answer would score on nothing;
the task's `rouge_tokens` picks the units compared instead: `words` (rouge-score's default), `chars` (every
non-space character, for languages written without spaces, close to the paper's morphological units) or `model`
(the model's own tokenizer's pieces).
"""
from __future__ import annotations

from typing import Callable

from jaxmerge.errors import JaxmergeError

TOKENS = ("words", "chars", "model")


class _Units:
    """The tokeniser object rouge-score calls: `tokenize(text) -> list[str]`."""

    def __init__(self, split: Callable[[str], list[str]]):
        self.tokenize = split


def units(kind: str, tokenizer=None):
    if kind == "words":
        return None
    if kind == "chars":
        return _Units(lambda text: [c for c in text if not c.isspace()])
    return _Units(lambda text: [str(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]])


def rouge_l_scorer(kind: str = "words", tokenizer=None) -> Callable[[str, list[str]], float]:
    """(completion, references) -> the best ROUGE-L F-measure against any reference."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise JaxmergeError("expected the rouge-score package for metric rouge_l (pip install "
                            "'jaxmerge[vlm]'), found it missing") from None
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=units(kind, tokenizer))
    return lambda text, refs: max(scorer.score(ref, text)["rougeL"].fmeasure for ref in refs)
