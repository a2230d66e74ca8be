"""The hostile cases of tests/test_hostile.py: name -> (build(ctx) -> argv, exit code, word the line names).

A builder makes its broken input under ctx.tmp (copies of the shared world's models, task files, recipes) and
may patch (ctx.monkeypatch) or mount (ctx.mount) what the case needs.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
from pathlib import Path

import yaml
from safetensors import SafetensorError

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


def _giant(ctx):
    m = model(ctx)
    sparse_giant(m / "model.safetensors", TENSOR)
    return inspect(m)


def _header_entry(**fields):
    return lambda h: h[TENSOR].update(fields)


def _surrogate_row():
    return '{"prompt": "a\\ud800b", "answer": "1"}\n'


def _ro_merge(ctx):
    fail_writes(ctx, OSError(errno.EROFS, "Read-only file system"))
    return merge(ctx)


GEN = "name: g\nsplits: {dev: dev.jsonl}\nmetric: exact_match\n"
CHAT = LOGLIK + "chat_template: true\n"
DISK_FULL = OSError(errno.ENOSPC, "No space left on device")
RUST_FULL = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")



def _hlen(ctx) -> Path:
    m = model(ctx)
    raw = bytearray((m / "model.safetensors").read_bytes())
    raw[:8] = (2**40).to_bytes(8, "little")
    (m / "model.safetensors").write_bytes(bytes(raw))
    return m


def _device_config(m: Path) -> Path:
    (m / "config.json").unlink()
    (m / "config.json").symlink_to("/dev/zero")
    return m


def _fifo_shard(m: Path) -> Path:
    fifo(m / "model-b.safetensors")
    return m


def _fifo_split(ctx) -> str:
    path = task(ctx)
    fifo(ctx.tmp / "dev.jsonl")
    return path


def _fifo_tokenizer(m: Path) -> Path:
    fifo(m / "tokenizer.json")
    return m


def _dangling(ctx) -> Path:
    link = ctx.tmp / "out-link"
    link.symlink_to(ctx.tmp / "nowhere")
    return link


def _link(ctx, target: Path) -> Path:
    link = ctx.tmp / "link"
    link.symlink_to(target)
    return link


def _full(ctx) -> Path:
    disk = ctx.mount("full", "256k")
    fill(disk)
    return disk


class _FullFile(io.StringIO):
    """A file on a full disk: every write fails with ENOSPC."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


def _eval_full_injected(ctx):
    """The results' temporary file is on a full disk (the file name picks it out; every other file opens as usual)."""
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        if ".results.jsonl.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
            return _FullFile()
        return real(fd, *args, **kwargs)
    ctx.monkeypatch.setattr(os, "fdopen", fdopen)
    return eval_(ctx, None, LOGLIK, ROW, "--out", str(ctx.tmp / "results.jsonl"))


