"""The guarded JSON reader: config.json, index files, safetensors headers, task JSONL, run records.

`json.loads` on hostile text raises RecursionError (deeply nested arrays), ValueError (an integer of more than
4300 digits), returns inf for `1e999` and NaN for `NaN`, and takes whatever memory the text asks for. Here the
bytes are capped before reading (jaxmerge.files), numbers are checked while they are parsed (at most
MAX_NUMBER characters, finite), NaN/Infinity are refused, and nesting deeper than `max_depth` is refused: every
problem is one `JaxmergeError` line naming the file.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from jaxmerge.errors import JaxmergeError
from jaxmerge.files import MB, read_text

MAX_DEPTH = 64
MAX_NUMBER = 100  # characters of one number: no file of ours needs more, Python's int limit is 4300 digits
MAX_BYTES = 16 * MB


class NumberText(str):
    """A JSON number kept as the text it was written with (`7`, `7.0`, `-3`): see `parse_json(numbers_as_text)`."""


class _Refused(Exception):
    """Raised from inside json.loads' number hooks; turned into a one-line error naming the file."""


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER:
        raise _Refused(f"expected numbers of at most {MAX_NUMBER} characters, found one of {len(text)}")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        raise _Refused(f"expected finite numbers, found {text} (beyond float64)")
    return value


def _constant(name: str):
    raise _Refused(f"expected finite numbers, found {name} (not JSON)")


def _text_number(text: str) -> NumberText:
    _float(text)
    return NumberText(text)


def parse_json(text: str, where: str, *, numbers_as_text: bool = False, max_depth: int = MAX_DEPTH,
               expected: str = "valid JSON") -> Any:
    """The value of JSON `text` (from `where`, named in errors; `expected` says what it should be). With
    `numbers_as_text`, numbers come back as `NumberText`, the exact characters written (`7.0` stays "7.0")."""
    hooks = (_text_number, _text_number) if numbers_as_text else (_int, _float)
    try:
        value = json.loads(text, parse_int=hooks[0], parse_float=hooks[1], parse_constant=_constant)
    except RecursionError:
        raise JaxmergeError(f"{where}: expected JSON nested at most {max_depth} levels deep, found deeper "
                            "nesting") from None
    except json.JSONDecodeError as e:
        raise JaxmergeError(f"{where}: expected {expected}, found malformed JSON ({e.msg}: line {e.lineno} "
                            f"column {e.colno})") from None
    except _Refused as e:
        raise JaxmergeError(f"{where}: {e}") from None
    depth = nesting(value)
    if depth > max_depth:
        raise JaxmergeError(f"{where}: expected JSON nested at most {max_depth} levels deep, found {depth}")
    return value


def nesting(value: Any) -> int:
    """How deeply lists/dicts nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              numbers_as_text: bool = False) -> Any:
    """Parse the JSON file at `path` (`what` it is, for errors: "config.json", "an index file"), bounded."""
    text = read_text(path, what, max_bytes)
    return parse_json(text, str(path), numbers_as_text=numbers_as_text, max_depth=max_depth)


def read_json_object(path: str | os.PathLike, what: str, **bounds) -> dict:
    """`read_json` of a file that must hold a JSON object."""
    value = read_json(path, what, **bounds)
    if not isinstance(value, dict):
        raise JaxmergeError(f"expected a JSON object in {path}, found {type(value).__name__}")
    return value
