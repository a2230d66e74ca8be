"""Task files: a YAML spec naming JSONL splits, read strictly into frozen `Task` / `Item` values.

The YAML keys (name, splits, template, metric, max_new_tokens, stop, fewshot, fewshot_split, chat_template)
are a contract shared with task authors; optional keys may be added, existing ones never change meaning.
Everything is validated on the host, once, so the jitted fitness only ever sees well-formed arrays.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from jaxmerge.errors import JaxmergeError, expect, expect_keys
from jaxmerge.files import MB, read_text
from jaxmerge.jsonfile import NumberText, parse_json
from jaxmerge.yamlfile import read_yaml

METRICS = ("exact_match_number", "exact_match", "greedy_match", "loglik", "choice", "perplexity")
GENERATIVE = ("exact_match_number", "exact_match")
KEYS = frozenset({"name", "splits", "template", "metric", "max_new_tokens", "stop", "fewshot", "fewshot_split",
                  "chat_template"})
MAX_SPLIT = 512 * MB  # a JSONL split larger than this is refused from its size, before it is read


class Item(NamedTuple):
    """One problem. `choices` is () except for the `choice` metric, where `answer` is one of them."""
    prompt: str
    answer: str
    choices: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    splits: tuple[tuple[str, Path], ...]  # (split name, absolute JSONL path)
    template: str = "{prompt}"
    metric: str = "exact_match"
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()
    fewshot: int = 0
    fewshot_split: str | None = None
    chat_template: bool = False

    @property
    def generative(self) -> bool:
        return self.metric in GENERATIVE

    def split_path(self, split: str) -> Path:
        found = dict(self.splits)
        expect(split in found, f"task {self.name}: expected a split in {sorted(found)}, found {split!r}")
        return found[split]


def load_task(path: str | Path) -> Task:
    """Read and validate a task YAML; split paths are resolved relative to the YAML's directory."""
    path = Path(path)
    raw = expect_keys(read_yaml(path, "a task YAML"), KEYS, str(path))
    expect(isinstance(raw.get("name"), str), f"{path}: expected a string 'name', found {raw.get('name')!r}")
    splits = raw.get("splits")
    expect(isinstance(splits, dict) and len(splits) > 0 and all(isinstance(v, str) for v in splits.values()),
           f"{path}: expected 'splits' mapping split names to JSONL files, found {splits!r}")
    metric = raw.get("metric", "exact_match")
    expect(metric in METRICS, f"{path}: expected metric in {METRICS}, found {metric!r}")
    task = Task(name=raw["name"], splits=tuple((str(k), (path.parent / v).absolute()) for k, v in splits.items()),
                template=_typed(raw, "template", str, "{prompt}", path), metric=metric,
                max_new_tokens=_typed(raw, "max_new_tokens", int, 32, path),
                stop=tuple(_typed(raw, "stop", list, [], path)), fewshot=_typed(raw, "fewshot", int, 0, path),
                fewshot_split=raw.get("fewshot_split"), chat_template=_typed(raw, "chat_template", bool, False, path))
    _check(task, path)
    return task


def _typed(raw: dict, key: str, kind: type, default, path: Path):
    value = raw.get(key, default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    expect(ok, f"{path}: expected '{key}' to be {kind.__name__}, found {value!r}")
    return value


def _check(task: Task, path: Path) -> None:
    expect("{prompt}" in task.template, f"{path}: expected '{{prompt}}' in template, found {task.template!r}")
    expect(task.max_new_tokens >= 1, f"{path}: expected max_new_tokens >= 1, found {task.max_new_tokens}")
    expect(all(isinstance(s, str) and s for s in task.stop), f"{path}: expected non-empty stop strings, "
                                                              f"found {list(task.stop)!r}")
    expect(task.fewshot >= 0, f"{path}: expected fewshot >= 0, found {task.fewshot}")
    for key, text in (("template", task.template), *(("stop", s) for s in task.stop)):
        text_field(text, key, str(path))
    if task.fewshot:
        expect(task.fewshot_split in dict(task.splits),
               f"{path}: fewshot needs fewshot_split in {sorted(dict(task.splits))}, found {task.fewshot_split!r}")


def load_items(task: Task, split: str, *, allow_test: bool = True, limit: int | None = None) -> list[Item]:
    """Read one split. Evolution passes allow_test=False: searching on a split named `test` leaks it."""
    expect(allow_test or split != "test", f"task {task.name}: expected a non-test split for evolution, found "
                                          "'test' (set fitness.allow_test_split: true in the run config to "
                                          "search on it anyway)")
    items = read_jsonl(task.split_path(split), task.metric == "choice")
    expect(len(items) > 0, f"task {task.name}: expected at least one item in split {split!r}, found none")
    return items if limit is None else items[:limit]


def read_jsonl(path: Path, needs_choices: bool) -> list[Item]:
    """Items of a JSONL split: one JSON object per non-blank line, read through the guarded reader."""
    lines = read_text(path, "a JSONL split file", MAX_SPLIT).splitlines()
    return [_item(line, f"{path.name}:{number}", needs_choices)
            for number, line in enumerate(lines, start=1) if line.strip()]


def _item(line: str, where: str, needs_choices: bool) -> Item:
    row = parse_json(line, where, numbers_as_text=True, expected="a JSON object")
    expect(isinstance(row, dict), f"{where}: expected a JSON object, found {type(row).__name__}")
    expect(isinstance(row.get("prompt"), str) and not isinstance(row["prompt"], NumberText),
           f"{where}: expected a string field 'prompt', found {row.get('prompt')!r}")
    prompt, answer = text_field(row["prompt"], "prompt", where), answer_text(row.get("answer"), "answer", where)
    choices = row.get("choices", [])
    expect(isinstance(choices, list), f"{where}: expected 'choices' to be a list of strings or numbers, found "
                                      f"{choices!r}")
    choices = tuple(answer_text(c, "choices", where) for c in choices)
    if needs_choices:
        expect(answer in choices, f"{where}: expected 'answer' to be one of 'choices', found {answer!r} not in "
                                  f"{list(choices)!r}")
    return Item(prompt, answer, choices)


def answer_text(value: Any, key: str, where: str) -> str:
    """An answer or a choice: a string, or a JSON number taken as the text it is written with (`7` -> "7",
    `7.0` -> "7.0"; exponents are refused: write `1000`, not `1e3`). Booleans and null are refused."""
    if isinstance(value, NumberText):
        expect("e" not in value.lower(), f"{where}: expected '{key}' as a plain number or a string, found "
                                         f"{value} (write the number out, or quote it)")
        return str(value)
    expect(isinstance(value, str), f"{where}: expected a string field '{key}' (or a number), found {value!r}")
    return text_field(value, key, where)


def text_field(value: str, key: str, where: str) -> str:
    """A string that UTF-8 can carry: a lone surrogate (JSON "\\ud800") would break the tokenizer later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise JaxmergeError(f"{where}: expected valid Unicode text in '{key}', found a lone surrogate "
                            f"U+{ord(value[e.start]):04X} at character {e.start}") from None
    return str(value)
