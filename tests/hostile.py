"""Tools for the hostile-input tests: peak memory, snapshots, real tmpfs mounts, broken safetensors files.

Peak memory in-process: /proc/self/clear_refs "5" resets VmHWM to the current RSS, so the growth of one call is
VmHWM after it minus VmRSS before it. In a subprocess the child reads its own VmHWM at exit (after execve the
parent's ru_maxrss would count), and the absolute figure is compared with an idle `import jaxmerge`.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

MB = 2**20
LIMIT = 200 * MB  # the goal: no refused case grows more than this


def status(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_growth(fn):
    """(fn(), bytes the process's peak RSS rose above its RSS at the start of the call)."""
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    result = fn()
    return result, status("VmHWM") - before


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root; files and links with size and mtime: anything written, changed, created or left
    behind shows up. A directory's own mtime is left out (a temporary made and removed in it changes it)."""
    return {str(p.relative_to(root)): ("dir",) if p.is_dir() and not p.is_symlink() else
            (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", readonly: bool = False):
    """A real tmpfs at `path` (root only); yields False (and mounts nothing) where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, name: str = "user-data.bin") -> Path:
    """Fill a (small) file system with one file of the user's: the next write gets ENOSPC."""
    path = directory / name
    with open(path, "wb", buffering=0) as f:  # unbuffered: nothing left over for close() to fail on
        try:
            while f.write(b"\xab" * 65536):
                pass
        except OSError:
            pass
    return path


# ---- safetensors files written by hand ----

def read_raw(file: Path) -> tuple[dict, bytes]:
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw(file: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    """Header (a dict, or raw bytes) + data; `length` overrides the 8-byte header length."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return file


def sparse_giant(file: Path, tensor: str, elements: int = 500_000_000) -> Path:
    """Rewrite `file` so that `tensor` claims `elements` float32 values (2 GB) at the end of a sparse file: the
    header is consistent with the file's size, and the disk holds only the real tensors."""
    header, data = read_raw(file)
    header.pop("__metadata__", None)
    kept, blob, position = {}, b"", 0
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if name == tensor:
            continue
        begin, end = entry["data_offsets"]
        kept[name] = {**entry, "data_offsets": [position, position + end - begin]}
        blob += data[begin:end]
        position += end - begin
    kept[tensor] = {"dtype": "F32", "shape": [elements], "data_offsets": [position, position + 4 * elements]}
    write_raw(file, kept, blob)
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size + 4 * elements)
    return file


# ---- subprocesses that report their own peak memory ----

HARNESS = """
import os, sys
report, preimport = sys.argv[1], sys.argv[2] == "1"
if preimport:  # the heavy libraries a command needs anyway, so that only what the case itself allocates counts
    import jax.numpy as jnp, jaxmerge.merge.build
    from jaxmerge.fitness import load_tokenizer
    jnp.zeros(1).block_until_ready()
    load_tokenizer(os.environ["JAXMERGE_WARM_TOKENIZER"])  # transformers imports torch (~250 MB) on first load
from jaxmerge.cli import main
def field(name):
    return int(next(l for l in open("/proc/self/status") if l.startswith(name + ":")).split()[1]) * 1024
base = field("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
code = 3
try:
    code = main(sys.argv[3:])
finally:
    open(report, "w").write(f"{field('VmHWM')} {base} {code}")
sys.exit(code)
"""
IDLE = """
import sys, jaxmerge
open(sys.argv[1], "w").write(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
"""


def measured(argv: list[str], report: Path, warm_tokenizer: Path | None = None, timeout: float = 300):
    """Run the CLI in a fresh process: (CompletedProcess, peak RSS in bytes, RSS at main() in bytes). With
    `warm_tokenizer` (a model dir), jax, the merge code and a tokenizer load come first (imports, not the case)."""
    env = {**child_env(), "JAXMERGE_WARM_TOKENIZER": str(warm_tokenizer)}
    proc = subprocess.run([sys.executable, "-c", HARNESS, str(report), "1" if warm_tokenizer else "0", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)
    peak, base, _ = (int(x) for x in report.read_text().split())
    return proc, peak, base


def idle_peak(report: Path) -> int:
    """Peak RSS of an idle `python -c 'import jaxmerge'`, in bytes."""
    subprocess.run([sys.executable, "-c", IDLE, str(report)], check=True, env=child_env())
    return int(report.read_text()) * 1024


def child_env() -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}
