"""Hostile cases that need a process of their own: memory bombs (absolute peak RSS), signals at random
moments, and SIGKILL between the renames of an overwrite.

- Bombs: each refused case runs in a fresh interpreter that reports its own VmHWM at exit; it must stay within
  200 MB of an idle `python -c 'import jaxmerge'`. Cases refused only once a tokenizer is loaded (transformers
  alone is ~200 MB) report their growth after those imports instead.
- Signals: a real `jaxmerge merge` / `jaxmerge eval` gets SIGINT (or SIGTERM) at seeded random moments inside
  its run (measured from the moment the CLI catches signals, read from /proc/PID/status); every run must end
  with exit 130, one line, no output and no temporary left.
- Kills: an overwrite SIGKILLed right after its one-step swap leaves the new output (and a temporary that the
  next writer removes); on the two-rename fallback, killed between the renames, the old output is parked, a
  reader says where, and the next writer puts it back before replacing it.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import hostile_inputs as hc
from tests.evolve_world import build_world
from tests.hostile import LIMIT, child_env, idle_peak, measured, sparse_giant


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("procs_world"))


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    return idle_peak(tmp_path_factory.mktemp("idle") / "idle.txt")


class Ctx:
    def __init__(self, world, tmp):
        self.world, self.tmp = world, tmp


def _giant(c):
    m = hc.model(c)
    sparse_giant(m / "model.safetensors", hc.TENSOR)
    return hc.inspect(m)


BOMBS = {
    "inspect num_hidden_layers 10**9": lambda c: hc.inspect(hc.config(hc.model(c), num_hidden_layers=10**9)),
    "inspect sparse 2 GB tensor": _giant,
    "inspect config nested 100000 deep": lambda c: hc.inspect(hc.text(hc.model(c) / "config.json",
                                                                     '{"a": ' + hc.DEEP + "}").parent),
    "merge recipe billion laughs": lambda c: hc.merge(c, body=hc.LAUGHS),
    "merge source claims 10**9 layers": lambda c: hc.merge(c, body=yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(hc.config(hc.model(c), num_hidden_layers=10**9)), "parameters": {"weight": 1.0}}]})),
    "eval max_new_tokens 10**9": lambda c: hc.eval_(c, None, hc.GEN + "max_new_tokens: 1000000000\n"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_bomb_refused_within_200_mb_of_idle(world, idle, tmp_path, case):
    argv = BOMBS[case](Ctx(world, tmp_path))
    proc, peak, _ = measured(argv, tmp_path / "peak.txt")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert peak - idle < LIMIT, f"{case}: peak {peak / 2**20:.0f} MB, idle {idle / 2**20:.0f} MB"
    _record(case, peak, idle)


def test_long_prompt_refused_within_200_mb_after_the_tokenizer_imports(world, tmp_path):
    argv = hc.eval_(Ctx(world, tmp_path), None, hc.LOGLIK, json.dumps({"prompt": "1+" * 200, "answer": "2"}) + "\n")
    proc, peak, base = measured(argv, tmp_path / "peak.txt", warm_tokenizer=world / "ft1")
    assert proc.returncode == 2 and "max_position_embeddings" in proc.stderr, proc.stderr
    assert peak - base < LIMIT
    _record("eval prompt longer than the positions (growth)", peak, base)


def _record(case: str, peak: int, base: int) -> None:
    if os.environ.get("JAXMERGE_PEAKS"):
        with open(os.environ["JAXMERGE_PEAKS"], "a") as f:
            f.write(f"{case}\t{(peak - base) / 2**20:.1f}\tabsolute {peak / 2**20:.0f}\n")


# ---- signals ----

def _program(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jaxmerge.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _duration(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = _program(argv, env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.perf_counter() - start


def _handling(pid: int) -> bool:
    """Whether the process catches SIGTERM yet (Python leaves it at the default, jaxmerge.cli installs its
    handler first thing): from then on every moment is one the CLI must handle."""
    with open(f"/proc/{pid}/status") as f:
        caught = int(next(line for line in f if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _interrupt(argv: list[str], env: dict, at: float, sig: int) -> subprocess.CompletedProcess:
    proc = _program(argv, env)
    while not _handling(proc.pid):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    time.sleep(at)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["merge", "eval"])
def test_signals_at_random_moments_exit_130_with_one_line_and_nothing_written(world, tmp_path, command):
    env = {**child_env(), "JAXMERGE_COMPILATION_CACHE": "off"}  # every run compiles: the moments cover it too
    out = tmp_path / "out"
    argv = (hc.merge(Ctx(world, tmp_path), out) if command == "merge" else
            ["eval", str(world / "ft1"), str(world / "task/add.yml"), "--out", str(out)])
    total = _duration(argv, env)
    _remove(out)
    rng = random.Random(2403 + len(command))
    sigs = [signal.SIGINT, signal.SIGTERM if command == "merge" else signal.SIGINT]  # two seeded moments each
    for sig in sigs:
        at = rng.uniform(0.0, 0.8 * total)  # after the handlers are in place
        run = _interrupt(argv, env, at, sig)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 130, f"{sig!r} at {at:.2f}s of {total:.2f}s: {run.returncode}\n{run.stderr}"
        assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in run.stderr, run.stderr
        assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ---- SIGKILL between the renames of an overwrite ----

KILLED_SWAP = """
import os, signal, sys
import jaxmerge, jaxmerge.atomic as atomic
mode, source, out = sys.argv[1:]
if mode == "exchange":
    real = atomic.exchange
    def exchange(a, b):
        done = real(a, b)
        os.kill(os.getpid(), signal.SIGKILL)
    atomic.exchange = exchange
else:  # no exchange on this file system: two renames, killed between them
    atomic.exchange = lambda a, b: False
    real_rename = os.rename
    def rename(src, dst):
        if ".tmp-" in str(src):
            os.kill(os.getpid(), signal.SIGKILL)
        real_rename(src, dst)
    atomic.os.rename = rename
jaxmerge.save(jaxmerge.load(source), out, overwrite=True)
"""


def _tensor(model_dir: Path):
    from safetensors import safe_open
    with safe_open(str(model_dir / "model.safetensors"), framework="np") as f:
        return f.get_tensor(hc.TENSOR)


@pytest.mark.parametrize("mode", ["exchange", "two renames"])
def test_sigkill_inside_an_overwrite_never_leaves_no_output(world, tmp_path, mode):
    import jaxmerge
    from jaxmerge.cli import main
    out = tmp_path / "out"
    jaxmerge.save(jaxmerge.load(world / "ft1"), out)
    killed = subprocess.run([sys.executable, "-c", KILLED_SWAP, mode.split()[0], str(world / "ft2"), str(out)],
                            env=child_env(), capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if mode == "exchange":  # swapped in one step: the new output is there, the old one in a temporary
        assert (_tensor(out) == _tensor(world / "ft2")).all()
    else:  # the old one parked aside; a reader is told where, nothing is mistaken for a model
        assert not out.exists() and main(["inspect", str(out)]) == 2
    jaxmerge.save(jaxmerge.load(world / "ft2"), out, overwrite=True)  # the next writer cleans up
    assert (_tensor(out) == _tensor(world / "ft2")).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
