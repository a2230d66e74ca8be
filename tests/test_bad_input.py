"""Bad input across every command: one line on stderr (expected / found), exit 2, nothing written.
(A read-only or full output is the environment's fault, exit 1: tests/test_hostile.py.)

Each case builds its broken input under tmp_path and returns the argv and a word the error must name. The test
snapshots tmp_path before and after the command: a refused command must leave it exactly as it was (no output,
no `.NAME.tmp-*` leftovers). Runs in-process through `jaxmerge.cli.main`; a few run as real subprocesses.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxmerge.cli import main
from jaxmerge.errors import JaxmergeError
from tests.evolve_world import build_world, write_config
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

TENSOR = "model.layers.1.mlp.up_proj.weight"  # [intermediate 64, hidden 32]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = build_world(tmp_path_factory.mktemp("bad_world"))
    add_char_tokenizer(make_tiny_model(root / "qwen", "qwen2", seed=4, num_hidden_layers=2))
    return root


# ---- ways to break a checkpoint (a copy of ft1 under tmp) ----

def _copy(world: Path, tmp: Path, name: str = "broken") -> Path:
    return Path(shutil.copytree(world / "ft1", tmp / name))


def _header(file: Path) -> tuple[dict, bytes]:
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_header(file: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + data)


def lie_in_header(model: Path, **fields) -> Path:
    """Rewrite TENSOR's header entry (shape / dtype) without touching the data bytes."""
    file = model / "model.safetensors"
    header, data = _header(file)
    header[TENSOR].update(fields)
    _write_header(file, header, data)
    return model