CASES = {
    # inspect: headers
    "inspect header length beyond the file": (lambda c: inspect(_hlen(c)), 2, "header length"),
    "inspect header claims a 2 GB tensor in a tiny file": (
        lambda c: inspect(header(c, _header_entry(shape=[500_000_000], data_offsets=[0, 2_000_000_000]))), 2,
        "model.safetensors"),
    "inspect sparse 2 GB tensor, header consistent": (_giant, 2, TENSOR),
    "inspect header negative dimension": (lambda c: inspect(header(c, _header_entry(shape=[-64, 32]))), 2, "shape"),
    "inspect header overlapping tensors": (
        lambda c: inspect(header(c, _header_entry(data_offsets=[0, 64 * 32 * 4]))), 2, "model.safetensors"),
    "inspect header 5001-digit number": (lambda c: inspect(header(c, lambda h: json.dumps(h).replace(
        '"F32"', '"F32", "x": ' + LONG, 1).encode())), 2, "5001"),
    "inspect header nested 100000 deep": (lambda c: inspect(header(c, lambda h: b'{"a": ' + DEEP.encode() + b"}")),
                                          2, "nested"),
    "inspect header not utf-8": (lambda c: inspect(header(c, lambda h: b'{"\xff": 1}')), 2, "UTF-8"),
    "inspect header unknown dtype": (lambda c: inspect(header(c, _header_entry(dtype="F128"))), 2, "F128"),
    # inspect: config.json
    "inspect num_hidden_layers 10**9": (lambda c: inspect(config(model(c), num_hidden_layers=10**9)), 2,
                                        "num_hidden_layers"),
    "inspect hidden_size 10**12": (lambda c: inspect(config(model(c), hidden_size=10**12, head_dim=8)), 2,
                                   "config.json"),
    "inspect config 5001-digit number": (lambda c: inspect(text(model(c) / "config.json", '{"vocab_size": '
                                                               + LONG + "}").parent), 2, "5001"),
    "inspect config nested 100000 deep": (lambda c: inspect(text(model(c) / "config.json", '{"a": ' + DEEP + "}")
                                                            .parent), 2, "nested"),
    "inspect config NaN": (lambda c: inspect(text(model(c) / "config.json", '{"rms_norm_eps": NaN}').parent), 2,
                           "NaN"),
    "inspect config 1e999": (lambda c: inspect(text(model(c) / "config.json", '{"rope_theta": 1e999}').parent), 2,
                             "1e999"),
    "inspect layer_types a string": (lambda c: inspect(config(model(c), layer_types="full_attention")), 2,
                                     "layer_types"),
    "inspect layer_types a number": (lambda c: inspect(config(model(c), layer_types=3)), 2, "layer_types"),
    "inspect config.json is a FIFO": (lambda c: inspect(fifo(model(c) / "config.json").parent), 2, "FIFO"),
    "inspect model.safetensors is a FIFO": (lambda c: inspect(fifo(model(c) / "model.safetensors").parent), 2,
                                            "FIFO"),
    "inspect config.json is a device": (lambda c: inspect(_device_config(model(c))), 2, "character device"),
    "inspect config.json of 10 MB": (lambda c: inspect(text(model(c) / "config.json", " " * 10 * 2**20).parent),
                                     2, "at most"),
    # inspect: index files
    "inspect index not utf-8": (lambda c: inspect(index(c, lambda d: b'{"weight_map": {"\xff": 1}}')), 2, "UTF-8"),
    "inspect index maps a tensor to a shard lacking it": (lambda c: inspect(index(c, lambda d: d["weight_map"].update(
        {TENSOR: "model-a.safetensors" if d["weight_map"][TENSOR] == "model-b.safetensors"
         else "model-b.safetensors"}))), 2, "missing from"),
    "inspect index shard outside the model dir": (lambda c: inspect(index(c, lambda d: d["weight_map"].update(
        {TENSOR: "../ft2/model.safetensors"}))), 2, "outside"),
    "inspect index absolute shard path": (lambda c: inspect(index(c, lambda d: d["weight_map"].update(
        {TENSOR: str(c.world / "ft2/model.safetensors")}))), 2, "outside"),
    "inspect index nested 100000 deep": (lambda c: inspect(index(c, lambda d: '{"weight_map": ' + DEEP + "}")), 2,
                                         "nested"),
    "inspect index shard is a FIFO": (lambda c: inspect(_fifo_shard(sharded(c))), 2, "FIFO"),
    # inspect: what killed writers leave
    "inspect a killed writer's complete leftover": (lambda c: inspect(leftover(c)), 2, "temporary"),
    "inspect a target a killed overwrite parked": (lambda c: inspect(parked(c)), 2, "previous"),
    # merge
    "merge recipe billion laughs": (lambda c: merge(c, body=LAUGHS), 2, "alias"),
    "merge recipe nested 100000 deep": (lambda c: merge(c, body=DEEP), 2, "nested"),
    "merge recipe 5001-digit number": (lambda c: merge(c, body=f"merge_method: linear\nx: {LONG}\n"), 2, "5001"),
    "merge recipe not utf-8": (lambda c: merge(c, body=b"merge_method: \xff\n"), 2, "UTF-8"),
    "merge recipe is a FIFO": (lambda c: ["merge", str(fifo(c.tmp / "r.yml")), str(c.tmp / "merged")], 2, "FIFO"),
    "merge recipe control characters": (lambda c: merge(c, body="merge_method: linear\x1f\n"), 2, "YAML"),
    "merge --overwrite onto a user's directory": (lambda c: merge(c, user_dir(c, "thesis"), "--overwrite"), 2,
                                                  "did not write"),
    "merge into a dangling symlink": (lambda c: merge(c, _dangling(c)), 2, "dangling"),
    "merge source claims 10**9 layers": (lambda c: merge(c, body=yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(config(model(c), num_hidden_layers=10**9)), "parameters": {"weight": 1.0}}]})), 2,
        "num_hidden_layers"),
    "merge disk full (injected ENOSPC)": (lambda c: (fail_writes(c, DISK_FULL), merge(c))[1], 1, "disk full"),
    "merge disk full (safetensors' own error)": (lambda c: (fail_writes(c, RUST_FULL), merge(c))[1], 1, "disk full"),
    "merge read-only (injected EROFS)": (_ro_merge, 1, "read-only"),
    "merge disk full (real tmpfs)": (lambda c: merge(c, c.mount("full", "16k") / "merged"), 1, "disk full"),
    "merge read-only file system (real)": (lambda c: merge(c, c.mount("ro", readonly=True) / "merged"), 1,
                                           "read-only"),
    # eval
    "eval tokenizer ids beyond the vocabulary": (lambda c: eval_(c, c.world / "small_vocab"), 2, "vocab_size"),
    "eval max_new_tokens 10**9": (lambda c: eval_(c, None, GEN + "max_new_tokens: 1000000000\n"), 2,
                                  "max_position_embeddings"),
    "eval prompt longer than the positions": (lambda c: eval_(c, None, LOGLIK, json.dumps(
        {"prompt": "1+" * 200, "answer": "2"}) + "\n"), 2, "max_position_embeddings"),
    "eval batch beyond memory": (lambda c: (c.monkeypatch.setattr("jaxmerge.runtime.available_bytes", lambda: 100),
                                            eval_(c))[1], 2, "memory"),
    "eval --batch 0": (lambda c: eval_(c, None, LOGLIK, ROW, "--batch", "0"), 2, "--batch"),
    "eval chat template raises": (lambda c: eval_(c, chat(c, "{{ raise_exception('boom') }}"), CHAT), 2,
                                  "chat template"),
    "eval chat template does not parse": (lambda c: eval_(c, chat(c, "{% for %}"), CHAT), 2, "chat template"),
    "eval lone surrogate in a prompt": (lambda c: eval_(c, None, LOGLIK, _surrogate_row()), 2, "surrogate"),
    "eval jsonl 5001-digit number": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": ' + LONG + "}\n"),
                                     2, "5001"),
    "eval jsonl nested 100000 deep": (lambda c: eval_(c, None, LOGLIK, '{"prompt": ' + DEEP + "}\n"), 2, "nested"),
    "eval jsonl NaN answer": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": NaN}\n'), 2, "NaN"),
    "eval jsonl boolean answer": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": true}\n'), 2,
                                  "answer"),
    "eval jsonl exponent answer": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": 1e3}\n'), 2,
                                   "1e3"),
    "eval task yaml billion laughs": (lambda c: eval_(c, None, LAUGHS), 2, "alias"),
    "eval split file is a FIFO": (lambda c: ["eval", str(c.world / "ft1"), _fifo_split(c)], 2, "FIFO"),
    "eval tokenizer.json is a FIFO": (lambda c: eval_(c, _fifo_tokenizer(model(c))), 2, "FIFO"),
    "eval --out onto an existing file": (lambda c: eval_(c, None, LOGLIK, ROW, "--out", str(text(
        c.tmp / "results.jsonl", "the user's results\n"))), 2, "--overwrite"),
    "eval --out disk full (injected ENOSPC)": (_eval_full_injected, 1, "disk full"),
    "eval --out disk full (real tmpfs)": (lambda c: eval_(c, None, LOGLIK, ROW, "--out", str(
        _full(c) / "results.jsonl")), 1, "disk full"),
    "eval --out read-only file system (real)": (lambda c: eval_(c, None, LOGLIK, ROW, "--out", str(
        c.mount("ro", readonly=True) / "results.jsonl")), 1, "read-only"),
    # demo
    "demo --out a user's directory": (lambda c: demo(user_dir(c, "mine")), 2, "not touching"),
    "demo --out a symlink to a user's directory": (lambda c: demo(_link(c, user_dir(c, "mine"))), 2, "not touching"),
    "demo --out disk full (real tmpfs)": (lambda c: demo(c.mount("full", "1m") / "demo"), 1, "disk full"),
    "demo --out read-only file system (real)": (lambda c: demo(c.mount("ro", readonly=True) / "demo"), 1,
                                                "read-only"),
    # evolve: the readers and the coordinator address (the lead adds run cases)
    "evolve config billion laughs": (lambda c: evolve(c, body=LAUGHS), 2, "alias"),
    "evolve config 5001-digit number": (lambda c: evolve(c, body=f"models: [a]\nseed: {LONG}\n"), 2, "5001"),
    "evolve --coordinator without a port": (lambda c: evolve(c, "--coordinator", "localhost"), 2, "host:port"),
    "evolve --coordinator notahost:xyz": (lambda c: evolve(c, "--coordinator", "notahost:xyz"), 2, "host:port"),
    "evolve --coordinator port 0": (lambda c: evolve(c, "--coordinator", "127.0.0.1:0"), 2, "1..65535"),
    "evolve --coordinator that does not resolve": (lambda c: (unresolvable(c), evolve(
        c, "--coordinator", "nohost.invalid:1234"))[1], 2, "resolve"),
    "evolve --coordinator unreachable": (lambda c: (c.monkeypatch.setenv("JAXMERGE_COORDINATOR_TIMEOUT", "1"), evolve(
        c, "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "1"))[1], 1,
        "unreachable"),
}
