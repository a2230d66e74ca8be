"""The paper's target-language gate: an answer counts only if it is written in the task's `language`.

The paper's evaluation (MGSM-JA) scores a response as correct only when it is correct AND fastText's lid.176
model gives `__label__ja` a probability above 0.5 on the response with its newlines removed. fastText's model
ships in no package (it is a download), so the classifier here is py3langid (langid.py's model, shipped inside
the package, offline; its model's ISO 639-1 codes): the rule is the paper's (probability of the target
language, normalised over all languages, above 0.5, newlines removed), the model is not, so on short or mixed
responses the two can disagree. Loaded once per process, on first use.
"""
from __future__ import annotations

import functools
import importlib.util

from jaxmerge.errors import expect

THRESHOLD = 0.5
EXTRA = "pip install 'jaxmerge[langid]'"


@functools.lru_cache(maxsize=1)
def identifier():
    from py3langid import langid
    return langid.LanguageIdentifier.from_modelpath(langid.MODEL_DIR / langid.MODEL_FILE, norm_probs=True)


def check_language(language: str, where: str) -> str:
    """A language code the classifier knows (refused in one line otherwise, or when it is not installed)."""
    expect(importlib.util.find_spec("py3langid") is not None,
           f"{where}: expected py3langid for the language gate ({EXTRA}), found it not installed")
    known = identifier().nb_classes
    expect(language in known, f"{where}: expected language as one of the classifier's codes {sorted(known)}, "
                              f"found {language!r}")
    return language


def probability(text: str, language: str) -> float:
    """The classifier's normalised probability that `text` (newlines removed, as the paper does) is `language`."""
    return float(dict(identifier().rank(text.replace("\n", ""))).get(language, 0.0))


def in_language(text: str, language: str) -> bool:
    return probability(text, language) > THRESHOLD
