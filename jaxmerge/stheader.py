"""safetensors headers, read and checked by jaxmerge before any tensor data is touched.

A safetensors file is 8 bytes (little-endian header length n), n bytes of JSON (name -> dtype, shape,
data_offsets; optional "__metadata__"), then the data. Everything a loader allocates follows from the header,
so the header is checked against the file first: n against the file size and MAX_HEADER, the JSON through the
guarded reader, every entry's dtype known, its shape non-negative integers whose byte size equals its offsets'
span, and the spans tiling the data region exactly (as the safetensors library requires). A header claiming a
2 GB tensor in a tiny file is refused from these few bytes; nothing else is read.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import NamedTuple

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.files import MB, open_regular
from jaxmerge.jsonfile import parse_json

MAX_HEADER = 8 * MB  # the library allows 100 MB; real headers are kilobytes (a 70B model's shard: ~100 KB)
# safetensors dtype -> (numpy name as jaxmerge reports it, bytes per element)
DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
          "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1),
          "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1)}
ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class TensorInfo(NamedTuple):
    dtype: str              # numpy name ("float32", "bfloat16", "int32", ...)
    shape: tuple[int, ...]
    begin: int              # byte offsets within the data region
    end: int


def read_header(file: Path) -> dict[str, TensorInfo]:
    """name -> TensorInfo for every tensor of a safetensors file, checked against the file's size."""
    fd = open_regular(file, "a safetensors file")
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        expect(size >= 8, f"{file.name}: expected a safetensors file (8-byte header length first), found "
                          f"{size} bytes")
        (n,) = struct.unpack("<Q", f.read(8))
        expect(n <= min(MAX_HEADER, size - 8), f"{file.name}: expected a header length of at most "
                                               f"{min(MAX_HEADER, size - 8)} bytes (the file has {size}), found {n}")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JaxmergeError(f"{file.name}: expected a UTF-8 JSON header, found other bytes") from None
    header = parse_json(text, f"{file.name} header", max_depth=4)
    expect(isinstance(header, dict), f"{file.name}: expected a JSON object as header, found {type(header).__name__}")
    return check_entries(header, size - 8 - n, file.name)


def check_entries(header: dict, data_bytes: int, where: str) -> dict[str, TensorInfo]:
    """The header's tensor entries, each checked, and together tiling `data_bytes` with no gap or overlap."""
    metadata = header.pop("__metadata__", {})
    expect(isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()),
           f"{where}: expected __metadata__ to map strings to strings, found {str(metadata)[:80]}")
    tensors = {name: entry(name, value, where) for name, value in header.items()}
    spans = sorted((t.begin, t.end, name) for name, t in tensors.items())
    position = 0
    for begin, end, name in spans:
        expect(begin == position, f"{where}: tensor {name!r} expected to start at byte {position} of the data, "
                                  f"found {begin} (tensors overlap or leave a gap)")
        position = end
    expect(position == data_bytes, f"{where}: expected the tensors to fill the file's {data_bytes} data bytes, "
                                   f"found them ending at byte {position} (truncated or padded file)")
    return tensors


def entry(name: str, value, where: str) -> TensorInfo:
    """One header entry: {"dtype": known, "shape": [ints >= 0], "data_offsets": [begin, end]}, sizes agreeing."""
    expect(isinstance(value, dict) and set(value) == ENTRY_KEYS,
           f"{where}: tensor {name!r} expected keys {sorted(ENTRY_KEYS)}, found {str(value)[:80]}")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    expect(isinstance(dtype, str) and dtype in DTYPES, f"{where}: tensor {name!r} expected a dtype in {sorted(DTYPES)}, found {dtype!r}")
    expect(isinstance(shape, list) and len(shape) <= 8 and all(_count(d) for d in shape),
           f"{where}: tensor {name!r} expected a shape of at most 8 non-negative integers, found {str(shape)[:80]}")
    expect(isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)
           and offsets[0] <= offsets[1], f"{where}: tensor {name!r} expected data_offsets [begin, end] with "
                                         f"0 <= begin <= end, found {str(offsets)[:80]}")
    nbytes = math.prod(shape) * DTYPES[dtype][1]
    expect(offsets[1] - offsets[0] == nbytes, f"{where}: tensor {name!r} expected {nbytes} bytes for {dtype} "
                                              f"{tuple(shape)}, found offsets spanning {offsets[1] - offsets[0]}")
    return TensorInfo(DTYPES[dtype][0], tuple(shape), offsets[0], offsets[1])


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
