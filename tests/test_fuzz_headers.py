"""Property-based fuzzing of what `inspect` / `load` read before any tensor: safetensors headers and
model.safetensors.index.json files (beside tests/test_fuzz_parsers.py's recipe / config / task fuzzing).

Properties: whatever the bytes, `read_header` / `tensor_headers` return or raise `JaxmergeError` (one line,
exit 2 in the CLI) — never another exception, never a hang; and whenever `read_header` accepts a file, the
safetensors library (the oracle) opens it too and reports the same tensors, dtypes and shapes.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from jaxmerge.errors import JaxmergeError
from jaxmerge.stheader import DTYPES, read_header
from jaxmerge.weights import tensor_headers
from tests.hostile import write_raw

settings.register_profile("jaxmerge-headers", max_examples=80, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FUZZ = settings.get_profile("jaxmerge-headers")
ROOT = Path(tempfile.mkdtemp(prefix="jaxmerge-fuzz-headers-"))

dims = st.one_of(st.integers(0, 6), st.integers(-3, 2**64), st.booleans(), st.floats(), st.text(max_size=2))
entry = st.fixed_dictionaries(
    {"dtype": st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=4), st.integers()),
     "shape": st.one_of(st.lists(st.integers(0, 5), max_size=3), st.lists(dims, max_size=3), dims),
     "data_offsets": st.one_of(st.lists(st.integers(0, 300), min_size=2, max_size=2), st.lists(dims, max_size=3))},
    optional={"extra": st.integers()})
headers = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(entry, st.integers(), st.none()), max_size=4)


def _oracle_agrees(file: Path, found: dict) -> None:
    with safe_open(str(file), framework="np") as f:
        assert sorted(f.keys()) == sorted(found)
        for name, info in found.items():
            view = f.get_slice(name)
            assert tuple(view.get_shape()) == info.shape
            assert DTYPES[view.get_dtype()][0] == info.dtype


@FUZZ
@given(headers, st.integers(0, 400), st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_headers_are_accepted_as_the_library_reads_them_or_refused_in_one_line(header, data, length):
    file = ROOT / "fuzz.safetensors"
    write_raw(file, header, b"\0" * data, length)
    try:
        found = read_header(file)
    except JaxmergeError as e:
        assert str(e) and "\n" not in str(e)
        return
    _oracle_agrees(file, found)


@FUZZ
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_raw_bytes_never_raise_anything_but_a_one_line_refusal(head, tail):
    file = ROOT / "raw.safetensors"
    file.write_bytes(head + tail)
    try:
        read_header(file)
    except JaxmergeError as e:
        assert "\n" not in str(e)


def _model() -> Path:
    model = ROOT / "model"
    if not model.exists():
        model.mkdir()
        for shard, name in (("a", "x"), ("b", "y")):
            write_raw(model / f"model-{shard}.safetensors",
                      {name: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    return model


shards = st.one_of(st.sampled_from(["model-a.safetensors", "model-b.safetensors", "../model-a.safetensors",
                                    "/etc/passwd", "sub/model-a.safetensors", "..", ".", "", "model-c.safetensors",
                                    "model-a.safetensors\x00", "con.safetensors"]),
                   st.text(max_size=12), st.integers(), st.none())
maps = st.dictionaries(st.sampled_from(["x", "y", "z", ""]), shards, max_size=3)
documents = st.one_of(st.fixed_dictionaries({"weight_map": maps}, optional={"metadata": st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)}), st.dictionaries(st.text(max_size=4), maps, max_size=2),
    st.lists(st.integers(), max_size=3), st.none())


@FUZZ
@given(documents, st.booleans())
def test_index_files_map_tensors_or_are_refused_in_one_line(doc, as_text):
    model = _model()
    text = json.dumps(doc) if not as_text else json.dumps(doc)[: len(json.dumps(doc)) // 2]
    (model / "model.safetensors.index.json").write_text(text)
    try:
        found = tensor_headers(model)
    except JaxmergeError as e:
        assert "\n" not in str(e)
        return
    assert all(file.parent == model and file.name in ("model-a.safetensors", "model-b.safetensors")
               for file, _ in found.values())


def teardown_module():
    shutil.rmtree(ROOT, ignore_errors=True)


@st.composite
def near_valid(draw):
    """A consistent header (offsets tiling the data), then perhaps one field broken."""
    header, position = {}, 0
    for name in draw(st.lists(st.text(min_size=1, max_size=6), max_size=4, unique=True)):
        dtype = draw(st.sampled_from(sorted(DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = DTYPES[dtype][1]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + size]}
        position += size
    data = position + draw(st.sampled_from([0, 0, 0, 1, -1]))
    if header and draw(st.booleans()):
        name = draw(st.sampled_from(sorted(header)))
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][key] = draw(st.one_of(dims, st.lists(dims, max_size=3), st.sampled_from(sorted(DTYPES))))
    return header, max(data, 0)


@FUZZ
@given(near_valid(), st.booleans())
def test_near_valid_headers_agree_with_the_library(case, metadata):
    header, data = case
    if metadata:
        header = {"__metadata__": {"format": "pt"}, **header}
    file = ROOT / "near.safetensors"
    write_raw(file, header, b"\1" * data)
    try:
        found = read_header(file)
    except JaxmergeError as e:
        assert "\n" not in str(e)
        library_refuses(file)
        return
    _oracle_agrees(file, found)


def library_refuses(file: Path) -> None:
    """Where we refuse a header the library would open, it is one we refuse on purpose (none so far)."""
    try:
        with safe_open(str(file), framework="np") as f:
            names = list(f.keys())
    except Exception:
        return
    assert names is None, f"jaxmerge refused a header safetensors reads: {file.read_bytes()[:200]!r}"
