"""Cheap identities of inputs, for `--resume` to notice that a task file or a source model changed.

`fingerprint(path)` is "sha256:<hex>" of what identifies a file or a model directory:
- a file of at most FULL_BYTES: all of its bytes;
- a larger file: its size, its first and last SAMPLE_EDGE bytes and SAMPLES blocks of SAMPLE_BLOCK bytes at
  fixed fractions of its length (a safetensors file's header, which names every tensor with its dtype, shape
  and offsets, is in its first bytes);
- a file stored in a Hugging Face cache (a symlink into blobs/<sha256>): that stored checksum, exact and free;
- a model directory: config.json, the index file, the tokenizer files and every *.safetensors file, each as
  above, with their names.
Reading is bounded (about 2.2 MB per large file), so fingerprinting a 100 GB model takes well under a second on
a local disk. What it cannot see: a few bytes changed inside one large tensor away from every sampled block;
a re-trained or replaced model changes nearly every block and is seen. Non-regular files are refused.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from jaxmerge.errors import JaxmergeError
from jaxmerge.files import MB, open_regular

FULL_BYTES = 16 * MB
SAMPLE_EDGE = MB
SAMPLE_BLOCK = 4096
SAMPLES = 64
MODEL_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "tokenizer.model", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
               "chat_template.jinja", "generation_config.json")
BLOB = re.compile(r"[0-9a-f]{64}")


def fingerprint(path: str | os.PathLike) -> str:
    """The identity of a file or a model directory (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return "sha256:" + _directory(path).hexdigest()
    return "sha256:" + _file_digest(path)


def _directory(directory: Path) -> "hashlib._Hash":
    files = [directory / n for n in MODEL_FILES if (directory / n).exists()]
    files += sorted(directory.glob("*.safetensors"))
    if not files:
        raise JaxmergeError(f"expected model files (config.json, *.safetensors) in {directory}, found none")
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{_file_digest(file)}\0".encode())
    return digest


def _file_digest(file: Path) -> str:
    stored = stored_checksum(file)
    if stored is not None:
        return stored
    fd = open_regular(file, "a file to fingerprint")
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        digest = hashlib.sha256(str(size).encode() + b"\0")
        for offset, length in _blocks(size):
            f.seek(offset)
            digest.update(f.read(length))
    return digest.hexdigest()


def _blocks(size: int) -> list[tuple[int, int]]:
    """(offset, length) pairs to read: the whole file when small, else its edges and evenly spread samples."""
    if size <= FULL_BYTES:
        return [(0, size)]
    middle = [(SAMPLE_EDGE + (size - 2 * SAMPLE_EDGE - SAMPLE_BLOCK) * i // (SAMPLES - 1), SAMPLE_BLOCK)
              for i in range(SAMPLES)]
    return [(0, SAMPLE_EDGE), *middle, (size - SAMPLE_EDGE, SAMPLE_EDGE)]


def stored_checksum(file: Path) -> str | None:
    """The sha256 a Hugging Face cache stores as the blob's name, when `file` links to blobs/<sha256>."""
    if not file.is_symlink():
        return None
    real = Path(os.path.realpath(file))
    return real.name if real.parent.name == "blobs" and BLOB.fullmatch(real.name) else None


def fingerprints(paths) -> dict[str, str]:
    """{str(path): fingerprint} for several inputs (a run's sources and task files)."""
    return {str(p): fingerprint(p) for p in paths}
