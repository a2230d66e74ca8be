"""Task files: a YAML spec naming its splits, read strictly into frozen `Task` / `Item` values.

The YAML keys (name, splits, template, metric, max_new_tokens, stop, fewshot, fewshot_split, chat_template,
columns) are a contract shared with task authors; optional keys may be added, existing ones never change meaning.
A split is a JSONL file (jaxmerge's guarded reader) or Hugging Face data read through `datasets` (hfdata.py:
parquet / CSV / JSON / arrow files, a save_to_disk folder, `{dataset, name, split}` from the local cache), with
`columns` mapping the task's fields (prompt, answer, choices) to the data's column names.
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

METRICS = ("exact_match_number", "exact_match", "exact_match_number_paper", "greedy_match", "loglik", "choice",
           "perplexity", "rouge_l")  # or python:package.module:function (a custom text metric, see textscore.py)
GENERATIVE = ("exact_match_number", "exact_match", "exact_match_number_paper", "rouge_l")
KEYS = frozenset({"name", "splits", "template", "metric", "max_new_tokens", "stop", "fewshot", "fewshot_split",
                  "chat_template", "columns", "language", "images", "rouge_tokens"})
MAX_SPLIT = 512 * MB  # a JSONL split larger than this is refused from its size, before it is read


class Item(NamedTuple):
    """One problem. `choices` is () except for the `choice` metric, where `answer` is one of them. `row` is the
    split's whole row as read (custom metrics receive it), None where an item was made in code."""
    prompt: str
    answer: str
    choices: tuple[str, ...] = ()
    row: Any = None


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    splits: tuple[tuple[str, Any], ...]  # (split name, absolute file or folder path | hfdata.CachedDataset)
    template: str = "{prompt}"
    metric: str = "exact_match"
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()
    fewshot: int = 0
    fewshot_split: str | None = None
    chat_template: bool = False
    columns: tuple[tuple[str, str], ...] = ()  # (task field, the data's column name)
    language: str | None = None  # generative: an answer counts only if written in it (language.py)
    images: Path | None = None  # an image task (jaxmerge.vlm.tasks): rows' `image` paths are relative to this
    rouge_tokens: str = "words"  # rouge_l's units: words | chars | model (jaxmerge.fitness.rouge)

    @property
    def generative(self) -> bool:
        return self.metric in GENERATIVE or self.metric.startswith("python:")

    def split_path(self, split: str):
        found = dict(self.splits)
        expect(split in found, f"task {self.name}: expected a split in {sorted(found)}, found {split!r}")
        return found[split]


def load_task(path: str | Path) -> Task:
    """Read and validate a task YAML; split paths are resolved relative to the YAML's directory."""
    path = Path(path)
    raw = expect_keys(read_yaml(path, "a task YAML"), KEYS, str(path))
    expect(isinstance(raw.get("name"), str), f"{path}: expected a string 'name', found {raw.get('name')!r}")
    splits = raw.get("splits")
    expect(isinstance(splits, dict) and len(splits) > 0, f"{path}: expected 'splits' mapping split names to "
                                                         f"files, found {splits!r}")
    metric = raw.get("metric", "exact_match")
    expect(isinstance(metric, str) and (metric in METRICS or metric.startswith("python:")),
           f"{path}: expected metric in {METRICS} or python:package.module:function, found {metric!r}")
    task = Task(name=raw["name"], splits=tuple((str(k), _split(v, path)) for k, v in splits.items()),
                template=_typed(raw, "template", str, "{prompt}", path), metric=metric,
                max_new_tokens=_typed(raw, "max_new_tokens", int, 32, path),
                stop=tuple(_typed(raw, "stop", list, [], path)), fewshot=_typed(raw, "fewshot", int, 0, path),
                fewshot_split=raw.get("fewshot_split"), chat_template=_typed(raw, "chat_template", bool, False, path),
                columns=_columns(raw.get("columns"), path), language=raw.get("language"),
                images=path.parent.absolute() if _typed(raw, "images", bool, False, path) else None,
                rouge_tokens=_typed(raw, "rouge_tokens", str, "words", path))
    _check(task, path)
    return task


def _split(value: Any, path: Path):
    """A split: a file or folder (relative to the YAML), or {dataset, name?, split} in the local datasets cache."""
    from jaxmerge.fitness.hfdata import CachedDataset
    if isinstance(value, str) and value:
        return (path.parent / value).absolute()
    ref = expect_keys(value, {"dataset", "name", "split"}, f"{path}: a split", required=("dataset", "split"))
    expect(all(isinstance(ref.get(k), str) and ref[k] for k in ref), f"{path}: expected a split as a file path "
           f"or {{dataset, name, split}} names, found {value!r}")
    return CachedDataset(ref["dataset"], ref.get("name"), ref["split"])


