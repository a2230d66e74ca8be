"""The demo's synthetic skills, their disjoint train/dev/test splits, and task files in the jaxmerge format.

Each skill is a rule over short symbol sequences, so its prompt space is large (thousands to millions of
prompts) and a test split can be held out from training and from the search's dev split by construction.
Every split is a pure function of (seed, skill, split): the same seed gives byte-identical files everywhere.

Besides the four single skills there is one composed op, `cipher sort x` -> cipher(sort(x)): the base learns it
at 3-4 letters only (COMPOSED), and the demo's target is the same op at exactly 5 letters (TARGET), a length that
no model trains on for it; the sort and cipher specialists each learn their own skill at 5 letters, so the
target needs both at once, in sequence.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from jaxmerge.errors import expect

LETTERS = string.ascii_lowercase[:16]  # a..p: enough for ~570k distinct letter prompts per skill
TEMPLATE = "Q: {prompt}\nA:"
MAX_NEW_TOKENS = 8
# Drawn in this order, each excluding every earlier one: test first, so it never depends on the other sizes;
# dev_extra after train, so the search's extra dev rows are not training rows either.
SPLIT_IDS = {"test": 0, "dev": 1, "train": 2, "dev_extra": 3}


class Example(NamedTuple):
    prompt: str
    answer: str


SINGLE = ("reverse", "sort", "cipher", "add")  # the skills with a specialist and a task file each
COMPOSED, TARGET = "cipher_sort", "target"  # the composed op at 3-4 letters (the base's rows), at 5 (the target)


def _letters(rng: np.random.Generator, shortest: int = 3, longest: int = 5) -> list[str]:
    return list(rng.choice(list(LETTERS), size=int(rng.integers(shortest, longest + 1)), replace=False))


def _cipher_table(seed: int) -> dict[str, str]:
    """A fixed letter permutation with no fixed points (so 'cipher' is never 'copy'), chosen by the seed."""
    rng = np.random.default_rng([seed, 99])
    while True:
        perm = rng.permutation(len(LETTERS))
        if (perm != np.arange(len(LETTERS))).all():
            return {a: LETTERS[int(b)] for a, b in zip(LETTERS, perm)}


def make_skills(seed: int) -> dict[str, Callable[[np.random.Generator], Example]]:
    """skill name -> sampler of one example: the four single skills (the name is the prompt's first word), then
    the composed op at 3-4 letters (COMPOSED) and at 5 letters (TARGET), both prompted `cipher sort x`."""
    table = _cipher_table(seed)

    def composed(shortest: int, longest: int):
        def sample(rng):
            w = _letters(rng, shortest, longest)
            return Example("cipher sort " + " ".join(w), " ".join(table[c] for c in sorted(w)))
        return sample

    def reverse(rng):
        w = _letters(rng)
        return Example("reverse " + " ".join(w), " ".join(reversed(w)))

    def sort(rng):
        w = _letters(rng)
        return Example("sort " + " ".join(w), " ".join(sorted(w)))

    def cipher(rng):
        w = _letters(rng)
        return Example("cipher " + " ".join(w), " ".join(table[c] for c in w))

    def add(rng):
        xs = [int(x) for x in rng.integers(0, 10, size=int(rng.integers(2, 5)))]
        return Example("add " + " ".join(map(str, xs)), str(sum(xs)))

    return {"reverse": reverse, "sort": sort, "cipher": cipher, "add": add,
            COMPOSED: composed(3, 4), TARGET: composed(5, 5)}


def make_splits(seed: int, sizes: dict[str, int],
                skills: tuple[str, ...] | None = None) -> dict[str, dict[str, list[Example]]]:
    """skill -> split -> examples for `skills` (default: all); prompts are unique within and across splits (drawn
    in SPLIT_IDS order). COMPOSED and TARGET rows never meet: their letter counts differ."""
    out: dict[str, dict[str, list[Example]]] = {}
    for skill_id, (skill, sample) in enumerate(make_skills(seed).items()):
        if skills is not None and skill not in skills:
            continue
        seen: set[str] = set()
        out[skill] = {}
        for split in sorted(sizes, key=SPLIT_IDS.__getitem__):
            rng = np.random.default_rng([seed, skill_id, SPLIT_IDS[split]])
            rows: list[Example] = []
            while len(rows) < sizes[split]:
                ex = sample(rng)
                if ex.prompt not in seen:
                    seen.add(ex.prompt)
                    rows.append(ex)
            out[skill][split] = rows
    return out


def _write_jsonl(path: Path, rows: list[Example]) -> None:
    path.write_text("".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows))


def _write_task(task_dir: Path, name: str, dev: list[Example], test: list[Example]) -> Path:
    import yaml

    _write_jsonl(task_dir / f"{name}_dev.jsonl", dev)
    _write_jsonl(task_dir / f"{name}_test.jsonl", test)
    spec = {"name": name, "splits": {"dev": f"{name}_dev.jsonl", "test": f"{name}_test.jsonl"},
            "template": TEMPLATE, "metric": "greedy_match", "max_new_tokens": MAX_NEW_TOKENS, "stop": ["\n"]}
    path = task_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_tasks(task_dir: Path, seed: int, dev: int, test: int, train: int = 0, dev_extra: int = 0,
                target: dict[str, int] | None = None) -> tuple[dict[str, Path], Path]:
    """One task file per single skill plus 'target' (the composed op at 5 letters); returns (skills, target).

    A skill's dev split is `dev` rows drawn before the train split and `dev_extra` drawn after it, so pass the
    `train` size the models were trained with: no dev row is then a training row (nor a test row). The target's
    sizes are `target` ({"dev": n, "test": n}; default: the skills' dev + dev_extra and test); no model trains
    on any 5-letter composed row."""
    target = target or {"dev": dev + dev_extra, "test": test}
    expect(dev > 0 and test > 0 and min(train, dev_extra) >= 0 and min(target.values()) > 0,
           f"expected positive split sizes, found dev={dev} test={test} train={train} dev_extra={dev_extra} "
           f"target={target}")
    splits = make_splits(seed, {"dev": dev, "test": test, "train": train if dev_extra else 0,
                                "dev_extra": dev_extra}, SINGLE)
    for parts in splits.values():
        parts["dev"] = parts["dev"] + parts.pop("dev_extra")
    task_dir.mkdir(parents=True, exist_ok=True)
    skills = {s: _write_task(task_dir, s, v["dev"], v["test"]) for s, v in splits.items()}
    composed = make_splits(seed, target, (TARGET,))[TARGET]
    return skills, _write_task(task_dir, TARGET, composed["dev"], composed["test"])
