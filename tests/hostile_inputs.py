"""Broken inputs for the hostile tests: copies of the shared world's models with lying headers, configs and
indexes, bomb documents, FIFOs, failing writers, and the argv of each command. Every builder writes under
ctx.tmp and may patch (ctx.monkeypatch) or mount (ctx.mount) what its case needs."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
from pathlib import Path

import yaml

from tests.evolve_world import write_config
from tests.hostile import fill, read_raw, sparse_giant, write_raw

TENSOR = "model.layers.1.mlp.up_proj.weight"
LOGLIK = "name: t\nsplits: {dev: dev.jsonl}\nmetric: loglik\n"
ROW = json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n"
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
DEEP = "[" * 100_000 + "]" * 100_000
LONG = "1" * 5001


# ---- inputs ----

def model(ctx, name: str = "m") -> Path:
    return Path(shutil.copytree(ctx.world / "ft1", ctx.tmp / name))


def config(path: Path, **changes) -> Path:
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **changes}))
    return path


def text(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


def header(ctx, edit) -> Path:
    """A copy of ft1 whose model.safetensors header is rewritten by edit(header) (data bytes kept)."""
    m = model(ctx)
    head, data = read_raw(m / "model.safetensors")
    new = edit(head)
    write_raw(m / "model.safetensors", new if isinstance(new, bytes) else head, data)
    return m


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def sharded(ctx) -> Path:
    """A copy of ft1 as two shards with an index (the index written by the test)."""
    m = model(ctx)
    head, data = read_raw(m / "model.safetensors")
    head.pop("__metadata__", None)
    names = sorted(head)
    for part, chosen in (("a", names[::2]), ("b", names[1::2])):
        blob, entries, pos = b"", {}, 0
        for n in chosen:
            begin, end = head[n]["data_offsets"]
            entries[n] = {**head[n], "data_offsets": [pos, pos + end - begin]}
            blob, pos = blob + data[begin:end], pos + end - begin
        write_raw(m / f"model-{part}.safetensors", entries, blob)
    (m / "model.safetensors").unlink()
    index = {"weight_map": {n: "model-a.safetensors" if n in names[::2] else "model-b.safetensors" for n in names}}
    (m / "model.safetensors.index.json").write_text(json.dumps(index))
    return m


def index(ctx, edit) -> Path:
    m = sharded(ctx)
    doc = json.loads((m / "model.safetensors.index.json").read_text())
    new = edit(doc)
    text(m / "model.safetensors.index.json", new if isinstance(new, (str, bytes)) else json.dumps(doc))
    return m


def task(ctx, yml: str = LOGLIK, dev: str | bytes = ROW) -> str:
    text(ctx.tmp / "dev.jsonl", dev)
    return str(text(ctx.tmp / "t.yml", yml))


def recipe(ctx, body: str | bytes | None = None) -> str:
    doc = {"merge_method": "linear",
           "models": [{"model": str(ctx.world / m), "parameters": {"weight": 0.5}} for m in ("ft1", "ft2")]}
    return str(text(ctx.tmp / "r.yml", body if body is not None else yaml.safe_dump(doc)))


def evolve_config(ctx, body: str | None = None) -> str:
    doc = yaml.safe_load(write_config(ctx.world, name="hostile-config.yml").read_text())
    doc["models"] = [str(ctx.world / "ft1"), str(ctx.world / "ft2")]
    doc["base_model"] = str(ctx.world / "base")
    doc["fitness"]["tasks"][0]["task"] = str(ctx.world / "task/add.yml")
    return str(text(ctx.tmp / "evolve.yml", body if body is not None else yaml.safe_dump(doc)))


def chat(ctx, template: str) -> Path:
    m = model(ctx)
    tc = json.loads((m / "tokenizer_config.json").read_text())
    (m / "tokenizer_config.json").write_text(json.dumps({**tc, "chat_template": template}))
    return m


def user_dir(ctx, name: str) -> Path:
    d = ctx.tmp / name
    d.mkdir()
    (d / "thesis.tex").write_text("the user's own work")
    return d


def fail_writes(ctx, error: Exception) -> None:
    """The safetensors writer raises `error` (as a full or read-only disk makes it)."""
    def broken(tensors, filename, metadata=None):
        raise error
    ctx.monkeypatch.setattr("jaxmerge.io.save_file", broken)


def leftover(ctx) -> Path:
    """A complete model under the hidden name a killed writer (pid 999999999, no such process) leaves."""
    return Path(shutil.copytree(ctx.world / "ft1", ctx.tmp / f".out.tmp-{socket.gethostname()[:5]}.999999999-x"))


def parked(ctx) -> Path:
    """A killed two-rename overwrite: the old output parked aside, the target missing."""
    shutil.copytree(ctx.world / "ft1", ctx.tmp / ".out.old-otherhost.1-x")
    return ctx.tmp / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unresolvable(ctx) -> None:
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    ctx.monkeypatch.setattr(socket, "getaddrinfo", fail)


# ---- argv per command ----

def inspect(m) -> list[str]:
    return ["inspect", str(m)]


def merge(ctx, out=None, *more, body=None) -> list[str]:
    return ["merge", recipe(ctx, body), str(out or ctx.tmp / "merged"), *more]


def eval_(ctx, m=None, yml=LOGLIK, dev=ROW, *more) -> list[str]:
    return ["eval", str(m or ctx.world / "ft1"), task(ctx, yml, dev), *more]


def demo(out) -> list[str]:
    return ["demo", "--quick", "--no-progress", "--out", str(out)]


def evolve(ctx, *more, body=None) -> list[str]:
    return ["evolve", evolve_config(ctx, body), "--out", str(ctx.tmp / "run"), "--no-progress", *more]


def giant(ctx):
    m = model(ctx)
    sparse_giant(m / "model.safetensors", TENSOR)
    return inspect(m)


def header_entry(**fields):
    return lambda h: h[TENSOR].update(fields)


def surrogate_row():
    return '{"prompt": "a\\ud800b", "answer": "1"}\n'


def readonly_merge(ctx):
    fail_writes(ctx, OSError(errno.EROFS, "Read-only file system"))
    return merge(ctx)


GEN = "name: g\nsplits: {dev: dev.jsonl}\nmetric: exact_match\n"
CHAT = LOGLIK + "chat_template: true\n"
DISK_FULL = OSError(errno.ENOSPC, "No space left on device")



def header_length(ctx) -> Path:
    m = model(ctx)
    raw = bytearray((m / "model.safetensors").read_bytes())
    raw[:8] = (2**40).to_bytes(8, "little")
    (m / "model.safetensors").write_bytes(bytes(raw))
    return m


def device_config(m: Path) -> Path:
    (m / "config.json").unlink()
    (m / "config.json").symlink_to("/dev/zero")
    return m


def fifo_shard(m: Path) -> Path:
    fifo(m / "model-b.safetensors")
    return m


def fifo_split(ctx) -> str:
    path = task(ctx)
    fifo(ctx.tmp / "dev.jsonl")
    return path


def fifo_tokenizer(m: Path) -> Path:
    fifo(m / "tokenizer.json")
    return m


def dangling(ctx) -> Path:
    link = ctx.tmp / "out-link"
    link.symlink_to(ctx.tmp / "nowhere")
    return link


def link_to(ctx, target: Path) -> Path:
    link = ctx.tmp / "link"
    link.symlink_to(target)
    return link


def full_disk(ctx) -> Path:
    disk = ctx.mount("full", "256k")
    fill(disk)
    return disk


class _FullFile(io.StringIO):
    """A file on a full disk: every write fails with ENOSPC."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


def eval_full_injected(ctx):
    """The results' temporary file is on a full disk (the file name picks it out; every other file opens as usual)."""
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        if ".results.jsonl.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
            return _FullFile()
        return real(fd, *args, **kwargs)
    ctx.monkeypatch.setattr(os, "fdopen", fdopen)
    return eval_(ctx, None, LOGLIK, ROW, "--out", str(ctx.tmp / "results.jsonl"))
