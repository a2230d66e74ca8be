"""The guarded readers every input goes through: regular files only, sizes capped before reading, JSON and
YAML with bounded nesting, numbers and (YAML) alias expansion, one-line errors naming the file."""
from __future__ import annotations

import os

import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.files import read_text
from jaxmerge.jsonfile import NumberText, nesting, parse_json, read_json_object
from jaxmerge.yamlfile import MAX_NODES, parse_yaml, read_yaml

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9))


@pytest.mark.parametrize("text,match", [
    ("[" * 10**5 + "]" * 10**5, "nested"), ("[" * 70 + "]" * 70, "nested at most 64"), ("1" * 5001, "5001"),
    ("1." + "0" * 200, "at most 100"), ("[1e999]", "1e999"), ('{"x": NaN}', "NaN"), ("[-Infinity]", "Infinity"),
    ('{"a": 1,}', "malformed JSON"),
])
def test_json_bombs_and_oddities_are_one_line(text, match):
    with pytest.raises(JaxmergeError, match=match) as info:
        parse_json(text, "f.json")
    assert str(info.value).startswith("f.json: ") and "\n" not in str(info.value)


def test_json_numbers_can_be_kept_as_written():
    doc = parse_json('{"a": 7, "b": 7.0, "c": [-0.5, 1e3]}', "x", numbers_as_text=True)
    assert doc == {"a": "7", "b": "7.0", "c": ["-0.5", "1e3"]} and isinstance(doc["b"], NumberText)
    assert parse_json('{"a": 7, "b": 7.0}', "x") == {"a": 7, "b": 7.0}
    assert nesting({"a": [[1], {"b": []}]}) == 4 and nesting(5) == 0


def test_files_must_be_regular_and_small_enough(tmp_path):
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(JaxmergeError, match="FIFO"):
        read_json_object(tmp_path / "pipe.json", "config.json")
    (tmp_path / "big.json").write_text(" " * 2000)
    with pytest.raises(JaxmergeError, match="at most 1000 bytes"):
        read_text(tmp_path / "big.json", "a file", 1000)
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(JaxmergeError, match="JSON object"):
        read_json_object(tmp_path / "list.json", "config.json")
    (tmp_path / "bad.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(JaxmergeError, match="bad.json: expected UTF-8 text, found byte 0xff at offset 7"):
        read_json_object(tmp_path / "bad.json", "config.json")
    with pytest.raises(JaxmergeError, match="found none"):
        read_yaml(tmp_path / "none.yml", "a recipe YAML")


@pytest.mark.parametrize("text,match", [
    (LAUGHS, "alias bomb"), ("[" * 5000 + "]" * 5000, "nested"), ("&a [*a]", "recursive"),
    ("x: " + "9" * 5001, "5001"), ("d: 2024-13-45", "month"), ("k: [unclosed", "valid YAML"),
    ("a\x1fb", "unacceptable character"), ("- " * 70 + "x", "nested at most 64"),
])
def test_yaml_bombs_and_oddities_are_one_line(text, match):
    with pytest.raises(JaxmergeError, match=match) as info:
        parse_yaml(text, "r.yml")
    assert "r.yml" in str(info.value) and "\n" not in str(info.value)


def test_yaml_anchors_and_aliases_of_ordinary_size_still_work():
    doc = parse_yaml("base: &b {weight: 0.5, density: 0.7}\nmodels:\n- {model: a, parameters: *b}\n"
                     "- {model: b, parameters: *b}\n", "r.yml")
    assert doc["models"][1]["parameters"] == {"weight": 0.5, "density": 0.7}
    wide = "[" + ", ".join(["1"] * (MAX_NODES - 10)) + "]"
    assert len(parse_yaml(wide, "wide.yml")) == MAX_NODES - 10