def poison(model: Path, value: float) -> Path:
    file = model / "model.safetensors"
    with safe_open(str(file), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[TENSOR][3, 5] = value
    save_file(tensors, str(file), metadata={"format": "pt"})
    return model


def unreadable(path: Path) -> Path:
    """chmod 000 where permissions bite; as root (they do not) a dangling symlink in place of the file."""
    if os.geteuid() != 0:
        path.chmod(0)
        return path
    path.unlink()
    path.symlink_to(path.parent / "gone.safetensors")
    return path


# ---- per-command argv builders ----

def recipe(tmp: Path, models, **extra) -> str:
    doc = {"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models],
           **extra}
    path = tmp / "recipe.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def config(world: Path, tmp: Path, **changes) -> str:
    doc = yaml.safe_load(write_config(world, name="base-config.yml").read_text())
    doc["models"] = [str(world / "ft1"), str(world / "ft2")]
    doc["base_model"] = str(world / "base")
    doc["fitness"]["tasks"][0]["task"] = str(world / "task/add.yml")
    for key, value in changes.items():
        section, _, sub = key.partition(".")
        if sub:
            doc[section][sub] = value
        else:
            doc[section] = value
    path = tmp / "evolve.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def task(tmp: Path, yml: str, dev: bytes | str | None = None) -> str:
    if dev is not None:
        (tmp / "dev.jsonl").write_bytes(dev if isinstance(dev, bytes) else dev.encode())
    (tmp / "t.yml").write_text(yml)
    return str(tmp / "t.yml")


LOGLIK = "name: t\nsplits: {dev: dev.jsonl}\nmetric: loglik\n"
ROW = json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n"


def _evolve(w, t, **changes):
    return ["evolve", config(w, t, **changes), "--out", str(t / "run"), "--no-progress"]


def _merge(w, t, models, **extra):
    return ["merge", recipe(t, models, **extra), str(t / "merged")]


def _eval(w, t, model, yml=LOGLIK, dev=ROW, *more):
    return ["eval", str(model), task(t, yml, dev), *more]


CASES = {
    # inspect: the checkpoint itself
    "inspect missing path": (lambda w, t: ["inspect", str(t / "nowhere")], "nowhere"),
    "inspect unreadable shard": (lambda w, t: ["inspect", str(unreadable(_copy(w, t) / "model.safetensors").parent)],
                                 "model.safetensors"),
    "inspect truncated shard": (lambda w, t: ["inspect", str(_truncate(_copy(w, t)))], "model.safetensors"),
    "inspect garbage header": (lambda w, t: ["inspect", str(_garbage_header(_copy(w, t)))], "model.safetensors"),
    "inspect header lies about shape": (
        lambda w, t: ["inspect", str(lie_in_header(_copy(w, t), shape=[32, 64]))], TENSOR),
    "inspect header lies about dtype (same size)": (
        lambda w, t: ["inspect", str(lie_in_header(_copy(w, t), dtype="I32"))], "int32"),
    "inspect header lies about dtype (other size)": (
        lambda w, t: ["inspect", str(lie_in_header(_copy(w, t), dtype="BF16"))], "model.safetensors"),
    "inspect config contradicts weights": (
        lambda w, t: ["inspect", str(_config(_copy(w, t), intermediate_size=48))], "gate_proj"),
    "inspect config is not json": (lambda w, t: ["inspect", str(_config_text(_copy(w, t), "{not json"))],
                                   "config.json"),
    "inspect inf in weights": (lambda w, t: ["inspect", str(poison(_copy(w, t), np.inf))], TENSOR),
    # merge
    "merge missing recipe": (lambda w, t: ["merge", str(t / "none.yml"), str(t / "merged")], "none.yml"),
    "merge malformed yaml": (lambda w, t: ["merge", _text(t / "r.yml", "models: [unclosed"), str(t / "merged")],
                             "YAML"),
    "merge unknown source key": (lambda w, t: ["merge", _text(t / "r.yml", yaml.safe_dump(
        {"merge_method": "linear", "models": [{"model": str(w / "ft1"), "weights": 1}]})), str(t / "merged")],
        "weights"),
    "merge layer_range out of range": (lambda w, t: ["merge", _text(t / "r.yml", yaml.safe_dump(
        {"merge_method": "linear", "slices": [{"sources": [
            {"model": str(w / m), "layer_range": [0, 9], "parameters": {"weight": 1}} for m in ("ft1", "ft2")]}]})),
        str(t / "merged")], "layer_range"),
    "merge nan in a source": (lambda w, t: _merge(w, t, [w / "ft2", poison(_copy(w, t), np.nan)]), TENSOR),
    "merge mixed families": (lambda w, t: _merge(w, t, [w / "ft1", w / "qwen"]), "qwen2"),
    "merge output is a file": (lambda w, t: ["merge", recipe(t, [w / "ft1", w / "ft2"]),
                                             _text(t / "merged", "x")], "file"),
    # eval
    "eval missing model": (lambda w, t: _eval(w, t, t / "no-model"), "no-model"),
    "eval malformed task yaml": (lambda w, t: _eval(w, t, w / "ft1", "name: [t\n"), "YAML"),
    "eval unknown task key": (lambda w, t: _eval(w, t, w / "ft1", LOGLIK + "temperature: 0.7\n"), "temperature"),
    "eval jsonl not utf-8": (lambda w, t: _eval(w, t, w / "ft1", LOGLIK, b'{"prompt": "\xff", "answer": "1"}\n'),
                             "dev.jsonl"),
    "eval jsonl row not an object": (lambda w, t: _eval(w, t, w / "ft1", LOGLIK, ROW + "[1, 2]\n"), "dev.jsonl:2"),
    "eval limit out of range": (lambda w, t: _eval(w, t, w / "ft1", LOGLIK, ROW, "--limit", "0"), "--limit"),
    "eval out is a directory": (lambda w, t: _eval(w, t, w / "ft1", LOGLIK, ROW, "--out", str(_mkdir(t / "d"))),
                                "directory"),
    "eval inf in the model": (lambda w, t: _eval(w, t, _tokenized(poison(_copy(w, t), -np.inf))), TENSOR),
    # evolve
    "evolve missing config": (lambda w, t: ["evolve", str(t / "none.yml"), "--out", str(t / "run")], "none.yml"),
    "evolve unknown search key": (lambda w, t: _evolve(w, t, **{"search.populaton": 8}), "populaton"),
    "evolve sigma out of range": (lambda w, t: _evolve(w, t, **{"search.sigma": -1.0}), "sigma"),
    "evolve generations out of range": (lambda w, t: _evolve(w, t, **{"search.generations": 0}), "generations"),
    "evolve missing source": (lambda w, t: _evolve(w, t, models=[str(w / "ft1"), str(t / "gone")]), "gone"),
    "evolve truncated source": (lambda w, t: _evolve(w, t, models=[str(w / "ft1"), str(_truncate(_copy(w, t)))]),
                                "model.safetensors"),
    "evolve mixed families": (lambda w, t: _evolve(w, t, models=[str(w / "ft1"), str(w / "qwen")]), "qwen2"),
    "evolve malformed task jsonl": (lambda w, t: _evolve(w, t, fitness={"tasks": [
        {"task": task(t, LOGLIK, ROW + '{"prompt": \n'), "split": "dev"}]}), "dev.jsonl:2"),
    "evolve out is a file": (lambda w, t: ["evolve", config(w, t), "--out", _text(t / "run", "x"), "--no-progress"],
                             "file"),
    "evolve resume without a run": (lambda w, t: _evolve(w, t) + ["--resume"], "run.json"),
    # demo
    "demo out is a file": (lambda w, t: ["demo", "--quick", "--no-progress", "--out", _text(t / "demo", "x")],
                           "demo"),
    "demo negative seed": (lambda w, t: ["demo", "--quick", "--no-progress", "--seed", "-1", "--out",
                                         str(t / "demo")], "--seed"),
    "demo negative search seed": (lambda w, t: ["demo", "--quick", "--no-progress", "--search-seed", "-1", "--out",
                                                str(t / "demo")], "--search-seed"),
}


def _text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _truncate(model: Path) -> Path:
    file = model / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return model


def _garbage_header(model: Path) -> Path:
    file = model / "model.safetensors"
    raw = bytearray(file.read_bytes())
    raw[8:40] = b"\x00\xff" * 16
    file.write_bytes(bytes(raw))
    return model


def _config(model: Path, **changes) -> Path:
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, **changes}))
    return model


