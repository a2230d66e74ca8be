r"""Host-side text metrics: stop strings, MGSM-style last-number matching, normalised exact match.

These run on decoded strings (outside jit, via `jax.pure_callback` inside the fitness), because number and
string normalisation are not token-level questions: "1,234", "1234" and "1234.0" are one answer.

Two last-number rules:
- `exact_match_number` (robust): the last number with its sign and thousands separators, compared exactly as a
  Decimal: "-1,234.5" is -1234.5, "x-5" is 5, "1,23" is 1 and 23.
- `exact_match_number_paper` (the paper's evaluation code, evomerge/eval/ja_mgsm.py): the last match of
  `\d*\.?\d+`, then `float(match.replace(",", ""))`, compared with `float(answer)` by `==`. The regex never
  matches a comma, so its replace does nothing and "1,234" reads as 234 (the last group); a sign is never part
  of the match ("-5" is 5); "3.14.15" reads as .15; "7." reads as 7. The answer must be a plain number.
Custom metrics (`metric: python:package.module:function`) are host functions of (completion, answer, row).
"""
from __future__ import annotations

import re
import string
import unicodedata
from decimal import Decimal, InvalidOperation

# A number: an optional sign not glued to a preceding word ("x-5" is not -5), then either digits grouped by
# thousands separators (1,234,567) or plain digits, then an optional decimal part. Grouping is tried first so
# "1,234" is one number; "1,23" is two numbers (1 and 23), as in a list.
NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<=\w)(?:\d{1,3}(?:,\d{3})+|\d+)"
                    r"(?:\.\d+)?")
PUNCT = str.maketrans("", "", string.punctuation)


def truncate(text: str, stop: tuple[str, ...]) -> str:
    """Cut the completion at the first occurrence of any stop string (the stop string itself is dropped)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def last_number(text: str) -> Decimal | None:
    """The last number in `text` as an exact Decimal (separators removed), or None if there is none."""
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return Decimal(found[-1].replace(",", "").replace("−", "-"))
    except InvalidOperation:
        return None


def exact_match_number(completion: str, answer: str) -> float:
    """1.0 iff the completion's last number equals the answer's number (numerically: 12 == 12.0)."""
    got, want = last_number(completion), last_number(answer)
    return float(got is not None and want is not None and got == want)


PAPER_NUMBER = re.compile(r"\d*\.?\d+")


def paper_number(text: str) -> float | None:
    r"""The paper's answer extraction: the last `\d*\.?\d+` match as a float (see the module docstring)."""
    found = PAPER_NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def exact_match_number_paper(completion: str, answer: str) -> float:
    """1.0 iff the paper's extraction of the completion equals float(answer)."""
    return float(paper_number(completion) == float(answer))


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(PUNCT)
    return " ".join(text.split())


def exact_match(completion: str, answer: str) -> float:
    return float(normalise(completion) == normalise(answer))


TEXT_METRICS = {"exact_match_number": exact_match_number, "exact_match": exact_match,
                "exact_match_number_paper": exact_match_number_paper}
