"""A recipe's `chat_template` (mergekit 0.1.5's key) -> the Jinja text written into the output tokenizer.

    auto          the template most of the merged models' tokenizers carry (the first of those tied); none: none
    NAME          one of mergekit's named templates (chatml, llama3, mistral, alpaca, exaone in 0.1.5): a short
                  single-line value without "{" names one. Their text is mergekit's: it is read from the installed
                  mergekit package (found, not imported); jaxmerge ships no copy of it
    Jinja text    anything else of at least 20 characters with a "{", taken as it is
Anything else is refused, as mergekit refuses it.
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

from jaxmerge.errors import expect
from jaxmerge.merge.vocab import has_tokenizer, load_tokenizer


def _names_dir() -> Path | None:
    """mergekit's folder of named templates, located without importing mergekit (or torch)."""
    spec = importlib.util.find_spec("mergekit")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "_data" / "chat_templates"


def is_name(value: str) -> bool:
    return len(value) < 256 and "\n" not in value and "{" not in value


def named(value: str) -> str | None:
    """The text of mergekit's template `value`, or None when mergekit has no template of that name."""
    folder = _names_dir()
    if folder is None or not (folder / f"{value}.jinja").is_file():
        return None
    return (folder / f"{value}.jinja").read_text(encoding="utf-8")


def auto(paths: list[Path]) -> str | None:
    """The most common template among the tokenizers of `paths` (stripped, as mergekit compares them)."""
    found = []
    for path in paths:
        if not has_tokenizer(path):
            continue
        template = load_tokenizer(path, "chat_template: auto").chat_template
        template = template.get("default") if isinstance(template, dict) else template
        if template:
            found.append(template.strip())
    return Counter(found).most_common(1)[0][0] if found else None


def resolve(value: str, paths: list[Path]) -> str | None:
    """The template text for the recipe's `chat_template` (module doc); `paths`: the merged models, in order."""
    if value == "auto":
        return auto(paths)
    if is_name(value):
        text = named(value)
        known = sorted(p.stem for p in _names_dir().glob("*.jinja")) if _names_dir() else "(none: no mergekit)"
        expect(text is not None, f"chat_template: expected one of mergekit's template names {known}, auto, or "
                                 f"Jinja text, found {value!r}")
        return text
    expect(len(value) >= 20 and "{" in value,
           f"chat_template: expected Jinja text (at least 20 characters with a '{{'), found {value[:40]!r}")
    return value
