"""Writing a safetensors file while its tensors are still being made.

The header of a safetensors file (jaxmerge.stheader) needs only each tensor's name, dtype and shape, so it is
written first and every tensor's bytes go to their offset as soon as the tensor exists: a merge's tensors are
made (read, merged) on a few threads, a bounded window ahead of the one being written, and each is dropped once
written. Memory is that window, not the shard; reading, merging and writing overlap. The bytes are those of
safetensors' own `save_file` (tensors ordered by dtype as its enum orders them, then name; the header padded with spaces to a
multiple of 8), which tests/test_io.py checks.
"""
from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jaxmerge.stheader import DTYPES as STORED

CODES = {name: code for code, (name, _) in STORED.items()}  # numpy name -> safetensors dtype code
# the order of safetensors' Dtype enum, by which its serializer orders tensors (last first), then by name
RANK = {code: i for i, code in enumerate(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                                          "I32", "U32", "F32", "F64", "I64", "U64"))}
AHEAD = 4  # tensors made ahead of the one being written (bounded memory: AHEAD + 1 tensors at most)
WORKERS = 2  # threads making tensors: XLA and numpy release the GIL, so two tensors merge at once


def header(entries: dict[str, tuple[str, tuple[int, ...]]], metadata: dict[str, str] | None
           ) -> tuple[bytes, dict[str, int]]:
    """(the file's first bytes: length + padded JSON header, the data offset of each tensor) for tensors given
    as name -> (numpy dtype name, shape)."""
    order = sorted(entries, key=lambda n: (-RANK[CODES[entries[n][0]]], n))
    table: dict = {"__metadata__": metadata} if metadata else {}
    offsets, at = {}, 0
    for name in order:
        dtype, shape = entries[name]
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(_numpy(dtype)).itemsize
        table[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [at, at + size]}
        offsets[name] = at
        at += size
    text = json.dumps(table, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offsets


def _numpy(name: str):
    import ml_dtypes  # noqa: F401  (registers bfloat16 and the float8 types with numpy)
    return getattr(ml_dtypes, name, None) or np.dtype(name)


def write(tensors: dict, file: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> numpy array, or anything with shape / dtype that np.asarray makes, e.g. a
    jaxmerge.deferred.Deferred) as one safetensors file, making them on WORKERS threads at most AHEAD ahead."""
    entries = {name: (np.dtype(t.dtype).name, tuple(t.shape)) for name, t in tensors.items()}
    head, offsets = header(entries, metadata)
    names = list(tensors)
    with open(file, "wb") as f:
        f.write(head)
        f.truncate(len(head) + sum(int(np.prod(s, dtype=np.int64)) * np.dtype(_numpy(d)).itemsize
                                   for d, s in entries.values()))
        f.flush()
        with ThreadPoolExecutor(WORKERS) as pool:
            pending = [pool.submit(_made, tensors[n]) for n in names[:AHEAD]]
            try:
                for i, name in enumerate(names):
                    array = pending.pop(0).result()
                    if i + AHEAD < len(names):
                        pending.append(pool.submit(_made, tensors[names[i + AHEAD]]))
                    _check(name, array, entries[name])
                    _write_at(f.fileno(), array.reshape(-1).view(np.uint8), len(head) + offsets[name])
            finally:
                for job in pending:
                    job.cancel()


def _write_at(fd: int, data: np.ndarray, offset: int) -> None:
    """All of `data` at `offset` (one pwrite call may write less: Linux stops at about 2 GiB)."""
    view = memoryview(data)
    while view.nbytes:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _made(tensor) -> np.ndarray:
    return np.asarray(tensor, order="C")


def _check(name: str, array: np.ndarray, entry: tuple[str, tuple[int, ...]]) -> None:
    assert (np.dtype(array.dtype).name, tuple(array.shape)) == entry, (name, array.dtype, array.shape, entry)
