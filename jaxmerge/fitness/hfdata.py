"""Task splits from Hugging Face datasets: local parquet / CSV / JSON / arrow files, a `save_to_disk` folder, or
a dataset in the local datasets cache, read through the `datasets` library, offline.

    splits:
      dev: data/dev.parquet                          # .parquet .csv .json .arrow (a .jsonl stays jaxmerge's reader)
      test: data/saved_dataset/                      # a folder written by Dataset.save_to_disk
      train: {dataset: juletxara/mgsm, name: ja, split: train}   # the local datasets cache only, never downloaded
    columns: {prompt: question, answer: answer_number}          # task field -> the dataset's column

Rows become the same `Item`s as a JSONL split: `prompt` must be a string; `answer` and `choices` may be strings
or numbers (an int is its digits, a float its shortest repr; CSV readers type a column with one decimal as float
for every row, so "2" may read as 2.0: `exact_match_number` compares numerically). The whole row is kept on the
item (custom metrics receive it). Reading writes nothing to the user's datasets cache (a temporary one is used).
"""
from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from jaxmerge.errors import JaxmergeError, expect

FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".arrow": "arrow"}
FIELDS = ("prompt", "answer", "choices")


class CachedDataset(NamedTuple):
    """A split of a dataset in the local datasets cache."""
    path: str
    name: str | None
    split: str


def is_dataset_file(path: Path) -> bool:
    return path.suffix.lower() in FORMATS or path.is_dir()


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


@contextlib.contextmanager
def _datasets():
    """The datasets module, offline and quiet."""
    from jaxmerge.fitness.lmeval import offline
    offline()
    import datasets
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    yield datasets


def read_dataset(source: Path | CachedDataset, where: str, max_bytes: int) -> list[dict]:
    """Every row of one split as a dict; a file that cannot be read (or a cache miss) is one line."""
    with _datasets() as datasets:
        try:
            if isinstance(source, CachedDataset):
                return datasets.load_dataset(source.path, source.name, split=source.split).to_list()
            if source.is_dir():
                loaded = datasets.load_from_disk(str(source), keep_in_memory=True)
                if isinstance(loaded, datasets.DatasetDict):
                    raise JaxmergeError(f"{where}: expected one split saved at {source}, found a DatasetDict "
                                        f"{sorted(loaded)}: name one of its folders")
                return loaded.to_list()
            from jaxmerge.files import check_regular
            check_regular(source, "a dataset split file")
            expect(source.stat().st_size <= max_bytes, f"{where}: expected a split file of at most "
                                                       f"{max_bytes >> 20} MB, found {source.stat().st_size >> 20} MB")
            return _read_file(datasets, source)
        except JaxmergeError:
            raise
        except Exception as e:  # datasets / pyarrow raise many types for a file they cannot read
            raise JaxmergeError(_unreadable(source, where, e)) from None


def _read_file(datasets, path: Path) -> list[dict]:
    kind = FORMATS[path.suffix.lower()]
    if kind == "arrow":
        return datasets.Dataset.from_file(str(path), in_memory=True).to_list()
    with tempfile.TemporaryDirectory(prefix="jaxmerge-datasets-") as cache:
        reader = {"parquet": datasets.Dataset.from_parquet, "csv": datasets.Dataset.from_csv,
                  "json": datasets.Dataset.from_json}[kind]
        return reader(str(path), keep_in_memory=True, cache_dir=cache).to_list()


def _unreadable(source, where: str, e: Exception) -> str:
    if isinstance(source, CachedDataset):
        return (f"{where}: expected dataset {source.path} ({source.name or 'default'}, split {source.split}) in the "
                f"local datasets cache, found it unavailable offline ({_first_line(e)}); provide the split as a "
                "local file instead (parquet, CSV, JSON, arrow or JSONL)")
    return f"{where}: expected a readable dataset split at {source}, found: {_first_line(e)}"


def mapped(row: dict, columns: dict[str, str], where: str) -> dict[str, Any]:
    """The task fields of one row through the column mapping; a mapped column the row lacks is one line."""
    out = {}
    for field in FIELDS:
        column = columns.get(field, field)
        if column in row:
            out[field] = row[column]
        else:
            expect(field not in columns and field != "prompt",
                   f"{where}: expected column {column!r} (for {field}), found columns {sorted(row)}")
    return out


def plain(value: Any, key: str, where: str):
    """A dataset value as a JSON-like one: int -> its digits, float -> its repr (finite, no exponent)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        expect(math.isfinite(value) and "e" not in repr(value), f"{where}: expected '{key}' as a plain number "
                                                                f"or a string, found {value!r}")
        return repr(value)
    return value