def _columns(value: Any, path: Path) -> tuple[tuple[str, str], ...]:
    from jaxmerge.fitness.hfdata import FIELDS
    columns = expect_keys(value, FIELDS, f"{path}: columns")
    expect(all(isinstance(c, str) and c for c in columns.values()), f"{path}: expected column names as strings, "
                                                                    f"found {columns!r}")
    return tuple(sorted(columns.items()))


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
    from jaxmerge.fitness.rouge import TOKENS
    expect(task.rouge_tokens in TOKENS, f"{path}: expected rouge_tokens in {TOKENS}, found {task.rouge_tokens!r}")
    if task.metric.startswith("python:"):
        from jaxmerge.fitness.textscore import custom_metric
        custom_metric(task.metric, str(path))
    if task.language is not None:
        expect(isinstance(task.language, str) and task.generative, f"{path}: expected 'language' as a language "
                                                                   f"code on a generative task, found "
                                                                   f"{task.language!r} with metric {task.metric}")
        from jaxmerge.fitness.language import check_language
        check_language(task.language, str(path))
    if task.fewshot:
        expect(task.fewshot_split in dict(task.splits),
               f"{path}: fewshot needs fewshot_split in {sorted(dict(task.splits))}, found {task.fewshot_split!r}")


def load_items(task: Task, split: str, *, allow_test: bool = True, limit: int | None = None) -> list[Item]:
    """Read one split. Evolution passes allow_test=False: searching on a split named `test` leaks it."""
    expect(allow_test or split != "test", f"task {task.name}: expected a non-test split for evolution, found "
                                          "'test' (set fitness.allow_test_split: true in the run config to "
                                          "search on it anyway)")
    items = read_split(task, split)
    expect(len(items) > 0, f"task {task.name}: expected at least one item in split {split!r}, found none")
    return items if limit is None else items[:limit]


def read_split(task: Task, split: str) -> list[Item]:
    """The items of one split: JSONL through jaxmerge's reader, anything else through `datasets`."""
    from jaxmerge.fitness.hfdata import is_dataset_file, mapped, plain, read_dataset
    source, choice, columns = task.split_path(split), task.metric == "choice", dict(task.columns)
    if isinstance(source, Path) and not is_dataset_file(source):
        return read_jsonl(source, choice, columns)
    where = f"task {task.name}: split {split}"
    items = []
    for number, row in enumerate(read_dataset(source, where, MAX_SPLIT), start=1):
        fields = mapped(row, columns, f"{where} row {number}")
        fields = {k: [plain(c, k, where) for c in v] if isinstance(v, list) else plain(v, k, where)
                  for k, v in fields.items()}
        items.append(row_item(fields, f"{where} row {number}", choice, row))
    return items


def read_jsonl(path: Path, needs_choices: bool, columns: dict[str, str] | None = None) -> list[Item]:
    """Items of a JSONL split: one JSON object per non-blank line, read through the guarded reader."""
    from jaxmerge.fitness.hfdata import mapped
    lines = read_text(path, "a JSONL split file", MAX_SPLIT).splitlines()
    items = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            where = f"{path.name}:{number}"
            row = parse_json(line, where, numbers_as_text=True, expected="a JSON object")
            expect(isinstance(row, dict), f"{where}: expected a JSON object, found {type(row).__name__}")
            fields = mapped(row, columns or {}, where) if columns else row
            items.append(row_item(fields, where, needs_choices, numbers(row)))
    return items


def numbers(value: Any) -> Any:
    """A JSON row with its numbers as Python numbers (the reader keeps them as their text for answers)."""
    if isinstance(value, NumberText):
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    return [numbers(v) for v in value] if isinstance(value, list) else value


def row_item(fields: dict, where: str, needs_choices: bool, row: Any = None) -> Item:
    """One item from its fields (prompt, answer, choices), checked; `row` is kept whole on the item."""
    expect(isinstance(fields.get("prompt"), str) and not isinstance(fields["prompt"], NumberText),
           f"{where}: expected a string field 'prompt', found {fields.get('prompt')!r}")
    prompt = text_field(fields["prompt"], "prompt", where)
    answer = answer_text(fields.get("answer"), "answer", where)
    choices = fields.get("choices", [])
    expect(isinstance(choices, list), f"{where}: expected 'choices' to be a list of strings or numbers, found "
                                      f"{choices!r}")
    choices = tuple(answer_text(c, "choices", where) for c in choices)
    if needs_choices:
        expect(answer in choices, f"{where}: expected 'answer' to be one of 'choices', found {answer!r} not in "
                                  f"{list(choices)!r}")
    return Item(prompt, answer, choices, row)


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
