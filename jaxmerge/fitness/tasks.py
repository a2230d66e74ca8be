"""Task files: a YAML spec naming JSONL splits, read strictly into frozen `Task` / `Item` values.

The YAML keys (name, splits, template, metric, max_new_tokens, stop, fewshot, fewshot_split, chat_template)
are a contract shared with task authors; optional keys may be added, existing ones never change meaning.
Everything is validated on the host, once, so the jitted fitness only ever sees well-formed arrays.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple


from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.yamlfile import read_yaml

METRICS = ("exact_match_number", "exact_match", "greedy_match", "loglik", "choice", "perplexity")
GENERATIVE = ("exact_match_number", "exact_match")
KEYS = frozenset({"name", "splits", "template", "metric", "max_new_tokens", "stop", "fewshot", "fewshot_split",
                  "chat_template"})


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
    raw = read_yaml(path, "a task YAML")
    expect(isinstance(raw, dict), f"{path}: expected a mapping, found {type(raw).__name__}")
    unknown = sorted(set(raw) - KEYS)
    expect(not unknown, f"{path}: expected keys among {sorted(KEYS)}, found unknown {unknown}")
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
    if task.fewshot:
        expect(task.fewshot_split in dict(task.splits),
               f"{path}: fewshot needs fewshot_split in {sorted(dict(task.splits))}, found {task.fewshot_split!r}")


def load_items(task: Task, split: str, *, allow_test: bool = True, limit: int | None = None) -> list[Item]:
    """Read one split. Evolution passes allow_test=False: searching on a split named `test` leaks it."""
    expect(allow_test or split != "test", f"task {task.name}: expected a non-test split for evolution, found "
                                          "'test' (pass allow_test to override)")
    items = read_jsonl(task.split_path(split), task.metric == "choice")
    expect(len(items) > 0, f"task {task.name}: expected at least one item in split {split!r}, found none")
    return items if limit is None else items[:limit]


def read_jsonl(path: Path, needs_choices: bool) -> list[Item]:
    expect(path.is_file(), f"expected a JSONL split file, found nothing at {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise JaxmergeError(f"{path.name}: expected UTF-8 text, found byte {e.object[e.start]:#04x} at offset "
                            f"{e.start}") from None
    return [_item(line, f"{path.name}:{number}", needs_choices)
            for number, line in enumerate(lines, start=1) if line.strip()]


def _item(line: str, where: str, needs_choices: bool) -> Item:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise JaxmergeError(f"{where}: expected a JSON object, found malformed JSON ({e.msg})") from None
    expect(isinstance(row, dict), f"{where}: expected a JSON object, found {type(row).__name__}")
    for key in ("prompt", "answer"):
        expect(isinstance(row.get(key), str), f"{where}: expected a string field '{key}', found {row.get(key)!r}")
    choices = row.get("choices", [])
    expect(isinstance(choices, list) and all(isinstance(c, str) for c in choices),
           f"{where}: expected 'choices' to be a list of strings, found {choices!r}")
    if needs_choices:
        expect(row["answer"] in choices, f"{where}: expected 'answer' to be one of 'choices', found "
                                         f"{row['answer']!r} not in {choices!r}")
    return Item(row["prompt"], row["answer"], tuple(choices))