def _config_text(model: Path, text: str) -> Path:
    (model / "config.json").write_text(text)
    return model


def _tokenized(model: Path) -> Path:
    return add_char_tokenizer(model)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its size and mtime: any write shows up as a difference."""
    return {str(p.relative_to(root)): (p.is_dir(), p.lstat().st_size if not p.is_dir() else 0, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, tmp_path, capsys, case):
    build, word = CASES[case]
    argv = build(world, tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"jaxmerge {argv[0]}: error: ") and word in lines[0], lines[0]
    assert "expected" in lines[0] or "Errno" not in lines[0], lines[0]
    assert snapshot(tmp_path) == before


def test_matrix_covers_every_command_with_25_cases():
    commands = {case.split()[0] for case in CASES}
    assert len(CASES) >= 25 and {"inspect", "merge", "eval", "evolve", "demo"} <= commands


def test_debug_flag_shows_the_traceback_instead(world, tmp_path):
    with pytest.raises(JaxmergeError, match="nowhere"):
        main(["--debug", "inspect", str(tmp_path / "nowhere")])
    with pytest.raises(JaxmergeError, match="populaton"):
        main(["evolve", config(world, tmp_path, **{"search.populaton": 8}), "--out", str(tmp_path / "r"), "--debug"])


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxmerge.cli", *argv], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "JAXMERGE_COMPILATION_CACHE": "off"})


@pytest.mark.slow
def test_real_processes_exit_2_with_one_line_and_debug_gives_a_traceback(world, tmp_path):
    bad = _copy(world, tmp_path)
    lie_in_header(bad, shape=[32, 64])
    merge = _cli("merge", recipe(tmp_path, [world / "ft2", bad]), str(tmp_path / "merged"))
    evolve = _cli("evolve", config(world, tmp_path, **{"search.sigma": -1.0}), "--out", str(tmp_path / "run"))
    for run, word in ((merge, TENSOR), (evolve, "sigma")):
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and word in lines[0], run.stderr
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.tmp-*"))
    debug = _cli("--debug", "inspect", str(bad))
    assert debug.returncode == 1 and "Traceback" in debug.stderr and TENSOR in debug.stderr
