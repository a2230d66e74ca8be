"""Which safetensors file holds which tensor, from the index file or the headers, checked before any data.

An index (model.safetensors.index.json) is read through the guarded JSON reader; it may name only plain file
names inside the model directory (never `../x`, an absolute path or a sub-directory), every shard it names must
be a regular file (a FIFO would hang the reader), and every tensor it maps to a shard must be in that shard's
header. Without an index, every *.safetensors file's header is read and a tensor may appear in only one.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.files import MB
from jaxmerge.jsonfile import read_json_object
from jaxmerge.stheader import TensorInfo, read_header

INDEX = "model.safetensors.index.json"
MAX_INDEX = 16 * MB
SHARD = re.compile(r"[^/\\\x00]+\.safetensors")
PICKLES = (".bin", ".pt", ".pth", ".ckpt")


def weight_files(model_dir: Path) -> dict[str, Path]:
    """HF tensor name -> safetensors file holding it."""
    return {name: file for name, (file, _) in tensor_headers(model_dir).items()}


def tensor_headers(model_dir: Path) -> dict[str, tuple[Path, TensorInfo]]:
    """HF tensor name -> (file, its header entry), from the index if there is one, else from every header."""
    index = model_dir / INDEX
    if index.exists() or index.is_symlink():
        return _indexed(model_dir, index)
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLES)
        expect(not pickles, f"expected safetensors weights in {model_dir}, found pickle files {pickles}: "
                            "convert them to safetensors (jaxmerge never unpickles)")
        raise JaxmergeError(f"expected *.safetensors weights in {model_dir}, found none")
    found = [(name, (f, info)) for f in shards for name, info in read_header(f).items()]
    twice = sorted(name for name, n in Counter(name for name, _ in found).items() if n > 1)
    expect(not twice, f"expected each tensor in one file of {model_dir} (no index file), found {twice[:3]} twice")
    return dict(found)


def read_index(index: Path) -> dict[str, str]:
    """The index's weight_map: tensor name -> shard file name, every name a plain *.safetensors file name."""
    doc = read_json_object(index, "an index file", max_bytes=MAX_INDEX)
    weight_map = doc.get("weight_map")
    expect(isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values()),
           f"expected a weight_map of tensor names to file names in {index}, found {str(weight_map)[:80]}")
    for shard in set(weight_map.values()):
        expect(SHARD.fullmatch(shard) is not None and shard not in (".", ".."),
               f"{index} names shard {shard!r}: expected a *.safetensors file name inside {index.parent}, "
               "found a path outside it")
    return weight_map


def _indexed(model_dir: Path, index: Path) -> dict[str, tuple[Path, TensorInfo]]:
    weight_map = read_index(index)
    headers = {}
    for shard in sorted(set(weight_map.values())):
        file = model_dir / shard
        expect(file.exists(), f"{index} names shard {shard}, which is missing")
        headers[shard] = read_header(file)
    out = {}
    for name, shard in weight_map.items():
        info = headers[shard].get(name)
        expect(info is not None, f"{index} maps tensor {name} to {shard}, found it missing from that shard's "
                                 "header")
        out[name] = (model_dir / shard, info)
    return out
